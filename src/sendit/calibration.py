"""Class probabilities and their calibration: softmax with a temperature, its fit, and the calibration error.

Torch-free (numpy; scipy only to fit), so a process serving an export computes probabilities
without importing torch. Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural
Networks") divides every logit by one T > 0 fitted on validation data: predictions stay the same,
confidences stop over- or under-claiming, which an abstain threshold relies on.
"""
from __future__ import annotations

import numpy as np

ECE_BINS = 15  # equal-width confidence bins, as Guo et al.


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    shifted = np.exp((logits - logits.max(axis=1, keepdims=True)) / temperature)
    return shifted / shifted.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels."""
    scaled = logits / temperature
    top = scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scaled - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_norm - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising validation NLL; a 1-D bounded search over log T (NLL is smooth in it)."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))), bounds=(np.log(0.05), np.log(20)),
                            method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over confidence bins of |accuracy - mean confidence|, weighted by the bin's share of examples."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    error = 0.0
    for b in np.unique(which):
        inside = which == b
        error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)
