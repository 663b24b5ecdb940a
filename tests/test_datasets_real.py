"""Every shared benchmark dataset read in full, its counts checked against its SOURCE.md (slow: `make test-slow`)."""
import re
from collections import Counter
from pathlib import Path

import pytest

from sendit.config import DataConfig, load_study
from sendit.data import data_root, prepare, read_source
from sendit.data.datasets import SEMEVAL_FILES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (data_root() / "imdb").is_dir(), reason=f"no shared data under {data_root()}"),
]

# SOURCE.md tables: (negative, neutral, positive) or (negative, positive) per split
SEMEVAL_SOURCE_MD = {
    "twitter-2013train-A.tsv": (1458, 4586, 3640), "twitter-2013dev-A.tsv": (340, 739, 575),
    "twitter-2013test-A.tsv": (559, 1513, 1475), "twitter-2014test-A.tsv": (202, 669, 982),
    "twitter-2014sarcasm-A.tsv": (40, 13, 33), "twitter-2015train-A.tsv": (66, 253, 170),
    "twitter-2015test-A.tsv": (365, 987, 1038), "twitter-2016train-A.tsv": (863, 2043, 3094),
    "twitter-2016dev-A.tsv": (391, 765, 843), "twitter-2016devtest-A.tsv": (325, 681, 994),
    "twitter-2016test-A.tsv": (3231, 10342, 7059),
    "SemEval2017-task4-test.subtask-A.english.txt": (3972, 5937, 2375),
}


def semeval_by_split():
    totals = {}
    for path, split in SEMEVAL_FILES.items():
        counts = SEMEVAL_SOURCE_MD[path.split("/")[-1]]
        totals[split] = tuple(a + b for a, b in zip(totals.get(split, (0, 0, 0)), counts))
    return totals


EXPECTED = {
    "imdb": {"train": (12_500, 12_500), "test": (12_500, 12_500)},
    "sst2": {"train": (29_780, 37_569), "val": (428, 444)},
    "semeval2017": semeval_by_split(),
    "tweeteval": {"val": (312, 869, 819), "test": (3_972, 5_937, 2_375)},  # train text missing here
    "dong2014": {"train": (1_560, 3_127, 1_561), "test": (173, 346, 173)},
    "semeval2014_laptops": {"train": (870, 464, 994), "test": (128, 169, 341)},
    "semeval2014_restaurants": {"train": (807, 637, 2_164), "test": (196, 196, 728)},
}


@pytest.mark.parametrize("dataset", EXPECTED)
def test_counts_match_source_md(dataset):
    data = read_source(DataConfig(dataset=dataset), need_train=False)
    counts = {split: tuple(Counter(frame["label"])[k] for k in range(len(data.label_names)))
              for split, frame in data.splits.items()}
    print(f"\n{dataset} ({data.origin}): " + "; ".join(
        f"{split} {sum(c):,} = " + " / ".join(f"{name} {n:,}" for name, n in zip(data.label_names, c))
        for split, c in counts.items()))
    assert counts == EXPECTED[dataset]
    texts = "\n".join(frame["text"].str.cat(sep="\n") for frame in data.splits.values())
    assert not re.search(r"<br\s*/?>|\\u[0-9a-fA-F]{4}|\$T\$", texts)  # line breaks, escapes, placeholders gone
    if dataset.startswith(("dong", "semeval2014")):
        assert all(frame["text"].str.contains("[TGT]", regex=False).all() for frame in data.splits.values())


def test_imdb_sizes_fit_the_train_split():
    """imdb_sizes.yaml's largest training-set size must fit in the train split left after dedup and val."""
    cfg = load_study(Path(__file__).parents[1] / "configs" / "imdb_sizes.yaml")
    splits = prepare(cfg.data)
    print(f"\nimdb prepared: {splits.stats['split_sizes']}, dropped duplicates {splits.stats['dropped_duplicates']}")
    assert splits.stats["rows_read"] == 50_000 and max(cfg.sizes) <= len(splits.train)


@pytest.mark.parametrize("dataset", ["semeval2017", "dong2014"])
def test_data_info_lists_every_class(dataset):
    from typer.testing import CliRunner

    from sendit.cli import app

    result = CliRunner().invoke(app, ["data", "info", dataset])
    print(result.output)
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in ("negative", "neutral", "positive"))


def test_imdb_methods_split_sizes():
    """imdb_methods.yaml: 3,000 train + 333 val from a 3,333 sample, and 2,000 test reviews."""
    splits = prepare(load_study(Path(__file__).parents[1] / "configs" / "imdb_methods.yaml").data)
    print(f"\nimdb_methods: {splits.stats['split_sizes']}, labels {splits.stats['label_counts']}")
    assert splits.stats["split_sizes"] == {"train": 3_000, "val": 333, "test": 2_000}
