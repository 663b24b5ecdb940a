"""The uncertainty of a comparison: bootstrap intervals over test examples, McNemar's paired test (and
its extension over seeds), and the plain-language verdict a reader acts on.

One test set is shared by every run of a study, so two methods are compared example by example
(McNemar), and an interval describes how much the score would move on another test set drawn
from the same population (bootstrap over test examples) and, with several seeds, on other seeds too.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.stats import binomtest, chi2
from scipy.stats import t as student_t

METRICS = ("accuracy", "f1_macro", "recall_macro")
EXACT_BELOW = 25  # discordant pairs under which McNemar's chi-square approximation is poor


class Interval(NamedTuple):
    estimate: float  # the metric on the test set as it is
    low: float
    high: float


def bootstrap_ci(labels, predictions, metric: str = "accuracy", *, n_boot: int = 2000, seed: int = 0,
                 alpha: float = 0.05, num_classes: int | None = None) -> Interval:
    """Percentile bootstrap interval of accuracy, macro-F1 or macro-recall, resampling test examples.

    `predictions` is one vector or a (runs, examples) array of several runs on the same test set
    (e.g. one per seed); the statistic is then their mean, and every run sees the same resample,
    so the interval is that of the seed-averaged score. `num_classes` counts classes absent from
    both labels and predictions in the macro averages (as the run's own metrics do, scoring such a class
    0); default: those present.
    """
    low, high = np.quantile(bootstrap(labels, predictions, metric, n_boot=n_boot, seed=seed,
                                      num_classes=num_classes), [alpha / 2, 1 - alpha / 2])
    labels, predictions = _as_arrays(labels, predictions)
    estimate = _score(labels, predictions, np.arange(len(labels))[None], metric, num_classes)[0]
    return Interval(float(estimate), float(low), float(high))


def with_seeds(test_interval: Interval, scores, alpha: float = 0.05) -> Interval:
    """The interval of a seed-averaged score that holds the seeds' chance besides the test sample's.

    `test_interval` (the bootstrap's) is where another test set would put these same trained models; another
    set of seeds moves the score too. Each side's half-width and the seeds' Student-t half-width of their
    mean (k - 1 degrees of freedom) are added in quadrature, clipped to [0, 1]. One seed: `test_interval`
    (the seeds' part is unknown).
    """
    scores = np.asarray(scores, dtype=float)
    if len(scores) < 2:
        return test_interval
    estimate, low, high = test_interval
    seed_half = student_t.ppf(1 - alpha / 2, len(scores) - 1) * scores.std(ddof=1) / len(scores) ** 0.5
    below, above = np.hypot(estimate - low, seed_half), np.hypot(high - estimate, seed_half)
    return Interval(estimate, max(0.0, float(estimate - below)), min(1.0, float(estimate + above)))


def bootstrap(labels, predictions, metric: str = "accuracy", *, n_boot: int = 2000, seed: int = 0,
              num_classes: int | None = None, chunk: int = 200) -> np.ndarray:
    """`n_boot` replicates of the metric on test sets resampled with replacement (deterministic for `seed`)."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
    labels, predictions = _as_arrays(labels, predictions)
    rng = np.random.default_rng(seed)
    n = len(labels)
    parts = []
    for start in range(0, n_boot, chunk):  # bounded memory: chunk x n indices at a time
        index = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        parts.append(_score(labels, predictions, index, metric, num_classes))
    return np.concatenate(parts)


def _as_arrays(labels, predictions) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    predictions = np.atleast_2d(np.asarray(predictions))
    if predictions.shape[1] != len(labels) or len(labels) == 0:
        raise ValueError(f"predictions {predictions.shape} do not match {len(labels)} labels")
    return labels, predictions


def _score(labels: np.ndarray, predictions: np.ndarray, index: np.ndarray, metric: str,
           num_classes: int | None) -> np.ndarray:
    """The metric on each resample (rows of `index`), averaged over the runs in `predictions`."""
    y = labels[index]  # (resamples, n)
    p = predictions[:, index]  # (runs, resamples, n)
    if metric == "accuracy":
        return (p == y).mean(axis=2).mean(axis=0)
    classes = num_classes or int(max(labels.max(), predictions.max())) + 1
    total = np.zeros(p.shape[:2])
    for c in range(classes):
        truly_c = y == c
        tp = ((p == c) & truly_c).sum(axis=2)
        if metric == "recall_macro":
            support = truly_c.sum(axis=1)
            total += np.divide(tp, support, out=np.zeros(tp.shape), where=support > 0)
        else:
            wrong = ((p == c) != truly_c).sum(axis=2)  # false positives + false negatives
            total += np.divide(2 * tp, 2 * tp + wrong, out=np.zeros(tp.shape), where=(2 * tp + wrong) > 0)
    return (total / classes).mean(axis=0)


def mcnemar(correct_a, correct_b) -> tuple[float, float]:
    """McNemar's test of two classifiers on the same examples: (statistic, two-sided p-value).

    Only the discordant pairs count: b = examples only A gets right, c = only B. With fewer than
    25 of them the test is the exact binomial one (statistic min(b, c), p = P(Binomial(b + c, 1/2)
    this unbalanced)); otherwise the chi-square with continuity correction, (|b - c| - 1)^2 / (b + c)
    on 1 degree of freedom. No discordant pair: (0, 1).
    """
    b, c = discordant(correct_a, correct_b)
    if b + c == 0:
        return 0.0, 1.0
    if b + c < EXACT_BELOW:
        return float(min(b, c)), float(binomtest(min(b, c), b + c, 0.5).pvalue)
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return float(statistic), float(chi2.sf(statistic, 1))


def discordant(correct_a, correct_b) -> tuple[int, int]:
    """(examples only A gets right, examples only B gets right); over (seeds, examples), summed over the seeds."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired test needs the same examples: {a.shape} vs {b.shape}")
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def paired_test(correct_a, correct_b) -> tuple[float, float]:
    """Two methods' paired test on the same examples, each run on one or several seeds: (statistic, p).

    `correct_a`, `correct_b`: (examples,) or (seeds, examples), seed s of A paired with seed s of B. One
    seed: McNemar's test. Several: its extension to seed-averaged accuracy, a sign-flip test on
    d_i = (seeds A gets example i right) - (seeds B gets it right): under equal accuracy each d_i is
    as likely negated. Exact below 25 examples with d_i != 0, else the normal approximation with
    continuity correction, statistic (|sum d| - 1)^2 / sum d^2 (McNemar's own with one seed). Its
    direction is always that of the difference of the seed-averaged accuracies; the spread between
    seeds is not in it (report it beside, as the std over seeds).
    """
    a, b = np.atleast_2d(np.asarray(correct_a, dtype=int)), np.atleast_2d(np.asarray(correct_b, dtype=int))
    if a.shape != b.shape:
        raise ValueError(f"paired test needs the same examples and seeds: {a.shape} vs {b.shape}")
    if len(a) == 1:
        return mcnemar(a[0], b[0])
    d = a.sum(axis=0) - b.sum(axis=0)
    d = np.abs(d[d != 0])
    if len(d) == 0:
        return 0.0, 1.0
    observed = abs(int(np.sum(a) - np.sum(b)))
    if len(d) < EXACT_BELOW:
        return float(observed), _sign_flip_p(d, observed)
    statistic = (observed - 1) ** 2 / float(np.sum(d ** 2))
    return float(statistic), float(chi2.sf(statistic, 1))


def _sign_flip_p(magnitudes: np.ndarray, observed: int) -> float:
    """P(|sum of +-m_i| >= observed) with independent fair signs: the exact distribution by convolution."""
    total = int(magnitudes.sum())
    counts = np.zeros(2 * total + 1)
    counts[total] = 1.0  # index total + s holds P(sum = s)
    for m in magnitudes:
        counts = 0.5 * (np.roll(counts, int(m)) + np.roll(counts, -int(m)))
    sums = np.arange(-total, total + 1)
    return float(min(1.0, counts[np.abs(sums) >= observed].sum()))


def verdict(name_a: str, name_b: str, only_a: int, only_b: int, p: float, alpha: float = 0.05) -> str:
    """"lora > bitfit, p = 0.003" when the paired test rejects equal accuracy, else
    "lora vs bitfit: no significant difference (p = 0.41)". `only_a`, `only_b`: the discordant counts
    (summed over seeds), whose difference gives the direction."""
    if p >= alpha:
        return f"{name_a} vs {name_b}: no significant difference ({format_p(p)})"
    better, worse = (name_a, name_b) if only_a > only_b else (name_b, name_a)
    return f"{better} > {worse}, {format_p(p)}"


def format_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def mean_std(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1) over seeds; std is None for a single seed."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else None
