"""Stratified sampling and train/val/test splitting, deterministic for a seed.

Split sizes are whole numbers computed up front (round(fraction * n)), so 80/10/10 of 20,000 is
exactly 16,000/2,000/2,000: chaining float fractions through sklearn can round one example off.
"""
from __future__ import annotations

import math

import pandas as pd

from sendit.data.errors import DataError


def check_fractions(fractions: list[float]) -> None:
    """Fail fast (before reading any data) on a split that cannot be made."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or fractions[0] <= 0:
        raise DataError(f"data.split: {fractions} must be three fractions train/val/test, "
                        f"train > 0 and none negative, e.g. [0.8, 0.1, 0.1]")
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise DataError(f"data.split: {fractions} sum to {sum(fractions):g}, not 1")


def check_classes(df: pd.DataFrame, name: str) -> None:
    counts = df["label"].value_counts()
    if len(counts) < 2:
        only = f"label {counts.index[0]}" if len(counts) else "no labels"
        raise DataError(f"{name}: only one class ({only}) in {len(df)} examples; "
                        f"a classifier and a stratified split need at least two")


def stratified_sample(df: pd.DataFrame, n: int, seed: int, *, name: str = "data") -> pd.DataFrame:
    """`n` examples with the label proportions of `df`."""
    sample, _ = sample_and_rest(df, n, seed, name=name)
    return sample


def sample_and_rest(df: pd.DataFrame, n: int, seed: int, *, name: str = "data",
                    field: str = "data.sample") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(`n` examples with the label proportions of `df`, the examples not drawn)."""
    check_classes(df, name)
    if n > len(df):
        raise DataError(f"{name}: {field}={n} but only {len(df)} examples are available")
    if n == len(df):
        return df.reset_index(drop=True), df.iloc[:0].reset_index(drop=True)
    return split_off(df, len(df) - n, seed, name)


def stratified_split(df: pd.DataFrame, fractions: list[float], seed: int, *,
                     name: str = "data") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, val, test) with the label proportions of `df`; a zero fraction gives an empty split."""
    check_fractions(fractions)
    check_classes(df, name)
    _, val_fraction, test_fraction = fractions
    n_val, n_test = round(val_fraction * len(df)), round(test_fraction * len(df))
    for part, fraction, n in (("val", val_fraction, n_val), ("test", test_fraction, n_test)):
        if fraction > 0 and n == 0:
            raise DataError(f"{name}: {len(df)} examples are too few for data.split {fractions}: the {part} split "
                            f"would be empty; need at least {math.floor(0.5 / fraction) + 1} examples")
    rest, test = split_off(df, n_test, seed, name)
    train, val = split_off(rest, n_val, seed, name)
    return train, val, test


def split_off(df: pd.DataFrame, n: int, seed: int, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, part) where `part` holds `n` stratified examples."""
    from sklearn.model_selection import train_test_split  # lazily: sklearn takes ~1 s to import

    if n == 0:
        return df.reset_index(drop=True), df.iloc[:0].reset_index(drop=True)
    try:
        rest, part = train_test_split(df, test_size=n, stratify=df["label"], random_state=seed)
    except ValueError as err:  # e.g. a class with a single example, or fewer examples than classes
        raise DataError(f"{name}: cannot take {n} of {len(df)} examples stratified by label: {err}") from None
    return rest.reset_index(drop=True), part.reset_index(drop=True)
