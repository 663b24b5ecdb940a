"""Readers of the benchmark datasets: IMDb, SST-2, SemEval-2017 / TweetEval, and the `$T$` target sets.

Each reader checks what its format promises (field counts, label values, paired files of equal
length, balanced IMDb folders with contiguous review ids) and names the file and line of the first
violation. Folders and formats: docs/datasets.md and each folder's SOURCE.md.
"""
from __future__ import annotations

import csv
import functools
import json
import logging
import re
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from sendit.config import DataConfig
from sendit.data.clean import clean_examples
from sendit.data.errors import DataError
from sendit.data.prepare import prepare
from sendit.data.sources import (SPLIT_NAMES, SourceData, decode, encode_labels, iter_chunks, labelled, read_source,
                                 read_table, register_source, resolve_path)
from sendit.data.target import CLOSE, OPEN, PLACEHOLDER, mark

log = logging.getLogger(__name__)

BINARY = ["negative", "positive"]
THREE_CLASS = ["negative", "neutral", "positive"]


def read_text(path: Path, cfg: DataConfig) -> str:
    if not path.is_file():
        raise DataError(f"{path}: no such file; docs/datasets.md shows each dataset's folder layout")
    return decode(path.read_bytes(), str(path), cfg.encoding, fallback=None)


def lines_of(text: str) -> list[str]:
    """Lines split on "\\n" only: `str.splitlines` would also split tweets at U+2028, U+0085, ..."""
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


# ----------------------------------------------------------------------------- imdb

# aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt, in the shards or the original archive
IMDB_REVIEW = re.compile(r"(?:^|[/:])(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
IMDB_RATINGS = {"neg": range(1, 5), "pos": range(7, 11)}  # the dataset's README: <= 4 and >= 7 of 10
LINE_BREAKS = re.compile(r"\s*(?:<br\s*/?>\s*)+")


@register_source("imdb", clean=False)
def read_imdb(cfg: DataConfig) -> SourceData:
    """IMDb reviews from tar.gz shards or the original aclImdb_v1.tar.gz; `<br />` becomes a space."""
    path = resolve_path(cfg.path, "imdb", cfg.dataset)
    rows = []
    for where, data in iter_chunks(path, ".txt"):
        found = IMDB_REVIEW.search(where)
        if found is None:  # README, vocabulary, URL lists, unsup/ reviews
            continue
        split, folder, review_id, rating = found[1], found[2], int(found[3]), int(found[4])
        if rating not in IMDB_RATINGS[folder]:
            allowed = IMDB_RATINGS[folder]
            raise DataError(f"{where}: rating {rating} in the file name, but {folder} reviews are rated "
                            f"{allowed.start}-{allowed.stop - 1}")
        text = LINE_BREAKS.sub(" ", decode(data, where, cfg.encoding, fallback=None)).strip()
        rows.append((split, folder, review_id, text, where))
    reviews = pd.DataFrame(rows, columns=["split", "folder", "id", "text", "where"])
    check_imdb(reviews, path)
    reviews = reviews.sort_values(["split", "folder", "id"])
    splits = {split: labelled(part["text"], (part["folder"] == "pos").astype(int))
              for split, part in reviews.groupby("split")}
    return SourceData(splits, list(BINARY), str(path))


def check_imdb(reviews: pd.DataFrame, path: Path) -> None:
    """Both splits, ids 0..n-1 once each per folder, as many pos as neg reviews: a lost shard shows."""
    repeated = reviews[reviews.duplicated(["split", "folder", "id"], keep=False)]
    if len(repeated):
        first, second = repeated["where"].iloc[:2]
        raise DataError(f"{first} and {second}: the same review id twice (is the folder holding both the shards "
                        f"and the original archive? keep one)")
    for split in ("train", "test"):
        counts = {}
        for folder in ("neg", "pos"):
            ids = set(reviews.loc[(reviews["split"] == split) & (reviews["folder"] == folder), "id"])
            if not ids:
                raise DataError(f"{path}: no {split}/{folder} reviews (aclImdb/{split}/{folder}/<id>_<rating>.txt)")
            missing = sorted(set(range(max(ids) + 1)) - ids)
            if missing:
                raise DataError(f"{path}: {split}/{folder} has review ids up to {max(ids)} but lacks {len(missing)} "
                                f"of them (first: {missing[0]}): a shard is missing or damaged")
            counts[folder] = len(ids)
        if counts["neg"] != counts["pos"]:
            raise DataError(f"{path}: {split} has {counts['neg']} neg but {counts['pos']} pos reviews; "
                            f"the dataset is balanced: a shard is missing")


# ----------------------------------------------------------------------------- sst2

SST2_FILES = {"train": "train.tsv", "val": "dev.tsv"}  # GLUE's test.tsv has no labels


@register_source("sst2", clean=False)
def read_sst2(cfg: DataConfig) -> SourceData:
    """GLUE SST-2, read without quoting: train.tsv, and dev.tsv as the val split (so `sst2:dev` is GLUE dev)."""
    folder = resolve_path(cfg.path, "sst2", cfg.dataset)
    splits = {}
    for split, name in SST2_FILES.items():
        path = folder / name
        where = str(path)
        table = read_table(read_text(path, cfg), where, first_line=2, sep="\t", quoting=csv.QUOTE_NONE)
        if list(table.columns) != ["sentence", "label"]:
            raise DataError(f"{where}: line 1: header {list(table.columns)}, expected sentence<TAB>label")
        label = encode_labels(table["label"], {"0": 0, "1": 1}, where, "label", "0 (negative) or 1 (positive)")
        splits[split] = labelled(table["sentence"].str.strip(), label)
    return SourceData(splits, list(BINARY), str(folder))


# ----------------------------------------------------------------------------- semeval2017 / tweeteval

# The SemEval-2017 split: train on the 2013-2016 data; the 2016 test set was 2017's development
# set (README_organizers_4A-English.txt); the 2014 sarcasm set is kept apart for error analysis.
SEMEVAL_FILES = {
    **{f"train_2013_2016/twitter-{part}-A.tsv": "train" for part in (
        "2013train", "2013dev", "2013test", "2014test", "2015train", "2015test", "2016train", "2016dev",
        "2016devtest")},
    "train_2013_2016/twitter-2016test-A.tsv": "val",
    "train_2013_2016/twitter-2014sarcasm-A.tsv": "sarcasm",
    "test_2017/SemEval2017-task4-test.subtask-A.english.txt": "test",
}
SEMEVAL_LABELS = {name: index for index, name in enumerate(THREE_CLASS)}
# Some SemEval 2013-2015 tweets (and so some of TweetEval's val) keep JSON escapes: "I\u2019m", \"
JSON_ESCAPES = re.compile(r'(?:\\u[0-9a-fA-F]{4})+|\\"')


def unescape(texts: pd.Series) -> pd.Series:
    """Decode `\\uXXXX` runs (surrogate pairs too) and `\\"`; other backslashes ("\\m/") stay."""
    return texts.str.replace(JSON_ESCAPES, lambda found: json.loads(f'"{found[0]}"'), regex=True)


@register_source("semeval2017")
def read_semeval2017(cfg: DataConfig) -> SourceData:
    """SemEval-2017 Task 4A: id<TAB>label<TAB>text files; JSON escapes decoded."""
    folder = resolve_path(cfg.path, "semeval2017_task4a", cfg.dataset)
    parts: dict[str, list[pd.DataFrame]] = {}
    for name, split in SEMEVAL_FILES.items():
        parts.setdefault(split, []).append(parse_semeval(read_text(folder / name, cfg), str(folder / name)))
    splits = {split: pd.concat(frames, ignore_index=True) for split, frames in parts.items()}
    return SourceData(splits, list(THREE_CLASS), str(folder))


def parse_semeval(text: str, where: str) -> pd.DataFrame:
    # A 4th field is twitter-2016test-A's: empty, or the tweet's date on a few lines.
    table = read_table(text, where, header=None, sep="\t", quoting=csv.QUOTE_NONE,
                       names=["id", "label", "text", "date"])
    bad_id = ~table["id"].fillna("").str.fullmatch(r"\d+")
    if bad_id.any():
        line = bad_id.idxmax()
        raise DataError(f"{where}: line {line}: tweet id {table['id'][line]!r} is not a number "
                        f"(expected id<TAB>label<TAB>text)")
    label = encode_labels(table["label"], SEMEVAL_LABELS, where, "label", "positive, neutral or negative")
    if table["text"].isna().any():
        line = table["text"].isna().idxmax()
        raise DataError(f"{where}: line {line}: no tweet text (expected id<TAB>label<TAB>text)")
    return labelled(unescape(table["text"]).str.strip(), label)


TWEETEVAL_LABELS = {str(index): index for index in range(len(THREE_CLASS))}


@register_source("tweeteval")
def read_tweeteval(cfg: DataConfig) -> SourceData:
    """TweetEval sentiment: `{split}_text.txt` line i has label line i of `{split}_labels.txt`; escapes decoded.

    The shared folder lacks train_text.txt: its train split is then left out (evaluation only).
    """
    folder = resolve_path(cfg.path, "tweeteval_sentiment", cfg.dataset)
    mapping = folder / "mapping.txt"
    if mapping.is_file():
        expected = [f"{index}\t{name}" for index, name in enumerate(THREE_CLASS)]
        if [line.strip() for line in lines_of(read_text(mapping, cfg))] != expected:
            raise DataError(f"{mapping}: expected the lines {expected}")
    splits = {}
    for split in SPLIT_NAMES:
        text_path, label_path = folder / f"{split}_text.txt", folder / f"{split}_labels.txt"
        if split == "train" and not text_path.is_file():
            log.warning("%s: missing, so tweeteval has no train split here (`sendit data download tweeteval` "
                        "fetches it)", text_path)
            continue
        texts, labels = lines_of(read_text(text_path, cfg)), lines_of(read_text(label_path, cfg))
        if len(texts) != len(labels):
            raise DataError(f"{text_path}: {len(texts)} lines, but {label_path.name} has {len(labels)}; "
                            f"line i of each belong together")
        lines = range(1, len(labels) + 1)
        label = encode_labels(pd.Series(labels, index=lines).str.strip(), TWEETEVAL_LABELS, str(label_path),
                              "label", "0 (negative), 1 (neutral) or 2 (positive)")
        splits[split] = labelled(unescape(pd.Series(texts, index=lines)).str.strip(), label)
    return SourceData(splits, list(THREE_CLASS), str(folder))


# Evaluating on examples a model may have trained on is refused (the test sets are the same 12,284
# tweets in both, so test is safe).
SHARED_POOLS = {frozenset({"semeval2017", "tweeteval"}):
                "TweetEval's train and val were drawn from the SemEval 2013-2016 data that is semeval2017's "
                "train, val and sarcasm splits"}


def check_independent(trained_on: str, evaluated_on: str, split: str) -> None:
    """Refuse an evaluation split that overlaps the training data of a run on another dataset."""
    reason = SHARED_POOLS.get(frozenset({trained_on, evaluated_on}))
    if reason and split != "test":
        raise DataError(f"{evaluated_on}:{split}: not independent of a run trained on {trained_on} ({reason}); "
                        f"evaluate on {evaluated_on}:test, or train on {evaluated_on}")


# ----------------------------------------------------------------------------- $T$ target datasets

TARGET_FILES = {  # registry name: (folder, {split: file})
    "dong2014": ("twitter_target_dong2014", {"train": "train.raw", "test": "test.raw"}),
    "semeval2014_laptops": ("absa_semeval2014", {"train": "Laptops_Train.xml.seg",
                                                 "test": "Laptops_Test_Gold.xml.seg"}),
    "semeval2014_restaurants": ("absa_semeval2014", {"train": "Restaurants_Train.xml.seg",
                                                     "test": "Restaurants_Test_Gold.xml.seg"}),
}
TARGET_LABELS = {"-1": 0, "0": 1, "1": 2}


def read_target_dataset(cfg: DataConfig, folder: str, files: dict[str, str]) -> SourceData:
    """Instances of 3 lines (sentence with `$T$`, target, label -1/0/1), as marked texts (see target.py)."""
    root = resolve_path(cfg.path, folder, cfg.dataset)
    splits = {split: parse_target_file(read_text(root / name, cfg), str(root / name)) for split, name in files.items()}
    return SourceData(splits, list(THREE_CLASS), str(root))


for _name, (_folder, _files) in TARGET_FILES.items():
    register_source(_name, clean=False, targeted=True)(
        functools.partial(read_target_dataset, folder=_folder, files=_files))
del _name, _folder, _files


def parse_target_file(text: str, where: str) -> pd.DataFrame:
    if not text.strip():
        raise DataError(f"{where}: empty file, no instances")
    lines = lines_of(text)
    sentences, labels = [], {}
    for start in range(0, len(lines) - len(lines) % 3, 3):
        sentence, target, label = lines[start], lines[start + 1].strip(), lines[start + 2].strip()
        if PLACEHOLDER not in sentence:
            raise DataError(f"{where}: line {start + 1}: no {PLACEHOLDER} in the sentence line (each instance is "
                            f"3 lines: sentence with {PLACEHOLDER}, target, label)")
        if OPEN in sentence or CLOSE in sentence:
            raise DataError(f"{where}: line {start + 1}: the sentence already holds {OPEN} or {CLOSE}, "
                            f"the target markers")
        if not target:
            raise DataError(f"{where}: line {start + 2}: empty target")
        sentences.append(mark(sentence, target))
        labels[start + 3] = label
    if len(lines) % 3:
        raise DataError(f"{where}: {len(lines)} lines, not a multiple of 3: the instance at line "
                        f"{len(lines) - len(lines) % 3 + 1} is incomplete")
    label = encode_labels(pd.Series(labels), TARGET_LABELS, where, "label",
                          "-1 (negative), 0 (neutral) or 1 (positive)")
    return labelled(pd.Series(sentences, index=label.index), label)


# ----------------------------------------------------------------------------- NAME:SPLIT

SPLIT_ALIASES = {"dev": "val", "validation": "val"}


class DatasetSplits(NamedTuple):
    frames: dict[str, pd.DataFrame]  # split name -> text, label
    label_names: list[str]
    stats: dict | None  # `prepare`'s, when the dataset has a train split


def dataset_splits(cfg: DataConfig) -> DatasetSplits:
    """Every split of `cfg.dataset`, as `sendit data info` lists them and `NAME:SPLIT` names them.

    With train text, every split is `prepare`'s, so a run's own test split (and its extra sets, e.g.
    semeval2017:sarcasm) comes back exactly; the splits of a dataset without train text here
    (tweeteval) are cleaned like training texts but not deduplicated or resampled.
    """
    data = read_source(cfg, need_train=False)
    if "train" in data.splits:
        prepared = prepare(cfg)
        frames = {"train": prepared.train, "val": prepared.val, "test": prepared.test, **prepared.extra}
        return DatasetSplits(frames, data.label_names, prepared.stats)
    frames = {name: clean_examples(frame, cfg, whole=name == "test") for name, frame in data.splits.items()}
    return DatasetSplits(frames, data.label_names, None)


ALL = "all"  # NAME:all, every example the source holds


def default_split(cfg: DataConfig) -> str:
    """What `sendit eval --dataset NAME` scores on another dataset: its own test split if it ships one,
    else the whole file (a labelled CSV is not carved into train/val/test for an evaluation)."""
    return "test" if "test" in read_source(cfg, need_train=False).splits else ALL


def split_of(cfg: DataConfig, split: str) -> tuple[pd.DataFrame, list[str]]:
    """The examples of `cfg.dataset`:`split` ("dev" and "validation" name the val split) and the label names.

    `all` is every example of every split the source holds, cleaned, in file order (not deduplicated).
    """
    if split == ALL:
        data = read_source(cfg, need_train=False)
        frames = [clean_examples(frame, cfg) for frame in data.splits.values()]
        return pd.concat(frames, ignore_index=True), data.label_names
    frames, label_names, _ = dataset_splits(cfg)
    name = SPLIT_ALIASES.get(split, split)
    if name not in frames:
        raise DataError(f"{cfg.dataset}:{split}: no such split; {cfg.dataset} has {', '.join([*frames, ALL])}")
    return frames[name], label_names

