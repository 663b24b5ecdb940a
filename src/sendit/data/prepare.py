"""From a `DataConfig` to train/val/test frames: read, clean, drop empty and duplicate texts, sample, split."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import pandas as pd

from sendit.config import DataConfig
from sendit.data.clean import clean_examples
from sendit.data.errors import DataError
from sendit.data.sources import LARGER_SOURCES, read_source
from sendit.data.split import check_fractions, sample_and_rest, stratified_split

log = logging.getLogger(__name__)

# Which split keeps a text found in several: evaluation splits first, so train never shares a text with them.
KEEP_ORDER = ("test", "val", "train")


@dataclass
class Splits:
    train: pd.DataFrame  # columns text (str), label (int class index)
    val: pd.DataFrame
    test: pd.DataFrame
    label_names: list[str]  # class-index order
    stats: dict  # JSON-serialisable counts, written next to results
    # The source's other evaluation sets (SemEval's sarcasm tweets), scored apart from test.
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)
    # More training texts for the runs that ask for them (`data.transfer`, `with_transfer`).
    transfer: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"text": [], "label": []}))

    def with_transfer(self, mode: str) -> "Splits":
        """The splits of a run with `transfer: mode` (none | labels | teacher): the transfer texts appended
        to train, in a column `unlabelled` marked as learnt from a teacher alone with mode teacher."""
        if mode == "none":
            return self
        train = pd.concat([self.train.assign(unlabelled=False), self.transfer.assign(unlabelled=mode == "teacher")],
                          ignore_index=True)
        stats = {**self.stats, "transfer": mode, "split_sizes": {**self.stats["split_sizes"], "train": len(train)},
                 "label_counts": {**self.stats["label_counts"], "train": label_counts(train, self.label_names)}}
        return replace(self, train=train, transfer=self.transfer.iloc[:0], stats=stats)


def parse_split_name(spec: str) -> tuple[str, str | None]:
    """"sst2:dev" -> ("sst2", "dev"); "sst2" -> ("sst2", None)."""
    dataset, _, split = spec.partition(":")
    if not dataset:
        raise DataError(f"{spec!r}: expected DATASET or DATASET:SPLIT, e.g. sst2:dev")
    return dataset, split or None


def prepare(cfg: DataConfig) -> Splits:
    """The examples a run trains and evaluates on, deterministic for `cfg`.

    Predefined val/test splits of a source are kept as they are; only the train pool is sampled and
    split into the missing ones. Deduplication runs across all splits so no text is in two of them,
    but a predefined test split stays whole (its published size, repeats and texts that cleaning
    empties included): train and val copies of a test text are dropped instead. A text of an extra
    evaluation set (sarcasm) that is also in train/val/test leaves the extra set.
    """
    check_fractions(cfg.split)
    data = read_source(cfg)
    order = [*(name for name in KEEP_ORDER if name in data.splits), *(n for n in data.splits if n not in KEEP_ORDER)]
    frames = {name: data.splits[name] for name in order}
    if cfg.merge_val and "val" in frames:
        frames["train"] = pd.concat([frames["train"], frames.pop("val")], ignore_index=True)
    rows_read = sum(len(frame) for frame in frames.values())
    frames = {name: clean_examples(frame, cfg, whole=name == "test") for name, frame in frames.items()}
    dropped_empty = rows_read - sum(len(frame) for frame in frames.values())

    pool = pd.concat(frames, names=["split", None]).reset_index(level=0)
    dropped_duplicates = 0
    if cfg.clean.drop_duplicates:  # test first in the pool: train/val copies of a test text go, test texts never
        duplicate = pool["text"].duplicated(keep="first") & (pool["split"] != "test")
        dropped_duplicates = int(duplicate.sum())
        pool = pool[~duplicate]
    log.info("%s: read %d rows; dropped %d duplicate and %d empty texts",
             data.origin, rows_read, dropped_duplicates, dropped_empty)
    frames = {name: pool.loc[pool["split"] == name, ["text", "label"]].reset_index(drop=True) for name in frames}
    train = frames["train"]
    if train.empty:
        raise DataError(f"{data.origin}: no training texts left after cleaning ({rows_read} rows read, "
                        f"{dropped_empty} empty, {dropped_duplicates} duplicate); "
                        f"check data.text_column and data.clean")

    pool_size = len(train)
    if cfg.sample is not None and cfg.sample > pool_size and cfg.path is None and cfg.dataset in LARGER_SOURCES:
        raise DataError(f"{data.origin}: data.sample={cfg.sample} but only {pool_size} examples are available in "
                        f"{cfg.dataset}'s default source, a sample; --path {LARGER_SOURCES[cfg.dataset]} "
                        f"(data.path) reads the whole dataset")
    rest = train.iloc[:0]
    if cfg.sample is not None:
        train, rest = sample_and_rest(train, cfg.sample, cfg.seed, name=data.origin)
    # Carve only the splits the source lacks out of the train pool, in the configured proportions.
    train_share, val_share, test_share = cfg.split
    shares = [train_share, 0.0 if "val" in frames else val_share, 0.0 if "test" in frames else test_share]
    train, val, test = stratified_split(train, [s / sum(shares) for s in shares], cfg.seed, name=data.origin)
    val, test = frames.get("val", val), frames.get("test", test)
    evaluated = [frame for name, frame in frames.items() if name != "train"]  # predefined val, test, extra sets
    transfer = transfer_set(rest, [train, val, test, *evaluated], cfg, data.origin)

    splits = {"train": train, "val": val, "test": test}
    stats = {
        "dataset": cfg.dataset,
        "source": data.origin,
        "rows_read": rows_read,
        "dropped_empty": dropped_empty,
        "dropped_duplicates": dropped_duplicates,
        "pool": pool_size,  # train pool after cleaning and dedup, before sampling
        "sampled": cfg.sample,
        "split_sizes": {name: len(frame) for name, frame in splits.items()},
        "label_counts": {name: label_counts(frame, data.label_names) for name, frame in splits.items()},
    }
    extra = {name: frame for name, frame in frames.items() if name not in KEEP_ORDER}
    if extra:
        stats["extra_sizes"] = {name: len(frame) for name, frame in extra.items()}
    if cfg.transfer:
        stats |= {"transfer_pool": len(rest), "transfer_size": len(transfer),
                  "transfer_label_counts": label_counts(transfer, data.label_names)}
    log.info("%s: split sizes %s%s", data.origin, stats["split_sizes"],
             f", transfer set {len(transfer)}" if cfg.transfer else "")
    return Splits(train, val, test, data.label_names, stats, extra, transfer)


def transfer_set(rest: pd.DataFrame, splits: list[pd.DataFrame], cfg: DataConfig, origin: str) -> pd.DataFrame:
    """`data.transfer` texts drawn stratified from the train pool that `data.sample` left, without a copy of
    any text of `splits` (deduplication may be switched off)."""
    if not cfg.transfer:
        return rest.iloc[:0]
    if cfg.sample is None:
        raise DataError(f"{origin}: data.transfer={cfg.transfer} draws from the train pool outside data.sample, "
                        "but data.sample is not set (the whole pool is already the sample)")
    taken = set().union(*(frame["text"] for frame in splits))
    transfer, _ = sample_and_rest(rest[~rest["text"].isin(taken)], cfg.transfer, cfg.seed,
                                  name=f"{origin} (outside data.sample)", field="data.transfer")
    return transfer


def label_counts(frame: pd.DataFrame, label_names: list[str]) -> dict[str, int]:
    counts = frame["label"].value_counts()
    return {name: int(counts.get(index, 0)) for index, name in enumerate(label_names)}
