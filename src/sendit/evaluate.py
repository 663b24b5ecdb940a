"""Predictions and metrics: accuracy, macro/weighted F1, macro recall, per-class report, confusion."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from sendit.batching import Encoded, collate, sorted_batches
from sendit.first_token import first_token_only
from sendit.hardware import DTYPES, autocast
from sendit.measure import Timer


@contextlib.contextmanager
def reduced_precision(model, precision: str, cast_weights: bool):
    """Inference in `precision` ("fp32": as is; "bf16", "fp16"): autocast on the model's device, or
    (`cast_weights`) the float32 parameters replaced by bf16/fp16 copies for the duration and restored after.

    Under autocast every linear layer casts its weight again in every forward pass; casting once per
    call makes a test set ~7% faster on minilm. The cast itself (~10 ms) would cost a lone small
    batch more than it saves, and quantized models keep autocast: their packed weights are not floats.
    """
    params = list(model.parameters())
    if not (precision != "fp32" and cast_weights and all(p.is_floating_point() for p in params)):
        with autocast(params[0].device.type, precision):
            yield
        return
    originals = [(p, p.data) for p in params if p.dtype == torch.float32]
    with torch.no_grad():
        for param, data in originals:
            param.data = data.to(DTYPES[precision])
    try:
        yield
    finally:
        for param, data in originals:
            param.data = data


def predict_logits(model, encoded: Encoded, batch_size: int, precision: str, pad_id: int,
                   left_pad: bool = False, on_batch=None) -> tuple[np.ndarray, float]:
    """Logits for every example in its original order, and the seconds the forward passes took,
    on the model's device in `precision` (fp32 | bf16 | fp16).

    Batches are formed in length order so padding nearly vanishes, and an encoder's last block
    computes only the token its head reads (first_token.py).
    """
    model.eval()
    device = next(model.parameters()).device
    batches = sorted_batches(encoded.lengths, batch_size)
    logits = None
    with Timer() as timer, reduced_precision(model, precision, len(batches) > 1), \
            first_token_only(model), torch.inference_mode():
        for index in batches:
            batch = {k: v.to(device) for k, v in collate(encoded, index, pad_id, left_pad).items() if k != "labels"}
            out = model(**batch).logits.float().cpu().numpy()
            if logits is None:
                logits = np.empty((len(encoded), out.shape[1]), dtype=np.float32)
            logits[index] = out
            if on_batch:
                on_batch(len(index))
    return logits, timer.seconds


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, label_names: list[str]) -> dict:
    """The metrics every run reports; per-class and confusion matrix use all classes, seen or not."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, recall_score

    classes = list(range(len(label_names)))
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1_macro": float(f1_score(labels, predictions, average="macro", labels=classes, zero_division=0)),
        "f1_weighted": float(f1_score(labels, predictions, average="weighted", labels=classes, zero_division=0)),
        "recall_macro": float(recall_score(labels, predictions, average="macro", labels=classes, zero_division=0)),
        "per_class": classification_report(labels, predictions, labels=classes, target_names=label_names,
                                           output_dict=True, zero_division=0),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=classes).tolist(),
    }
