"""Bootstrap intervals and McNemar's test against cases worked out by hand."""
import math

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score, recall_score

from sendit.stats import (Interval, bootstrap, bootstrap_ci, format_p, mcnemar, mean_std, paired_test, verdict,
                          with_seeds)


def paired(only_a: int, only_b: int, both: int = 50, neither: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Correctness vectors of A and B with the given 2x2 table."""
    a = [1] * only_a + [0] * only_b + [1] * both + [0] * neither
    b = [0] * only_a + [1] * only_b + [1] * both + [0] * neither
    return np.array(a, bool), np.array(b, bool)


def test_mcnemar_chi_square_with_continuity_correction():
    # b = 30, c = 10: (|30 - 10| - 1)^2 / 40 = 361 / 40 = 9.025; chi-square(1) tail = erfc(sqrt(x / 2)).
    statistic, p = mcnemar(*paired(30, 10))
    assert statistic == pytest.approx(9.025)
    assert p == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))  # 0.00266
    assert mcnemar(*paired(10, 30)) == (statistic, p)  # symmetric


def test_mcnemar_exact_binomial_below_25_discordant_pairs():
    # b = 8, c = 2: p = 2 * P(X <= 2), X ~ Binomial(10, 1/2) = 2 * (1 + 10 + 45) / 1024 = 0.109375.
    statistic, p = mcnemar(*paired(8, 2))
    assert statistic == 2 and p == pytest.approx(112 / 1024)
    assert p == pytest.approx(binomtest(2, 10, 0.5).pvalue)
    assert mcnemar(*paired(12, 12))[1] == pytest.approx(1.0)
    # 24 discordant pairs: still exact; 25: chi-square.
    assert mcnemar(*paired(18, 6)) == (6.0, pytest.approx(binomtest(6, 24, 0.5).pvalue))
    assert mcnemar(*paired(19, 6))[0] == pytest.approx((13 - 1) ** 2 / 25)


def test_mcnemar_without_discordant_pairs_and_mismatched_inputs():
    assert mcnemar(*paired(0, 0)) == (0.0, 1.0)
    with pytest.raises(ValueError, match="same examples"):
        mcnemar([True, False], [True])


def test_verdict_names_the_better_method_only_when_significant():
    assert verdict("lora", "bitfit", 30, 10, mcnemar(*paired(30, 10))[1]) == "lora > bitfit, p = 0.0027"
    assert verdict("lora", "bitfit", 10, 30, mcnemar(*paired(10, 30))[1]) == "bitfit > lora, p = 0.0027"
    assert verdict("lora", "bitfit", 8, 2, mcnemar(*paired(8, 2))[1]) == \
        "lora vs bitfit: no significant difference (p = 0.11)"
    assert verdict("a", "b", 200, 20, 1e-9) == "a > b, p < 0.001"
    assert format_p(0.41) == "p = 0.41" and format_p(0.003) == "p = 0.003"


def test_paired_test_on_one_seed_is_mcnemar():
    a, b = paired(30, 10)
    assert paired_test(a, b) == mcnemar(a, b) == paired_test(a[None], b[None])
    with pytest.raises(ValueError, match="same examples and seeds"):
        paired_test(np.stack([a, a]), b[None])


def test_paired_test_over_seeds_exact_by_hand():
    """Two seeds, 4 examples. Seed counts right, A: [2, 2, 2, 1], B: [0, 0, 1, 1]: d = [2, 2, 1, 0],
    observed |sum d| = 5. Signs of (2, 2, 1) flipped: |sum| reaches 5 only in 2 of the 8 patterns."""
    a = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
    b = np.array([[0, 0, 1, 1], [0, 0, 0, 0]], bool)
    assert paired_test(a, b) == (5.0, pytest.approx(2 / 8))
    assert paired_test(b, a) == (5.0, pytest.approx(2 / 8))
    assert paired_test(a, a) == (0.0, 1.0)


def test_paired_test_over_seeds_follows_the_mean_not_one_seed():
    """The reason for the test: seed 1 favours A (30 vs 10 discordant), seed 2 favours B far more
    (5 vs 60). One seed's McNemar says A; the seed-averaged accuracies and the test say B."""
    a1, b1 = paired(30, 10)
    b2, a2 = paired(60, 5, both=20, neither=15)
    a, b = np.stack([a1, a2]), np.stack([b1, b2])
    assert mcnemar(a1, b1)[1] < 0.05 and a1.mean() > b1.mean()
    assert a.mean() < b.mean()
    d = a.sum(0).astype(int) - b.sum(0).astype(int)
    statistic, p = paired_test(a, b)
    assert statistic == pytest.approx((abs(d.sum()) - 1) ** 2 / (d ** 2).sum())
    assert p == pytest.approx(math.erfc(math.sqrt(statistic / 2))) and p < 0.05


def test_bootstrap_of_two_examples_matches_the_enumerated_distribution():
    # correct = [1, 0]: a resample of 2 holds 0, 1 or 2 correct examples with probability 1/4, 1/2, 1/4.
    replicates = bootstrap([0, 1], [0, 0], n_boot=4000, seed=1)
    for value, probability in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25)):
        assert np.mean(replicates == value) == pytest.approx(probability, abs=0.03)
    assert bootstrap_ci([0, 1], [0, 0]) == (0.5, 0.0, 1.0)


def test_bootstrap_accuracy_interval_matches_the_normal_approximation():
    # 400 examples, 320 correct: 0.8 +- 1.96 * sqrt(0.8 * 0.2 / 400) = 0.8 +- 0.0392.
    labels = np.zeros(400, int)
    predictions = np.r_[np.zeros(320, int), np.ones(80, int)]
    estimate, low, high = bootstrap_ci(labels, predictions, n_boot=4000)
    assert estimate == 0.8
    assert low == pytest.approx(0.8 - 0.0392, abs=0.006) and high == pytest.approx(0.8 + 0.0392, abs=0.006)
    assert bootstrap_ci(labels, labels, "f1_macro", num_classes=2) == (0.5, 0.5, 0.5)  # class 1: F1 0
    assert bootstrap_ci(labels, labels) == (1.0, 1.0, 1.0)


def test_bootstrap_macro_f1_estimate_and_determinism():
    # labels 0 0 1 1, predictions 0 1 1 1: F1(0) = 2*1/(2+0+1) = 2/3, F1(1) = 2*2/(4+1+0) = 4/5.
    assert bootstrap_ci([0, 0, 1, 1], [0, 1, 1, 1], "f1_macro").estimate == pytest.approx((2 / 3 + 4 / 5) / 2)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    predictions = np.where(rng.random(300) < 0.7, labels, rng.integers(0, 3, 300))
    ci = bootstrap_ci(labels, predictions, "f1_macro", seed=3)
    assert ci.estimate == pytest.approx(f1_score(labels, predictions, average="macro"))
    assert bootstrap_ci(labels, predictions, "f1_macro", seed=3) == ci
    assert bootstrap_ci(labels, predictions, "f1_macro", seed=4) != ci


def test_bootstrap_macro_recall_by_hand_and_with_an_absent_class():
    # labels 0 0 1 1, predictions 0 1 1 1: recall(0) = 1/2, recall(1) = 2/2.
    assert bootstrap_ci([0, 0, 1, 1], [0, 1, 1, 1], "recall_macro").estimate == pytest.approx(0.75)
    # A third class nobody has: the run's metric (labels=all classes, zero_division=0) scores it 0.
    assert bootstrap_ci([0, 0, 1, 1], [0, 1, 1, 1], "recall_macro", num_classes=3).estimate == pytest.approx(0.5)
    labels, predictions = three_class_runs()
    assert bootstrap_ci(labels, predictions[0], "recall_macro").estimate == pytest.approx(
        recall_score(labels, predictions[0], average="macro"))


def test_interval_with_seeds_adds_their_t_half_width_in_quadrature_by_hand():
    """3 seeds at 0.77, 0.80, 0.83 (std 0.03): t(0.975, 2 df) = 4.3027 x 0.03 / sqrt(3) = 0.0745; with the test
    sample's 0.02 below and 0.03 above: sqrt(0.02^2 + 0.0745^2) = 0.0772 and sqrt(0.03^2 + 0.0745^2) = 0.0803."""
    wider = with_seeds(Interval(0.80, 0.78, 0.83), [0.77, 0.80, 0.83])
    assert wider == pytest.approx((0.80, 0.80 - 0.07718, 0.80 + 0.08035), abs=1e-4)
    assert with_seeds(Interval(0.80, 0.78, 0.83), [0.80]) == (0.80, 0.78, 0.83)  # one seed: the test sample's
    assert with_seeds(Interval(0.5, 0.45, 0.55), [0.0, 1.0]) == (0.5, 0.0, 1.0)  # clipped to a score's range
    assert with_seeds(Interval(0.8, 0.78, 0.82), [0.8, 0.8, 0.8]) == (0.8, 0.78, 0.82)  # seeds that agree add nothing


def three_class_runs(n: int = 400, runs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced 3-class labels (60/30/10%) and `runs` prediction vectors, each ~70% correct."""
    rng = np.random.default_rng(0)
    labels = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    predictions = np.where(rng.random((runs, n)) < 0.7, labels, rng.integers(0, 3, (runs, n)))
    return labels, predictions


@pytest.mark.parametrize("metric", ["accuracy", "f1_macro", "recall_macro"])
def test_bootstrap_replicates_do_not_depend_on_the_chunk_size(metric):
    """Chunks only bound memory: 2000 replicates in chunks of 100 are those of one chunk of 2000."""
    labels, predictions = three_class_runs(runs=2)
    in_chunks = bootstrap(labels, predictions, metric, n_boot=2000, seed=5, chunk=100)
    at_once = bootstrap(labels, predictions, metric, n_boot=2000, seed=5, chunk=2000)
    np.testing.assert_array_equal(in_chunks, at_once)
    assert len(bootstrap(labels, predictions, metric, n_boot=250, chunk=100)) == 250  # a partial last chunk


def test_bootstrap_chunks_are_fresh_resamples():
    """A generator re-seeded per chunk would repeat the first chunk's 100 replicates 20 times over;
    fresh draws vary as Binomial(400, 0.8) / 400 does (sd 0.02)."""
    labels = np.zeros(400, int)
    predictions = np.r_[np.zeros(320, int), np.ones(80, int)]
    replicates = bootstrap(labels, predictions, n_boot=2000, chunk=100).reshape(20, 100)
    assert len({chunk.tobytes() for chunk in replicates}) == 20
    assert replicates.std() == pytest.approx(math.sqrt(0.8 * 0.2 / 400), rel=0.1)


@pytest.mark.parametrize("metric, alpha, percentiles", [("f1_macro", 0.05, [2.5, 97.5]),
                                                        ("accuracy", 0.05, [2.5, 97.5]),
                                                        ("f1_macro", 0.10, [5, 95])])
def test_interval_is_the_stated_percentiles_of_the_replicates(metric, alpha, percentiles):
    labels, predictions = three_class_runs()
    replicates = bootstrap(labels, predictions, metric, n_boot=2000, seed=3)
    ci = bootstrap_ci(labels, predictions, metric, n_boot=2000, seed=3, alpha=alpha)
    np.testing.assert_allclose([ci.low, ci.high], np.percentile(replicates, percentiles), rtol=0, atol=1e-12)


def test_95_percent_interval_of_a_known_binomial():
    """50 of 100 correct: resampled accuracy is Binomial(100, 1/2) / 100, whose 2.5% and 97.5% quantiles
    are 0.40 and 0.60 (a 90% interval would be 0.42-0.58, two points narrower)."""
    labels = np.zeros(100, int)
    predictions = np.r_[np.zeros(50, int), np.ones(50, int)]
    ci = bootstrap_ci(labels, predictions)
    assert ci.estimate == 0.5
    np.testing.assert_allclose([ci.low, ci.high], [0.40, 0.60], rtol=0, atol=0.01)


def test_bootstrap_of_several_runs_is_the_interval_of_their_mean():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    runs = np.array([np.where(rng.random(500) < q, labels, 1 - labels) for q in (0.7, 0.8, 0.9)])
    ci = bootstrap_ci(labels, runs)
    assert ci.estimate == pytest.approx(np.mean([(r == labels).mean() for r in runs]))
    assert bootstrap_ci(labels, np.array([runs[1], runs[1]])) == bootstrap_ci(labels, runs[1])


def test_mean_std_over_seeds():
    assert mean_std([0.8, 0.9]) == (pytest.approx(0.85), pytest.approx(math.sqrt(0.005)))
    assert mean_std([0.8]) == (0.8, None)
