"""Dataset readers: each turns files on disk into named splits of (text, label) frames.

A reader takes a `DataConfig` and returns a `SourceData`: splits named "train" (missing only for
a dataset that can just be evaluated on here) and, when the dataset ships them, "val" / "test",
each a DataFrame with exactly the columns `text` (str) and `label` (int class index 0..K-1), plus
the label names in class-index order. A reader may add evaluation-only splits under other names
(semeval2017's "sarcasm"): `prepare` leaves them out. New datasets register with
`@register_source("name")`; `prepare` does cleaning, dedup, sampling and splitting. The benchmark
datasets' readers are in `sendit.data.datasets`.

Errors are `DataError`s naming the file and the line as an editor shows it (lines are counted
assuming one record per line, which holds for every file in the shared data folder).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from sendit.config import DataConfig
from sendit.data.errors import DataError
from sendit.data.split import stratified_sample

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
SPLIT_NAMES = ("train", "val", "test")


class SourceData(NamedTuple):
    splits: dict[str, pd.DataFrame]  # "train" and optionally "val" / "test"
    label_names: list[str]  # class-index order
    origin: str  # the file or folder read, for messages and stats


@dataclass(frozen=True)
class Source:
    """A registered reader; `clean` says whether tweet denoising applies to its texts, `targeted`
    whether they carry a marked target (see `sendit.data.target`)."""

    name: str
    read: Callable[[DataConfig], SourceData]
    clean: bool = True
    targeted: bool = False

    def __call__(self, cfg: DataConfig) -> SourceData:
        return self.read(cfg)


SOURCES: dict[str, Source] = {}


def register_source(*names: str, clean: bool = True, targeted: bool = False):
    """Register the decorated reader under each of `names` (e.g. "csv", "tsv")."""

    def decorator(read: Callable[[DataConfig], SourceData]):
        for name in names:
            SOURCES[name] = Source(name, read, clean, targeted)
        return read

    return decorator


def read_source(cfg: DataConfig, need_train: bool = True) -> SourceData:
    """Read `cfg.dataset` and check the reader's output contract, so every consumer can rely on it.

    `need_train=False` accepts a dataset that can only be evaluated on here (tweeteval without its
    train text). `data.test_sample` is drawn here, before `prepare` deduplicates against it.
    """
    source = SOURCES.get(cfg.dataset)
    if source is None:
        raise DataError(f"data.dataset: unknown dataset {cfg.dataset!r}; known: {', '.join(sorted(SOURCES))}")
    data = source(cfg)
    if not data.splits:
        raise DataError(f"{data.origin}: reader {cfg.dataset!r} returned no splits")
    if need_train and "train" not in data.splits:
        raise DataError(f"{data.origin}: dataset {cfg.dataset!r} has no train split here (only "
                        f"{', '.join(data.splits)}), so it can be evaluated on but not trained on; "
                        f"see docs/datasets.md")
    names = data.label_names
    if cfg.label_names is not None:
        if len(cfg.label_names) != len(names):
            raise DataError(f"{data.origin}: data.label_names has {len(cfg.label_names)} names "
                            f"{cfg.label_names} but the data has {len(names)} classes {names}")
        names = cfg.label_names
    splits = dict(data.splits)
    if cfg.test_sample is not None:
        splits["test"] = sample_test(splits.get("test"), cfg, data.origin)
    return SourceData(splits, list(names), data.origin)


def sample_test(test: pd.DataFrame | None, cfg: DataConfig, origin: str) -> pd.DataFrame:
    """`data.test_sample` examples of the dataset's own test split, stratified, with `data.seed`."""
    if test is None:
        raise DataError(f"data.test_sample: dataset {cfg.dataset!r} has no test split of its own (its test "
                        f"split is carved from train by data.split); use data.sample and data.split instead")
    if cfg.test_sample > len(test):
        raise DataError(f"{origin}: data.test_sample={cfg.test_sample} but the test split has {len(test)} examples")
    return stratified_sample(test, cfg.test_sample, cfg.seed, name=f"{origin} (test split)")


def data_root() -> Path:
    """Where datasets live: $SENDIT_DATA, else ./data (linked by `make data`), else ../shared/data."""
    if os.environ.get("SENDIT_DATA"):
        return Path(os.environ["SENDIT_DATA"])
    for candidate in (Path("data"), REPO / "data", REPO.parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return Path("data")


def resolve_path(path: str | None, default: str | None, dataset: str) -> Path:
    """The file or folder to read: `path` as given, else under the data root, else the dataset default."""
    root = data_root()
    if path is None:
        if default is None:
            raise DataError(f"data.path: dataset {dataset!r} needs a file; set data.path")
        candidate = root / default
    else:
        candidate = Path(path).expanduser()
        if not candidate.exists() and not candidate.is_absolute() and (root / candidate).exists():
            candidate = root / candidate
    if not candidate.exists():
        raise DataError(f"{candidate}: no such file or folder (data root: {root.absolute()}); "
                        f"run `make data` to link the shared data, or set SENDIT_DATA or data.path")
    return candidate


# ----------------------------------------------------------------------------- raw bytes and text

def natural_key(name: str) -> list:
    """Sort key putting "2.csv" before "10.csv", so chunks are read in their numeric order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def iter_chunks(path: Path, suffix: str) -> Iterator[tuple[str, bytes]]:
    """Yield (where, bytes) for a file, a `.tar.gz` of files, or a folder of either, in numeric order.

    Tar members are read in memory: the shards are never extracted to disk.
    """
    if path.is_dir():
        files = [p for p in path.iterdir() if p.name.endswith((suffix, ".tar.gz", ".tgz"))]
        if not files:
            raise DataError(f"{path}: folder holds no {suffix} or .tar.gz files")
    else:
        files = [path]
    for file in sorted(files, key=lambda p: natural_key(p.name)):
        if file.name.endswith((".tar.gz", ".tgz")):
            yield from tar_members(file, suffix)
        else:
            yield str(file), file.read_bytes()


def tar_members(path: Path, suffix: str) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(suffix)]
            if not members:
                raise DataError(f"{path}: archive holds no {suffix} files")
            for member in sorted(members, key=lambda m: natural_key(m.name)):
                yield f"{path}:{member.name}", archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"{path}: not a readable tar.gz archive ({err})") from None


# A multi-byte UTF-8 character, other than U+FFFD (EF BF BD): the original Sentiment140 is latin-1 with
# some U+FFFD sequences in it, so those say nothing about which encoding the rest of a file is in.
UTF8_CHARACTER = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|\xef(?!\xbf\xbd)[\x80-\xbf]{2}|[\xe0-\xee][\x80-\xbf]{2}"
                            rb"|[\xf0-\xf4][\x80-\xbf]{3}")
COMPRESSED = {b"\x1f\x8b": "gzip-compressed", b"PK\x03\x04": "a zip archive", b"BZh": "bzip2-compressed",
              b"\xfd7zXZ": "xz-compressed"}


def decode(data: bytes, where: str, encoding: str | None, fallback: str | None = "latin-1") -> str:
    """Decode as `encoding`, or UTF-8 (a BOM says UTF-8 or UTF-16) falling back to `fallback`.

    The fallback applies only to a file that is not UTF-8 at all: one whose non-ASCII bytes are mostly
    UTF-8 characters is UTF-8 with damaged lines, and reading it as latin-1 would garble every
    character of the rest of it, so its first undecodable byte is an error naming the line.
    """
    for magic, kind in COMPRESSED.items():
        if data.startswith(magic):
            raise DataError(f"{where}: the file is {kind}, not text; decompress it first "
                            f"(a folder of .tar.gz shards is read as it is)")
    if encoding is None and data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    try:
        return data.decode(encoding or "utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        where_byte = f"{where}: line {line}: byte 0x{data[err.start]:02x} is not valid {err.encoding}"
        if encoding is None and fallback:
            utf8_characters = len(UTF8_CHARACTER.findall(data))
            undecodable = sum(1 for _ in re.finditer(rb"[\x80-\xff]", UTF8_CHARACTER.sub(b"", data)))
            if utf8_characters < undecodable:
                log.warning("%s: not UTF-8, read as %s", where, fallback)
                return data.decode(fallback)
            raise DataError(f"{where_byte}, though the file holds {utf8_characters} UTF-8 characters: mixed "
                            f"encodings (read as {fallback} the UTF-8 ones would be garbled); repair that line, "
                            f"or set data.encoding to read the whole file in one encoding") from None
        raise DataError(f"{where_byte}; set data.encoding (e.g. latin-1) or leave it unset to detect") from None


# C0 control characters but tab, newline and carriage return; and DEL.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Real tweets carry a few as typing noise (16 DELs among Sentiment140's 1.6M); a NUL, or control characters
# in more than this share of the texts, mean a binary file or a broken export.
MAX_CONTROL_SHARE = 0.001


def check_texts(texts: pd.Series, where: str, field: str) -> None:
    """Refuse texts holding a NUL or many control characters; warn about a few. `texts` is indexed by line
    number."""
    texts = texts.fillna("").astype(str)
    found = texts.str.contains(CONTROL)
    if not found.any():
        return
    nul = texts.str.contains("\x00", regex=False)
    line = nul.idxmax() if nul.any() else found.idxmax()
    char = "\x00" if nul.any() else CONTROL.search(texts[line]).group()
    said = f"{where}: line {line}: field {field!r} holds the control character U+{ord(char):04X}"
    if nul.any() or found.mean() > MAX_CONTROL_SHARE:
        raise DataError(f"{said} ({int(found.sum())} of {len(texts)} texts hold one); a text file of tweets has "
                        "none or a few: is it the right file, or damaged?")
    log.warning("%s (%d of %d texts hold one): kept, as typing noise", said, int(found.sum()), len(texts))


def read_table(text: str, where: str, first_line: int = 1, **options) -> pd.DataFrame:
    """Parse delimited text to string columns indexed by editor line number; blank lines are skipped.

    Empty fields are NaN (so missing trailing fields show), and no other text ("NA", "null") is.
    """
    if not text.strip():
        raise DataError(f"{where}: empty file, no rows")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""],
                            skip_blank_lines=False, **options)
    except pd.errors.ParserError as err:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if found:
            expected, line, saw = found.groups()
            raise DataError(f"{where}: line {line}: {saw} fields, expected {expected} "
                            f"(quote texts that contain the separator)") from None
        raise DataError(f"{where}: malformed file: {err}") from None
    frame.index = frame.index + first_line
    return frame.dropna(how="all")


def encode_labels(values: pd.Series, mapping: dict[str, int], where: str, field: str, expected: str) -> pd.Series:
    """Map label strings to class indices; the first unmapped one is an error naming its line."""
    values = values.fillna("")
    codes = values.map(mapping)
    unknown = codes.isna()
    if unknown.any():
        line = unknown.idxmax()
        raise DataError(f"{where}: line {line}: {field} is {values[line]!r}, expected {expected}")
    return codes.astype(int)


def labelled(text: pd.Series, label: pd.Series) -> pd.DataFrame:
    """The reader output frame: exactly `text` (str, missing -> "") and `label` (int), fresh index."""
    return pd.DataFrame({"text": text.fillna("").astype(str), "label": label.astype(int)}).reset_index(drop=True)


# ----------------------------------------------------------------------------- sentiment140

SENTIMENT140_DEFAULT = "sentiment140/train_random20k_6col/sentiment140_sample.csv"
SENTIMENT140_FULL = "sentiment140/train_full1600k_label_text"
# Where a dataset's default file is a sample: the larger source, for a data.sample beyond the default.
LARGER_SOURCES = {"sentiment140": SENTIMENT140_FULL}
SENTIMENT140_NAMES = ["negative", "positive"]
RAW6_FIELDS = ["polarity", "id", "date", "query", "user", "text"]


@dataclass(frozen=True)
class Sentiment140Format:
    fields: list[str]
    labels: dict[str, int]  # label string in the file -> class index
    expected: str  # for messages


SENTIMENT140_FORMATS = {
    # Original 6-column files: 0 = negative, 4 = positive (2 = neutral exists only in the manual test set).
    "raw6": Sentiment140Format(RAW6_FIELDS, {"0": 0, "4": 1},
                               "0 (negative) or 4 (positive); 2 (neutral) is not in the training data"),
    # label,text chunks of voidisnull/sentiment140_translator: the original 4 became 1.
    "label_text": Sentiment140Format(["label", "text"], {"0": 0, "1": 1}, "0 (negative) or 1 (positive)"),
}


@register_source("sentiment140")
def read_sentiment140(cfg: DataConfig) -> SourceData:
    """Sentiment140 as the original 6 columns or as label,text chunks: a file, folder or tar.gz shards."""
    if cfg.format is not None and cfg.format not in SENTIMENT140_FORMATS:
        raise DataError(f"data.format: unknown sentiment140 format {cfg.format!r}; "
                        f"known: {', '.join(SENTIMENT140_FORMATS)} (or leave unset to detect)")
    path = resolve_path(cfg.path, SENTIMENT140_DEFAULT, cfg.dataset)
    frames = [parse_sentiment140(decode(data, where, cfg.encoding), where, cfg.format)
              for where, data in iter_chunks(path, ".csv")]
    return SourceData({"train": pd.concat(frames, ignore_index=True)}, list(SENTIMENT140_NAMES), str(path))


def parse_sentiment140(text: str, where: str, format_name: str | None) -> pd.DataFrame:
    """Parse one Sentiment140 CSV; the format comes from the first line's field count unless forced."""
    if not text.strip():
        raise DataError(f"{where}: empty file, no rows")
    first_row = next(csv.reader(io.StringIO(text.lstrip("\n"))))
    by_width = {len(f.fields): name for name, f in SENTIMENT140_FORMATS.items()}
    format_name = format_name or by_width.get(len(first_row))
    if format_name is None:
        raise DataError(f"{where}: line 1: {len(first_row)} fields, expected 6 (polarity,id,date,query,user,text) "
                        f"or 2 (label,text)")
    spec = SENTIMENT140_FORMATS[format_name]
    if len(first_row) != len(spec.fields):
        raise DataError(f"{where}: line 1: {len(first_row)} fields, but data.format={format_name} "
                        f"expects {len(spec.fields)} ({','.join(spec.fields)})")
    frame = read_table(text, where, header=None, names=spec.fields)
    first = frame.iloc[0, 0]
    if isinstance(first, str) and not first.lstrip("-").isdigit():  # a header: target,ids,date,flag,user,text
        frame = frame.iloc[1:]
    if frame.empty:
        raise DataError(f"{where}: header but no rows")
    # Every field but the text is always filled in Sentiment140: an empty one means a short row.
    incomplete = frame[spec.fields[:-1]].isna()
    if incomplete.to_numpy().any():
        line = incomplete.any(axis=1).idxmax()
        field = incomplete.loc[line].idxmax()
        raise DataError(f"{where}: line {line}: field {field!r} is empty or missing; "
                        f"expected {len(spec.fields)} fields {','.join(spec.fields)}")
    check_texts(frame["text"], where, "text")
    label = encode_labels(frame[spec.fields[0]], spec.labels, where, spec.fields[0], spec.expected)
    return labelled(frame["text"], label)


# ----------------------------------------------------------------------------- generic csv / jsonl

@register_source("csv", "tsv")
def read_csv_source(cfg: DataConfig) -> SourceData:
    """Any CSV/TSV with a header row; TSV (by dataset name or .tsv extension) is read without quoting."""
    path = resolve_path(cfg.path, None, cfg.dataset)
    frames = []
    for where, data in iter_chunks(path, ".tsv" if cfg.dataset == "tsv" else ".csv"):
        tab = cfg.dataset == "tsv" or where.endswith(".tsv")
        table = read_table(decode(data, where, cfg.encoding), where, first_line=2, sep="\t" if tab else ",",
                           quoting=csv.QUOTE_NONE if tab else csv.QUOTE_MINIMAL)
        frames.append((where, table))
    return table_source(frames, cfg, str(path))


@register_source("jsonl")
def read_jsonl_source(cfg: DataConfig) -> SourceData:
    """JSON Lines, one object per line; UTF-8 as JSON requires unless data.encoding says otherwise."""
    path = resolve_path(cfg.path, None, cfg.dataset)
    frames = []
    for where, data in iter_chunks(path, ".jsonl"):
        text = decode(data, where, cfg.encoding, fallback=None)
        lines = {number: line for number, line in enumerate(text.splitlines(), start=1) if line.strip()}
        if not lines:
            raise DataError(f"{where}: empty file, no rows")
        records = {number: parse_json_object(line, where, number) for number, line in lines.items()}
        frames.append((where, pd.DataFrame.from_dict(records, orient="index")))
    return table_source(frames, cfg, str(path))


def parse_json_object(line: str, where: str, number: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: line {number}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: line {number}: expected a JSON object, got {type(record).__name__}")
    return record


def table_source(frames: list[tuple[str, pd.DataFrame]], cfg: DataConfig, origin: str) -> SourceData:
    """Pick the configured text/label columns of tables indexed by line, and encode the labels."""
    for where, table in frames:
        if table.empty:
            raise DataError(f"{where}: header but no rows")
        for field, column in (("text_column", cfg.text_column), ("label_column", cfg.label_column)):
            if column not in table.columns:
                raise DataError(f"{where}: no column {column!r} (data.{field}); "
                                f"columns: {', '.join(map(str, table.columns))}")
        check_texts(table[cfg.text_column], where, cfg.text_column)
    raw_labels = {where: label_strings(table[cfg.label_column], where, cfg.label_column) for where, table in frames}
    names = cfg.label_names or infer_label_names(raw_labels, cfg.label_column)
    # Class indices are accepted as labels too, so integer-labelled files can be given names.
    mapping = {str(index): index for index in range(len(names))} | {name: i for i, name in enumerate(names)}
    expected = f"one of data.label_names {names} or a class index 0..{len(names) - 1}"
    train = pd.concat([labelled(table[cfg.text_column],
                                encode_labels(raw_labels[where], mapping, where, f"column {cfg.label_column!r}", expected))
                       for where, table in frames], ignore_index=True)
    return SourceData({"train": train}, list(names), origin)


def label_strings(values: pd.Series, where: str, column: str) -> pd.Series:
    """Labels as stripped strings (JSON ints become "1"); an empty label is an error naming its line."""
    strings = values.fillna("").astype(str).str.strip()
    empty = strings == ""
    if empty.any():
        raise DataError(f"{where}: line {empty.idxmax()}: empty label in column {column!r}")
    return strings


def infer_label_names(raw_labels: dict[str, pd.Series], column: str) -> list[str]:
    """Integer labels in numeric order (0..K-1 stay as they are), other labels sorted as strings.

    A label found on one row only, in a file where every other label is common, is taken for a typo
    ("postive") rather than a class: it would surface later as a stratification error naming neither.
    """
    labels = pd.concat(raw_labels.values())
    counts = labels.value_counts()
    if len(counts) > 1 and counts.iloc[-1] == 1 and counts.iloc[-2] >= RARE_LABEL_RATIO:
        label = counts.index[-1]
        where, line = next((where, values.index[values == label][0]) for where, values in raw_labels.items()
                           if (values == label).any())
        common = ", ".join(f"{name} ({count:,})" for name, count in counts.iloc[:-1].items())
        raise DataError(f"{where}: line {line}: column {column!r} is {label!r}, on this row only, while the "
                        f"other labels are {common}; fix it, or set data.label_names to list every class")
    distinct = counts.index.tolist()
    if all(re.fullmatch(r"-?\d+", label) for label in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


RARE_LABEL_RATIO = 10  # a lone label beside classes of at least this many rows is a typo
