"""The metrics every run reports, on imbalanced 3-class labels with a class never predicted: worked
out by hand and checked against scikit-learn."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from sendit.evaluate import classification_metrics

NAMES = ["negative", "neutral", "positive"]
# 6 negative, 3 neutral, 1 positive; "positive" is never predicted.
LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
PREDICTIONS = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0, 0])
# Rows: true class, columns: predicted class.
CONFUSION = [[5, 1, 0], [1, 2, 0], [1, 0, 0]]
# Per class (precision, recall, F1, support): negative tp 5 fp 2 fn 1; neutral tp 2 fp 1 fn 1; positive tp 0.
PER_CLASS = {"negative": (5 / 7, 5 / 6, 10 / 13, 6), "neutral": (2 / 3, 2 / 3, 2 / 3, 3), "positive": (0, 0, 0, 1)}


@pytest.fixture(scope="module")
def metrics():
    return classification_metrics(LABELS, PREDICTIONS, NAMES)


def test_summary_metrics_by_hand(metrics):
    """Macro-F1 weighs the never-predicted minority class like the others: 0.48, far below accuracy
    (0.7, which is also micro-F1) and weighted F1 (0.66)."""
    assert metrics["accuracy"] == pytest.approx(0.7)
    assert metrics["f1_macro"] == pytest.approx((10 / 13 + 2 / 3 + 0) / 3)
    assert metrics["f1_weighted"] == pytest.approx((6 * 10 / 13 + 3 * 2 / 3 + 1 * 0) / 10)
    assert metrics["recall_macro"] == pytest.approx((5 / 6 + 2 / 3 + 0) / 3)
    assert metrics["confusion_matrix"] == CONFUSION


def test_per_class_report_by_hand(metrics):
    for name, (precision, recall, f1, support) in PER_CLASS.items():
        row = metrics["per_class"][name]
        assert (row["precision"], row["recall"], row["f1-score"], row["support"]) == pytest.approx(
            (precision, recall, f1, support)), name


def test_metrics_agree_with_scikit_learn(metrics):
    precision, recall, f1, support = precision_recall_fscore_support(LABELS, PREDICTIONS, zero_division=0)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(LABELS, PREDICTIONS))
    assert metrics["f1_macro"] == pytest.approx(f1_score(LABELS, PREDICTIONS, average="macro", zero_division=0))
    assert metrics["f1_weighted"] == pytest.approx(f1_score(LABELS, PREDICTIONS, average="weighted",
                                                            zero_division=0))
    assert metrics["confusion_matrix"] == confusion_matrix(LABELS, PREDICTIONS).tolist()
    for index, name in enumerate(NAMES):
        row = metrics["per_class"][name]
        assert (row["precision"], row["recall"], row["f1-score"], row["support"]) == pytest.approx(
            (precision[index], recall[index], f1[index], support[index])), name


def test_a_class_absent_from_labels_and_predictions_still_counts():
    """A 4-label dataset whose test set holds 3 classes: the 4th is a row of zeros and scores F1 0."""
    metrics = classification_metrics(LABELS, PREDICTIONS, [*NAMES, "mixed"])
    assert metrics["confusion_matrix"] == [row + [0] for row in CONFUSION] + [[0, 0, 0, 0]]
    assert metrics["f1_macro"] == pytest.approx((10 / 13 + 2 / 3 + 0 + 0) / 4)
    assert metrics["per_class"]["mixed"]["support"] == 0
