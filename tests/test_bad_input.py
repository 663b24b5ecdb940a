"""Bad input files, written raw, through `sendit data prepare`: one clear line naming the file, the line and
the field, exit code 2, and no output directory left behind."""
import gzip

import pytest
from conftest import synthetic_frame
from typer.testing import CliRunner

from sendit.cli import app

runner = CliRunner()


def labelled_csv(n: int = 60) -> bytes:
    return synthetic_frame(n).to_csv(index=False).encode()


def with_line(data: bytes, number: int, line: bytes) -> bytes:
    """`data` with its line `number` (1-based, as an editor counts) replaced by `line`."""
    lines = data.split(b"\n")
    lines[number - 1] = line
    return b"\n".join(lines)


UTF8_TEXTS = "text,label\n" + "".join(f"café olé n{i},{i % 2}\n" for i in range(40))

BAD_FILES = {
    # UTF-8 but for one byte: read as latin-1, every "é" would become "Ã©"
    "mixed_encoding": (with_line(UTF8_TEXTS.encode(), 7, b"na\xefve n5,1"),
                       ["line 7: byte 0xef is not valid utf-8", "mixed encodings"]),
    "nul_in_text": (with_line(labelled_csv(), 5, b"i love\x00 this,1"),
                    ["line 5: field 'text' holds the control character U+0000"]),
    "escape_in_text": (with_line(labelled_csv(), 9, b"so sad\x1b[0m,0"),
                       ["line 9: field 'text' holds the control character U+001B"]),
    "too_few_rows": (b"text,label\ngood,1\nbad,0\ngreat,1\nawful,0\n",
                     ["4 examples are too few for data.split", "the val split would be empty",
                      "need at least 6 examples"]),
    "gzip_named_csv": (gzip.compress(labelled_csv()), ["the file is gzip-compressed, not text"]),
    "label_typo": (with_line(labelled_csv(), 12, b"what a great day n10,postive"),
                   ["line 12: column 'label' is 'postive', on this row only"]),
    "empty_label": (with_line(labelled_csv(), 3, b"what a great day n1,"),
                    ["line 3: empty label in column 'label'"]),
    "short_row": (with_line(labelled_csv(), 4, b'"a text, with a comma",1,extra'),
                  ["line 4: 3 fields, expected 2"]),
}


def test_a_stray_control_character_in_a_large_file_is_kept_with_a_warning_but_a_nul_is_refused(tmp_path, caplog):
    """Sentiment140's 1.6M tweets hold 16 DELs (typing noise); one in 2,000 texts passes, a NUL never."""
    from sendit.config import CleanConfig, DataConfig
    from sendit.data import prepare
    from sendit.data.errors import DataError

    path = tmp_path / "tweets.csv"
    path.write_bytes(with_line(labelled_csv(2000), 9, b"so \x7fsad n7,0"))
    splits = prepare(DataConfig(dataset="csv", path=str(path), clean=CleanConfig(symbols=False)))
    assert len(splits.train) + len(splits.val) + len(splits.test) == 2000
    assert "line 9: field 'text' holds the control character U+007F (1 of 2000 texts hold one): kept" in caplog.text
    path.write_bytes(with_line(labelled_csv(2000), 9, b"so \x00sad n7,0"))
    with pytest.raises(DataError, match="line 9: field 'text' holds the control character U\\+0000"):
        prepare(DataConfig(dataset="csv", path=str(path)))


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_is_refused_naming_file_line_and_field(tmp_path, case):
    data, messages = BAD_FILES[case]
    path = tmp_path / f"{case}.csv"
    path.write_bytes(data)
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["data", "prepare", "csv", "--path", str(path), "-o", str(out)])
    said = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2, said
    assert f"error: {path}" in said
    for message in messages:
        assert message in said
    assert not out.exists()


def test_wholly_latin1_file_is_read_as_latin1_with_a_warning(tmp_path, caplog):
    """The original Sentiment140 is latin-1 (with some U+FFFD sequences): it must keep working."""
    from sendit.config import CleanConfig, DataConfig
    from sendit.data import read_source

    rows = "".join(f'0,{i},date,NO_QUERY,user,"caf\xe9 \xef\xbf\xbd n{i}"\n' for i in range(5))
    path = tmp_path / "latin1.csv"
    path.write_bytes(rows.encode("latin-1"))
    data = read_source(DataConfig(dataset="sentiment140", path=str(path)))
    assert data.splits["train"]["text"][0] == "caf\xe9 \xef\xbf\xbd n0"
    assert f"{path}: not UTF-8, read as latin-1" in caplog.text


def test_utf8_with_bom_keeps_its_header(tmp_path):
    """Excel writes a BOM: the first column must still be called `text`, not '\\ufefftext'."""
    from sendit.config import CleanConfig, DataConfig
    from sendit.data import read_source

    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + UTF8_TEXTS.encode())
    train = read_source(DataConfig(dataset="csv", path=str(path))).splits["train"]
    assert train["text"][0] == "café olé n0"


def test_sample_beyond_the_default_sentiment140_file_names_the_full_source(tmp_path, monkeypatch):
    (tmp_path / "sentiment140" / "train_random20k_6col").mkdir(parents=True)
    rows = "".join(f'{4 * (i % 2)},{i},date,NO_QUERY,user,"tweet n{i}"\n' for i in range(30))
    (tmp_path / "sentiment140" / "train_random20k_6col" / "sentiment140_sample.csv").write_text(rows)
    monkeypatch.setenv("SENDIT_DATA", str(tmp_path))
    result = runner.invoke(app, ["data", "prepare", "sentiment140", "--sample", "50", "-o", str(tmp_path / "out")])
    said = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "data.sample=50 but only 30 examples" in said
    assert "--path sentiment140/train_full1600k_label_text" in said
