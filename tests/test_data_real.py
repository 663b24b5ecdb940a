"""The real 20k Sentiment140 sample through the whole data pipeline (slow: `make test-slow`)."""
import pytest

from sendit.config import DataConfig
from sendit.data import data_root, prepare, read_source

SAMPLE = data_root() / "sentiment140/train_random20k_6col/sentiment140_sample.csv"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SAMPLE.is_file(), reason=f"{SAMPLE} not present"),
]


def test_real_20k_sample():
    raw = read_source(DataConfig(path=str(SAMPLE))).splits["train"]
    assert len(raw) == 20_000
    assert raw["label"].value_counts().to_dict() == {0: 9_942, 1: 10_058}

    splits = prepare(DataConfig(path=str(SAMPLE)))
    stats = splits.stats
    print(f"\nrows read {stats['rows_read']}, dropped empty {stats['dropped_empty']}, "
          f"dropped duplicates {stats['dropped_duplicates']}, pool {stats['pool']}, splits {stats['split_sizes']}, "
          f"labels {stats['label_counts']}")
    assert stats["rows_read"] == 20_000
    assert 19_500 <= stats["pool"] <= 19_900
    sizes = stats["split_sizes"]
    assert sum(sizes.values()) == stats["pool"]
    assert sizes["train"] == pytest.approx(0.8 * stats["pool"], abs=1)
    assert sizes["val"] == sizes["test"] == pytest.approx(0.1 * stats["pool"], abs=1)
    texts = [set(part["text"]) for part in (splits.train, splits.val, splits.test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
