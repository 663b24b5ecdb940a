"""One run, top to bottom: model -> method -> train -> evaluate -> artifacts; and loading it back.

A run directory holds `config.yaml` (the RunConfig, label names filled in), `adapter.safetensors`
(exactly the parameters the method trains, head included), `epoch_log.csv`, `predictions.csv`
(test set) and `metrics.json`. `metrics.json` is written last and atomically: a run directory
without it is unfinished and is redone by a resumed study.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sendit.batching import Encoded
from sendit.config import DataConfig, RunConfig, load_run, save_yaml
from sendit.data.inputs import encode_inputs
from sendit.evaluate import classification_metrics, predict_logits, softmax
from sendit.host import keep_freed_memory
from sendit.io import atomic_write, atomic_write_csv, atomic_write_text
from sendit.measure import Timer, bf16_supported, file_mb, peak_memory_mb, reset_peak_memory, rss_mb
from sendit.methods import get_method
from sendit.models import count_parameters, load_model
from sendit.provenance import provenance
from sendit.train import Batching, ProgressHook, Trainer

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter.safetensors"
METRICS_FILE = "metrics.json"
EXTRA_PREDICTIONS_FILE = "extra_predictions.csv"  # the source's extra evaluation sets, column `subset`


class RunError(ValueError):
    """A run directory that is missing files or whose files fail validation."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def use_bf16(cfg: RunConfig) -> bool:
    return bf16_supported() if cfg.train.bf16 is None else cfg.train.bf16


def batching_for(tokenizer, model) -> Batching:
    return Batching(pad_id=tokenizer.pad_token_id, left_pad=tokenizer.padding_side == "left")


def encode_splits(tokenizer, splits, data: DataConfig, max_length: int) -> dict[str, Encoded]:
    frames = {"train": splits.train, "val": splits.val, "test": splits.test, **splits.extra}
    return {name: encode_inputs(tokenizer, frame["text"].tolist(), frame["label"].to_numpy(), data, max_length)
            for name, frame in frames.items()}


def build_model(cfg: RunConfig, label_names: list[str]):
    """The base model with the method applied: the structure every saved run is loaded into."""
    model, tokenizer = load_model(cfg.model.name, len(label_names), label_names, seed=cfg.train.seed,
                                  max_positions=max(512, cfg.model.max_length), attention=cfg.model.attention,
                                  attention_dropout=cfg.model.attention_dropout)
    if cfg.model.padding_side:
        tokenizer.padding_side = cfg.model.padding_side
    method = get_method(cfg.method)
    return method.apply(model), tokenizer, method


def execute(cfg: RunConfig, run_dir: Path, splits, encoded: dict[str, Encoded] | None = None,
            progress: ProgressHook | None = None) -> dict:
    """Train and evaluate one run; write its artifacts; return its results row."""
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
    bf16 = use_bf16(cfg)
    batching = batching_for(tokenizer, model)

    loss = None
    if cfg.distill is not None:
        from sendit.distill import distillation_loss, teacher_logits

        soft_targets, _ = teacher_logits(cfg.distill, splits.train["text"].tolist(), cfg.train.eval_batch_size)
        loss = distillation_loss(cfg.distill, soft_targets)

    rss_before = rss_mb()
    peak_reset = reset_peak_memory()
    trainer = Trainer(model, method, cfg.train, batching, cfg.data.label_names, bf16, progress, loss)
    fit = trainer.fit(encoded["train"], encoded["val"])
    peak = peak_memory_mb()
    if not trainer.accelerator.is_main_process:
        return {}

    best = fit.best or _final_validation(model, encoded["val"], cfg, bf16, batching)
    logits, infer_seconds = predict_logits(model, encoded["test"], cfg.train.eval_batch_size, bf16,
                                           **vars(batching))
    labels = encoded["test"].labels
    test = classification_metrics(labels, logits.argmax(-1), cfg.data.label_names)

    run_dir.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, run_dir / "config.yaml")
    save_trained(model, trainer.saved_names, run_dir / ADAPTER_FILE)
    atomic_write_csv(run_dir / "epoch_log.csv", pd.DataFrame(fit.epoch_log, columns=EPOCH_LOG_COLUMNS))
    atomic_write_csv(run_dir / "predictions.csv", prediction_frame(splits.test["text"], labels, logits,
                                                                    cfg.data.label_names))
    extra = _score_extra_sets(model, splits, encoded, cfg, bf16, batching, run_dir)
    f1_per_m = test["f1_macro"] / (trainable / 1e6) if trainable and method.trains else None
    row = {
        "method": cfg.method.label or cfg.method.name, "base_method": cfg.method.name,
        "lr": method.lr, "batch_size": cfg.train.batch_size, "epochs": cfg.train.epochs, "seed": cfg.train.seed,
        "best_val_f1": best["val_f1"], "val_accuracy": best["val_accuracy"], "best_epoch": best["epoch"],
        "test_accuracy": test["accuracy"], "test_f1_macro": test["f1_macro"],
        "test_f1_weighted": test["f1_weighted"], "test_recall_macro": test["recall_macro"],
        "runtime_sec": fit.train_seconds, "train_examples": fit.train_examples,
        "train_examples_per_s": fit.train_examples / fit.train_seconds if fit.train_examples else None,
        "peak_memory_mb": peak, "memory_delta_mb": peak - rss_before, "peak_is_per_run": peak_reset,
        "trainable_params": trainable if method.trains else 0, "total_params": total,
        "trainable_share": trainable / total if method.trains else 0.0,
        "f1_per_m_params": f1_per_m, "inference_time_sec": infer_seconds,
        "inference_examples_per_s": len(labels) / infer_seconds, "adapter_mb": file_mb(run_dir / ADAPTER_FILE),
        "stopped_early": fit.stopped_early, "bf16": bf16, "test_examples": len(labels),
        **per_class_columns(test, cfg.data.label_names), **extra,
    }
    metrics = {"row": row, "test": test, "label_names": cfg.data.label_names, "data_stats": splits.stats,
               "provenance": provenance()}
    atomic_write_text(run_dir / METRICS_FILE, json.dumps(metrics, indent=1, default=_json_default))
    return row


EPOCH_LOG_COLUMNS = ["epoch", "phase", "step", "train_loss", "val_loss", "val_accuracy", "val_f1"]


def _final_validation(model, val: Encoded, cfg: RunConfig, bf16: bool, batching: Batching) -> dict:
    if len(val) == 0:
        return {"val_f1": float("nan"), "val_accuracy": float("nan"), "epoch": cfg.train.epochs}
    logits, _ = predict_logits(model, val, cfg.train.eval_batch_size, bf16, **vars(batching))
    metrics = classification_metrics(val.labels, logits.argmax(-1), cfg.data.label_names)
    return {"val_f1": metrics["f1_macro"], "val_accuracy": metrics["accuracy"], "epoch": 0}


def per_class_columns(test: dict, label_names: list[str]) -> dict:
    """precision/recall/f1/support per class and the confusion matrix, as flat results columns."""
    columns = {f"{stat}_{name}": test["per_class"][name][key] for name in label_names
               for stat, key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"),
                                 ("support", "support"))}
    columns["confusion_matrix"] = json.dumps(test["confusion_matrix"])
    return columns


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _score_extra_sets(model, splits, encoded: dict[str, Encoded], cfg: RunConfig, bf16: bool, batching,
                      run_dir: Path) -> dict:
    """Predict the source's extra evaluation sets (SemEval's sarcasm tweets, encoded with the other
    splits) into one file, for the report's error analysis; return their accuracy and size as results
    columns."""
    frames, columns = [], {}
    for name, frame in splits.extra.items():
        labels = encoded[name].labels
        logits, _ = predict_logits(model, encoded[name], cfg.train.eval_batch_size, bf16, **vars(batching))
        frames.append(prediction_frame(frame["text"], labels, logits, cfg.data.label_names).assign(subset=name))
        columns |= {f"{name}_accuracy": float((logits.argmax(-1) == labels).mean()), f"{name}_examples": len(frame)}
    if frames:
        atomic_write_csv(run_dir / EXTRA_PREDICTIONS_FILE, pd.concat(frames, ignore_index=True))
    return columns


def prediction_frame(texts, labels: np.ndarray, logits: np.ndarray, label_names: list[str]) -> pd.DataFrame:
    probs = softmax(logits)
    frame = pd.DataFrame({"text": list(texts), "label": labels, "pred": logits.argmax(-1)})
    frame["label_name"] = [label_names[i] for i in frame["label"]]
    frame["pred_name"] = [label_names[i] for i in frame["pred"]]
    for i, name in enumerate(label_names):
        frame[f"prob_{name}"] = probs[:, i]
    return frame


def save_trained(model, names: list[str], path: Path) -> None:
    """Save exactly the parameters the method trains (safetensors: no pickle on load)."""
    from safetensors.torch import save_file

    params = dict(model.named_parameters())
    tensors = {name: params[name].detach().contiguous().cpu() for name in names}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))


def load(run_dir: str | Path):
    """Rebuild a saved run: (model in eval mode, tokenizer, RunConfig). Validates every file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    for name in ("config.yaml", ADAPTER_FILE):
        if not (run_dir / name).is_file():
            raise RunError(f"{run_dir}: not a sendit run (missing {name})")
    cfg = load_run(run_dir / "config.yaml")
    if not cfg.data.label_names:
        raise RunError(f"{run_dir / 'config.yaml'}: data.label_names is missing")
    model, tokenizer, _ = build_model(cfg, cfg.data.label_names)
    try:
        saved = load_file(str(run_dir / ADAPTER_FILE))
    except (SafetensorError, OSError) as err:
        raise RunError(f"{run_dir / ADAPTER_FILE}: not a valid safetensors file ({err})") from None
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(saved) != expected:
        missing, extra = sorted(expected - set(saved))[:3], sorted(set(saved) - expected)[:3]
        raise RunError(f"{run_dir / ADAPTER_FILE}: parameters do not match method '{cfg.method.name}' "
                       f"on {cfg.model.name} (missing {missing}, unexpected {extra})")
    with torch.no_grad():
        for name, tensor in saved.items():
            if params[name].shape != tensor.shape:
                raise RunError(f"{run_dir / ADAPTER_FILE}: {name} has shape {tuple(tensor.shape)}, "
                               f"the model expects {tuple(params[name].shape)}")
            params[name].copy_(tensor)
    return model.eval(), tokenizer, cfg
