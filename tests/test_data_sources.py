"""Dataset readers on tiny files written here: every format, and errors that name the file and line/field."""
import json
import re

import pytest

from conftest import make_tar
from sendit.config import CleanConfig, DataConfig
from sendit.data import SOURCES, DataError, data_root, prepare, read_source

HEADER6 = "target,ids,date,flag,user,text\n"


def raw6_row(polarity, text, tweet_id=1):
    return f'{polarity},{tweet_id},Mon Apr 06 22:19:45 PDT 2009,NO_QUERY,someone,"{text}"\n'


def write(folder, name, content):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def read_train(**config):
    data = read_source(DataConfig(**config))
    return data.splits["train"], data.label_names




# ----------------------------------------------------------------------------- sentiment140

def test_raw6_with_header_maps_0_4_to_negative_positive(tmp_path):
    path = write(tmp_path, "s.csv", HEADER6 + raw6_row(0, "sad, so sad") + raw6_row(4, "happy") + raw6_row(4, "joy"))
    train, names = read_train(path=str(path))
    assert names == ["negative", "positive"]
    assert list(train.columns) == ["text", "label"]
    assert train["text"].tolist() == ["sad, so sad", "happy", "joy"]
    assert train["label"].tolist() == [0, 1, 1]
    assert train["label"].dtype.kind == "i"


def test_raw6_without_header_latin1_bytes_fall_back(tmp_path):
    # latin-1 letters, and the EF BF BD bytes the original files carry (mojibake once read as latin-1)
    content = (raw6_row(0, "caf\xe9 closed") + raw6_row(4, "na\xefve")).encode("latin-1")
    content += b'"4","2","d","q","u","x\xef\xbf\xbd"\n'
    path = write(tmp_path, "s.csv", content)
    train, _ = read_train(path=str(path))
    assert train["text"].tolist() == ["café closed", "naïve", "xï¿½"]
    assert train["label"].tolist() == [0, 1, 1]


def test_forced_encoding_is_used(tmp_path):
    path = write(tmp_path, "s.csv", raw6_row(0, "caf\xe9").encode("cp1252"))
    train, _ = read_train(path=str(path), encoding="cp1252")
    assert train["text"].tolist() == ["café"]


def test_label_text_file_detected(tmp_path):
    path = write(tmp_path, "1.csv", '0,"USER sad, really"\n1,URL yay\n')
    train, names = read_train(path=str(path))
    assert train.to_dict("list") == {"text": ["USER sad, really", "URL yay"], "label": [0, 1]}


def test_label_text_folder_read_in_numeric_order(tmp_path):
    for k in (1, 2, 10):
        write(tmp_path / "chunks", f"{k}.csv", f"{k % 2},chunk {k}\n")
    train, _ = read_train(path=str(tmp_path / "chunks"))
    assert train["text"].tolist() == ["chunk 1", "chunk 2", "chunk 10"]
    assert train["label"].tolist() == [1, 0, 0]


def test_label_text_tar_shards_read_in_memory_in_chunk_order(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    make_tar(shards / "train_en_011-020.tar.gz", {"train_en/11.csv": "1,eleven\n"})
    make_tar(shards / "train_en_001-010.tar.gz", {f"train_en/{k}.csv": f"{k % 2},chunk {k}\n" for k in (10, 2, 1)})
    train, _ = read_train(path=str(shards))
    assert train["text"].tolist() == ["chunk 1", "chunk 2", "chunk 10", "eleven"]
    assert sorted(p.name for p in shards.iterdir()) == ["train_en_001-010.tar.gz", "train_en_011-020.tar.gz"]
    single, _ = read_train(path=str(shards / "train_en_011-020.tar.gz"))
    assert single["text"].tolist() == ["eleven"]


def test_format_forced(tmp_path):
    path = write(tmp_path, "s.csv", raw6_row(0, "a") + raw6_row(4, "b"))
    train, _ = read_train(path=str(path), format="raw6")
    assert len(train) == 2
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: line 1: 6 fields, but data.format=label_text"):
        read_train(path=str(path), format="label_text")


def test_default_path_under_data_root(tmp_path, monkeypatch):
    write(tmp_path, "sentiment140/train_random20k_6col/sentiment140_sample.csv", HEADER6 + raw6_row(0, "a"))
    write(tmp_path, "mine/x.csv", "0,b\n")
    monkeypatch.setenv("SENDIT_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert read_train()[0]["text"].tolist() == ["a"]
    assert read_train(path="mine/x.csv")[0]["text"].tolist() == ["b"]  # relative paths also tried under the root


# ----------------------------------------------------------------------------- csv / tsv / jsonl

def test_csv_integer_labels_used_as_is(tmp_path):
    path = write(tmp_path, "d.csv", "review,stars\ngood,1\nbad,0\nok,2\n")
    train, names = read_train(dataset="csv", path=str(path), text_column="review", label_column="stars")
    assert names == ["0", "1", "2"]
    assert train["label"].tolist() == [1, 0, 2]


def test_csv_string_labels_sorted_or_named(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\ngreat,positive\nmeh,neutral\nawful,negative\n")
    assert read_train(dataset="csv", path=str(path))[1] == ["negative", "neutral", "positive"]
    train, names = read_train(dataset="csv", path=str(path), label_names=["positive", "negative", "neutral"])
    assert names == ["positive", "negative", "neutral"]
    assert train["label"].tolist() == [0, 2, 1]


def test_label_names_name_integer_classes(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\na,1\nb,0\n")
    train, names = read_train(dataset="csv", path=str(path), label_names=["neg", "pos"])
    assert names == ["neg", "pos"] and train["label"].tolist() == [1, 0]


def test_tsv_by_extension_and_by_name(tmp_path):
    content = 'sentence\tlabel\nit \'s "fine" , really\t1\nno\t0\n'
    by_extension = write(tmp_path, "train.tsv", content)
    by_name = write(tmp_path, "train.txt", content)
    for dataset, path in (("csv", by_extension), ("tsv", by_name)):
        train, _ = read_train(dataset=dataset, path=str(path), text_column="sentence")
        assert train["text"].tolist() == ['it \'s "fine" , really', "no"]


def test_jsonl_mixed_label_types(tmp_path):
    lines = [{"text": "yay", "label": 1}, {"text": "boo", "label": 0}, {"text": "hm", "label": 2}]
    path = write(tmp_path, "d.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")
    train, names = read_train(dataset="jsonl", path=str(path))
    assert names == ["0", "1", "2"] and train["label"].tolist() == [1, 0, 2]
    assert SOURCES["jsonl"].clean and SOURCES["csv"].clean and SOURCES["sentiment140"].clean


# ----------------------------------------------------------------------------- errors name file and line/field

def error_message(config):
    with pytest.raises(DataError) as caught:
        prepare(config)
    message = str(caught.value)
    assert "\n" not in message
    return message


def bad(tmp_path, name, content, **config):
    """The error message for one bad file, checked to name the file."""
    path = write(tmp_path, name, content)
    message = error_message(DataConfig(path=str(path), **config))
    assert str(path) in message
    return message


def test_missing_column(tmp_path):
    message = bad(tmp_path, "d.csv", "review,label\ngood,1\n", dataset="csv")
    assert "no column 'text' (data.text_column)" in message and "review, label" in message


def test_unknown_label(tmp_path):
    message = bad(tmp_path, "d.csv", "text,label\na,positive\nb,postive\n", dataset="csv",
                  label_names=["negative", "positive"])
    assert "line 3: column 'label' is 'postive', expected one of data.label_names" in message


def test_empty_label(tmp_path):
    assert "line 3: empty label in column 'label'" in bad(tmp_path, "d.csv", "text,label\na,1\nb,\n", dataset="csv")


@pytest.mark.parametrize("dataset, name", [("sentiment140", "s.csv"), ("csv", "d.csv"), ("jsonl", "d.jsonl")])
def test_empty_file(tmp_path, dataset, name):
    assert "empty file" in bad(tmp_path, name, "\n", dataset=dataset)


def test_header_only(tmp_path):
    assert "header but no rows" in bad(tmp_path, "s.csv", HEADER6)


def test_one_class_only(tmp_path):
    message = bad(tmp_path, "s.csv", raw6_row(0, "a") + raw6_row(0, "b"))
    assert "only one class" in message


def test_undecodable_bytes_with_forced_utf8(tmp_path):
    content = (raw6_row(0, "fine") + raw6_row(4, "caf\xe9")).encode("latin-1")
    message = bad(tmp_path, "s.csv", content, encoding="utf-8")
    assert "line 2" in message and "0xe9" in message and "data.encoding" in message


def test_sample_larger_than_data(tmp_path):
    message = bad(tmp_path, "s.csv", "".join(raw6_row(i % 2 * 4, f"t{i}") for i in range(10)), sample=50)
    assert "data.sample=50" in message and "only 10" in message


def test_row_with_too_many_fields(tmp_path):
    message = bad(tmp_path, "s.csv", HEADER6 + raw6_row(0, "a") + "4,2,d,q,u,b,extra\n")
    assert "line 3: 7 fields, expected 6" in message


def test_row_with_too_few_fields(tmp_path):
    message = bad(tmp_path, "s.csv", raw6_row(0, "a") + raw6_row(4, "b") + "4,3,date,query\n")
    assert "line 3: field 'user' is empty or missing" in message


def test_first_line_with_wrong_field_count(tmp_path):
    assert "line 1: 3 fields" in bad(tmp_path, "s.csv", "0,a,b\n")


def test_non_integer_polarity(tmp_path):
    message = bad(tmp_path, "s.csv", HEADER6 + raw6_row(0, "a") + raw6_row("four", "b"))
    assert "line 3: polarity is 'four', expected 0 (negative) or 4 (positive)" in message


def test_neutral_polarity(tmp_path):
    message = bad(tmp_path, "s.csv", raw6_row(0, "a") + raw6_row(2, "meh") + raw6_row(4, "b"))
    assert "line 2: polarity is '2'" in message and "2 (neutral) is not in the training data" in message


def test_label_text_label_out_of_range(tmp_path):
    assert "line 2: label is '4', expected 0 (negative) or 1 (positive)" in bad(tmp_path, "1.csv", "0,a\n4,b\n")


def test_fractions_not_summing_to_one(tmp_path):
    message = error_message(DataConfig(split=[0.8, 0.1, 0.2]))
    assert message.startswith("data.split:") and "sum to 1.1" in message


def test_file_not_found(tmp_path):
    missing = tmp_path / "nope.csv"
    message = error_message(DataConfig(path=str(missing)))
    assert str(missing) in message and "no such file" in message and "make data" in message


def test_invalid_json_line(tmp_path):
    message = bad(tmp_path, "d.jsonl", '{"text": "a", "label": 0}\n{"text": "b", label: 1}\n', dataset="jsonl")
    assert "line 2: not valid JSON" in message


def test_json_line_not_an_object(tmp_path):
    assert "line 1: expected a JSON object" in bad(tmp_path, "d.jsonl", '["a", 0]\n', dataset="jsonl")


def test_nothing_left_after_cleaning(tmp_path):
    message = bad(tmp_path, "s.csv", raw6_row(0, "@bob http://x.co") + raw6_row(4, "#yay !!!"))
    assert "no training texts left after cleaning" in message and "data.clean" in message


def test_corrupt_tar_shard(tmp_path):
    assert "not a readable tar.gz archive" in bad(tmp_path, "train_en_001-010.tar.gz", b"\x1f\x8b\x08garbage")


def test_unknown_dataset_and_format(tmp_path):
    assert "data.dataset: unknown dataset 'nope'" in error_message(DataConfig(dataset="nope"))
    assert "data.format: unknown sentiment140 format 'raw7'" in error_message(DataConfig(format="raw7"))


def test_label_names_count_mismatch(tmp_path):
    message = bad(tmp_path, "s.csv", raw6_row(0, "a") + raw6_row(4, "b"), label_names=["neg", "neu", "pos"])
    assert "data.label_names has 3 names" in message


def test_cleaning_can_be_switched_off_per_step(tmp_path):
    path = write(tmp_path, "s.csv", "".join(raw6_row(i % 2 * 4, f"@bob Text {i}") for i in range(20)))
    splits = prepare(DataConfig(path=str(path), clean=CleanConfig(mentions=False, lowercase=False)))
    assert all(text.startswith("bob Text") for text in splits.train["text"])
