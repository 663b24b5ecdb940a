"""Stratified sampling/splitting and the `prepare` pipeline around them."""
import json

import pandas as pd
import pytest

from sendit.config import DataConfig
from sendit.data import DataError, Splits, parse_split_name, prepare
from sendit.data.sources import SOURCES, Source, SourceData
from sendit.data.split import stratified_sample, stratified_split


def frame(n, positive_share=0.3):
    """n distinct texts, the first `positive_share` of them labelled 1."""
    n_positive = round(n * positive_share)
    return pd.DataFrame({"text": [f"text {i}" for i in range(n)], "label": [1] * n_positive + [0] * (n - n_positive)})


def texts(df):
    return set(df["text"])


def test_split_80_10_10_of_20k_is_exact():
    train, val, test = stratified_split(frame(20_000), [0.8, 0.1, 0.1], seed=42)
    assert (len(train), len(val), len(test)) == (16_000, 2_000, 2_000)


def test_split_is_deterministic_for_a_seed_and_differs_across_seeds():
    df = frame(1_000)
    first, again, other = (stratified_split(df, [0.8, 0.1, 0.1], seed) for seed in (1, 1, 2))
    for a, b in zip(first, again):
        pd.testing.assert_frame_equal(a, b)
    assert texts(first[2]) != texts(other[2])


def test_splits_are_disjoint_and_cover_the_data():
    df = frame(1_000)
    train, val, test = stratified_split(df, [0.7, 0.2, 0.1], seed=0)
    assert not texts(train) & texts(val) and not texts(train) & texts(test) and not texts(val) & texts(test)
    assert texts(train) | texts(val) | texts(test) == texts(df)


def test_split_keeps_label_proportions():
    for part in stratified_split(frame(1_000, positive_share=0.3), [0.8, 0.1, 0.1], seed=3):
        assert part["label"].mean() == pytest.approx(0.3, abs=0.01)


def test_zero_fraction_gives_an_empty_split():
    train, val, test = stratified_split(frame(100), [0.9, 0.0, 0.1], seed=0)
    assert (len(train), len(val), len(test)) == (90, 0, 10)
    assert list(val.columns) == ["text", "label"]


def test_sample_is_stratified_deterministic_and_bounded():
    df = frame(1_000, positive_share=0.2)
    sample = stratified_sample(df, 100, seed=7)
    assert len(sample) == 100 and sample["label"].sum() == 20
    pd.testing.assert_frame_equal(sample, stratified_sample(df, 100, seed=7))
    assert texts(sample) != texts(stratified_sample(df, 100, seed=8))
    assert len(stratified_sample(df, 1_000, seed=7)) == 1_000


@pytest.mark.parametrize("call, expected", [
    (lambda: stratified_sample(frame(10), 11, 0, name="tweets.csv"), "tweets.csv: data.sample=11 but only 10"),
    (lambda: stratified_split(frame(10, 0.0), [0.8, 0.1, 0.1], 0, name="tweets.csv"), "tweets.csv: only one class"),
    (lambda: stratified_sample(frame(10, 1.0), 5, 0, name="tweets.csv"), "tweets.csv: only one class"),
    (lambda: stratified_split(frame(10), [0.8, 0.1, 0.2], 0), "data.split: [0.8, 0.1, 0.2] sum to 1.1"),
    (lambda: stratified_split(frame(10), [0.5, 0.5], 0), "data.split: [0.5, 0.5] must be three fractions"),
    (lambda: stratified_split(frame(4, 0.25), [0.5, 0.25, 0.25], 0, name="tiny.csv"), "tiny.csv: cannot take"),
])
def test_split_errors(call, expected):
    with pytest.raises(DataError) as caught:
        call()
    assert expected in str(caught.value)


def test_parse_split_name():
    assert parse_split_name("sst2:dev") == ("sst2", "dev")
    assert parse_split_name("sst2") == ("sst2", None)
    with pytest.raises(DataError):
        parse_split_name(":dev")


# ----------------------------------------------------------------------------- prepare

def write_csv(tmp_path, rows):
    path = tmp_path / "d.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return str(path)


def test_prepare_drops_empty_and_duplicate_cleaned_texts(tmp_path):
    rows = [(f"Tweet number {i}!", i % 2) for i in range(100)]
    rows += [("tweet NUMBER 3", 0), ("@bob tweet number 4 http://x.co", 1), ("@only_a_mention", 0), ("!!!", 1)]
    splits = prepare(DataConfig(dataset="csv", path=write_csv(tmp_path, rows), split=[0.8, 0.1, 0.1]))
    assert isinstance(splits, Splits) and splits.label_names == ["0", "1"]
    stats = splits.stats
    assert (stats["rows_read"], stats["dropped_empty"], stats["dropped_duplicates"], stats["pool"]) == (104, 2, 2, 100)
    assert stats["split_sizes"] == {"train": 80, "val": 10, "test": 10}
    assert stats["label_counts"]["train"] == {"0": 40, "1": 40}
    json.dumps(stats)
    all_texts = [t for part in (splits.train, splits.val, splits.test) for t in part["text"]]
    assert len(all_texts) == len(set(all_texts)) == 100


def test_prepare_samples_before_splitting(tmp_path):
    rows = [(f"tweet {i}", int(i < 300)) for i in range(1_000)]
    splits = prepare(DataConfig(dataset="csv", path=write_csv(tmp_path, rows), sample=200, seed=5))
    assert splits.stats["split_sizes"] == {"train": 160, "val": 20, "test": 20}
    assert splits.stats["label_counts"]["train"] == {"0": 112, "1": 48}


def presplit_source(monkeypatch, splits):
    """Register a throwaway source that ships its own splits."""
    def read(cfg):
        return SourceData({name: pd.DataFrame(rows, columns=["text", "label"]) for name, rows in splits.items()},
                          ["neg", "pos"], "presplit")
    monkeypatch.setitem(SOURCES, "presplit", Source("presplit", read))


def test_prepare_keeps_predefined_test_and_carves_val_from_train(monkeypatch):
    train = [(f"train {i}", i % 2) for i in range(90)] + [("shared text", 1), ("Shared TEXT!", 0)]
    test = [(f"test {i}", i % 2) for i in range(20)] + [("shared text", 0), ("test 3", 1), ("@only_a_mention", 1)]
    presplit_source(monkeypatch, {"train": train, "test": test})
    splits = prepare(DataConfig(dataset="presplit", split=[0.8, 0.1, 0.1]))
    assert len(splits.test) == 23 and "shared text" in texts(splits.test)  # whole: its repeat and empty text too
    assert "shared text" not in texts(splits.train) | texts(splits.val)
    assert splits.stats["dropped_duplicates"] == 2
    # val takes 0.1 / (0.8 + 0.1) of the 90 remaining train texts
    assert (len(splits.train), len(splits.val)) == (80, 10)


def test_prepare_keeps_all_predefined_splits(monkeypatch):
    presplit_source(monkeypatch, {"train": [("a", 0), ("b", 1), ("c", 0), ("d", 1)],
                                  "val": [("e", 0), ("f", 1)], "test": [("g", 0), ("a", 1)]})
    splits = prepare(DataConfig(dataset="presplit"))
    assert texts(splits.train) == {"b", "c", "d"}  # "a" is also in test
    assert texts(splits.val) == {"e", "f"} and texts(splits.test) == {"g", "a"}
