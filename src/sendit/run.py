"""One run, top to bottom: model -> method -> train -> save -> test the run as saved, loaded back the one
way every saved run is (`sendit.artifacts` holds the saved-run format and loads runs back).

A run knows no distillation: it trains with the loss its caller hands it (`sendit.distill.loss_for`).
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from sendit.artifacts import (ADAPTER_FILE, EPOCH_LOG_COLUMNS, Predictor, batching_for, build_model,
                              prediction_frame, save_trained, write_metrics)
from sendit.batching import Encoded
from sendit.checkpoint import Checkpoints, discard, fingerprint
from sendit.config import DataConfig, RunConfig, save_yaml, to_dict
from sendit.data.inputs import encode_inputs
from sendit.evaluate import classification_metrics, predict_logits
from sendit.host import keep_freed_memory
from sendit.io import atomic_write_csv
from sendit.hardware import inference_precision, representative_batch, resolve_device, training_precision
from sendit.measure import file_mb, memory_kind, memory_mb, peak_memory_mb, peak_reserved_mb, reset_peak_memory
from sendit.models import count_parameters
from sendit.provenance import provenance
from sendit.results import EXTRA_PREDICTIONS_FILE
from sendit.train import VALIDATION_COLUMNS, Batching, LossHook, ProgressHook, Trainer, ValidationHook, epoch_log_scores


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encode_splits(tokenizer, splits, data: DataConfig, max_length: int) -> dict[str, Encoded]:
    frames = {"train": splits.train, "val": splits.val, "test": splits.test, **splits.extra}
    if len(splits.transfer):
        frames["transfer"] = splits.transfer
    return {name: encode_inputs(tokenizer, frame["text"].tolist(), frame["label"].to_numpy(), data, max_length)
            for name, frame in frames.items()}


def execute(cfg: RunConfig, run_dir: Path, splits, encoded: dict[str, Encoded] | None = None,
            progress: ProgressHook | None = None, make_loss: Callable[[], LossHook] | None = None,
            on_validation: ValidationHook | None = None) -> dict:
    """Train and evaluate one run; write its artifacts; return its results row.

    `make_loss` builds the training loss (default: the model's cross-entropy); it is called once the
    model is built, where loading a distillation teacher has always taken its place in the random
    number sequence, so the same seed trains the same run.
    """
    if cfg.distill is not None and make_loss is None:
        raise ValueError("a run with `distill` needs its loss: pass make_loss=sendit.distill.loss_for(cfg, splits)")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.reuse_freed_memory:
        keep_freed_memory()
    seed_everything(cfg.train.seed)
    cfg = replace(cfg, data=replace(cfg.data, label_names=list(splits.label_names)))
    model, tokenizer, method = build_model(cfg, cfg.data.label_names)
    if encoded is None:
        encoded = encode_splits(tokenizer, splits, cfg.data, cfg.model.max_length)
    trainable, total = count_parameters(model)
    batching = batching_for(tokenizer, model)
    device = resolve_device(cfg.train.device)
    train_batch = representative_batch(encoded["train"], cfg.train.batch_size, **vars(batching))
    train_choice = training_precision(cfg.train.precision, device, model, train_batch)
    infer_choice = inference_precision(cfg.train.eval_precision, device, model,
                                       representative_batch(encoded["test"], cfg.train.eval_batch_size,
                                                            **vars(batching)))
    precision = infer_choice.precision

    loss = make_loss() if make_loss else None

    peak_reset = reset_peak_memory(device)
    memory_before = memory_mb(device)
    trainer = Trainer(model, method, cfg.train, batching, cfg.data.label_names, train_choice.precision, progress,
                      loss, device=device, eval_precision=precision, selection_metric=cfg.selection.metric,
                      on_validation=on_validation, checkpoints=checkpoints_for(cfg, run_dir, encoded["train"]))
    fit = trainer.fit(encoded["train"], encoded["val"])
    peak, peak_reserved = peak_memory_mb(device), peak_reserved_mb(device)
    if not trainer.accelerator.is_main_process:
        return {}

    best = fit.best or _final_validation(model, encoded["val"], cfg, precision, batching)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, run_dir / "config.yaml")
    save_trained(model, trainer.saved_names, run_dir / ADAPTER_FILE)
    # Tested as saved, loaded back as `eval`, `predict` and `serve` load it: a base that trained in bf16
    # (train.bf16_frozen_weights) is float32 again and the adapter folds into it (for_inference).
    del model, trainer
    model = Predictor.from_run(run_dir, device).model
    logits, infer_seconds = predict_logits(model, encoded["test"], cfg.train.eval_batch_size, precision,
                                           **vars(batching))
    labels = encoded["test"].labels
    test = classification_metrics(labels, logits.argmax(-1), cfg.data.label_names)

    atomic_write_csv(run_dir / "epoch_log.csv", pd.DataFrame(fit.epoch_log, columns=EPOCH_LOG_COLUMNS))
    atomic_write_csv(run_dir / "predictions.csv", prediction_frame(splits.test["text"], labels, logits,
                                                                    cfg.data.label_names))
    extra = _score_extra_sets(model, splits, encoded, cfg, precision, batching, run_dir)
    f1_per_m = test["f1_macro"] / (trainable / 1e6) if trainable and method.trains else None
    row = {
        "method": cfg.method.label or cfg.method.name, "base_method": cfg.method.name,
        "lr": method.lr, "batch_size": cfg.train.batch_size, "epochs": cfg.train.epochs, "seed": cfg.train.seed,
        "best_val_f1": best["val_f1"], "val_accuracy": best["val_accuracy"], "selection_metric": cfg.selection.metric,
        "best_val_score": best[VALIDATION_COLUMNS[cfg.selection.metric]], "best_epoch": best["epoch"],
        "test_accuracy": test["accuracy"], "test_f1_macro": test["f1_macro"],
        "test_f1_weighted": test["f1_weighted"], "test_recall_macro": test["recall_macro"],
        "runtime_sec": fit.train_seconds, "train_examples": fit.train_examples,
        "train_examples_per_s": fit.train_examples / fit.train_seconds if fit.train_examples else None,
        "peak_memory_mb": peak, "memory_delta_mb": peak - memory_before, "peak_is_per_run": peak_reset,
        "memory_kind": memory_kind(device), "peak_reserved_mb": peak_reserved,
        "trainable_params": trainable if method.trains else 0, "total_params": total,
        "trainable_share": trainable / total if method.trains else 0.0,
        "f1_per_m_params": f1_per_m, "inference_time_sec": infer_seconds,
        "inference_examples_per_s": len(labels) / infer_seconds, "adapter_mb": file_mb(run_dir / ADAPTER_FILE),
        "transfer": cfg.transfer, "stopped_early": fit.stopped_early, "pruned": fit.pruned, "device": device,
        "precision": train_choice.precision, "inference_precision": precision, "bf16": train_choice.precision == "bf16", "test_examples": len(labels),
        **per_class_columns(test, cfg.data.label_names), **extra,
    }
    hardware = {"device": device, "train": asdict(train_choice), "inference": asdict(infer_choice)}
    metrics = {"row": row, "test": test, "label_names": cfg.data.label_names, "data_stats": splits.stats,
               "hardware": hardware, "provenance": provenance()}
    write_metrics(run_dir, metrics)
    discard(run_dir)
    return row


def checkpoints_for(cfg: RunConfig, run_dir: Path, train: Encoded) -> Checkpoints | None:
    """The run's checkpoints, fingerprinted with its config (but how often it saves) and its training
    examples' lengths and labels (a cheap stand-in for the examples): a run resumes only its own."""
    if cfg.train.checkpoint_minutes is None:
        return None
    config = to_dict(replace(cfg, train=replace(cfg.train, checkpoint_minutes=None)))
    return Checkpoints(run_dir, fingerprint(config, train.lengths, train.labels), cfg.train.checkpoint_minutes)


def _final_validation(model, val: Encoded, cfg: RunConfig, precision: str, batching: Batching) -> dict:
    """The validation scores of a model that never validated while training (nothing trains, or no val split)."""
    if len(val) == 0:
        return {**dict.fromkeys(VALIDATION_COLUMNS.values(), float("nan")), "epoch": cfg.train.epochs}
    logits, _ = predict_logits(model, val, cfg.train.eval_batch_size, precision, **vars(batching))
    return {**epoch_log_scores(classification_metrics(val.labels, logits.argmax(-1), cfg.data.label_names)),
            "epoch": 0}


def per_class_columns(test: dict, label_names: list[str]) -> dict:
    """precision/recall/f1/support per class and the confusion matrix, as flat results columns."""
    columns = {f"{stat}_{name}": test["per_class"][name][key] for name in label_names
               for stat, key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"),
                                 ("support", "support"))}
    columns["confusion_matrix"] = json.dumps(test["confusion_matrix"])
    return columns


def _score_extra_sets(model, splits, encoded: dict[str, Encoded], cfg: RunConfig, precision: str, batching,
                      run_dir: Path) -> dict:
    """Predict the source's extra evaluation sets (SemEval's sarcasm tweets, encoded with the other
    splits) into one file, for the report's error analysis; return their accuracy and size as results
    columns."""
    frames, columns = [], {}
    for name, frame in splits.extra.items():
        labels = encoded[name].labels
        logits, _ = predict_logits(model, encoded[name], cfg.train.eval_batch_size, precision, **vars(batching))
        frames.append(prediction_frame(frame["text"], labels, logits, cfg.data.label_names).assign(subset=name))
        columns |= {f"{name}_accuracy": float((logits.argmax(-1) == labels).mean()), f"{name}_examples": len(frame)}
    if frames:
        atomic_write_csv(run_dir / EXTRA_PREDICTIONS_FILE, pd.concat(frames, ignore_index=True))
    return columns


