"""The saved-run format: what a run directory holds, how it is written and how it is loaded back.

A run directory holds `config.yaml` (the RunConfig, label names filled in), `adapter.safetensors`
(exactly the parameters the method trains, head included), `epoch_log.csv`, `predictions.csv`
(test set) and `metrics.json`. `metrics.json` is written last and atomically: a run directory
without it is unfinished and is redone by a resumed study. It carries `format_version`; runs
written before the format had a version have none and are read as version 1 (the same files).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sendit.config import RunConfig, load_run
from sendit.evaluate import softmax
from sendit.io import atomic_write, atomic_write_json
from sendit.methods import get_method
from sendit.models import load_model

FORMAT_VERSION = 1  # raise it when a file changes in a way an older sendit cannot read
ADAPTER_FILE = "adapter.safetensors"
METRICS_FILE = "metrics.json"
EXTRA_PREDICTIONS_FILE = "extra_predictions.csv"  # the source's extra evaluation sets, column `subset`


class RunError(ValueError):
    """A run directory that is missing files or whose files fail validation."""


EPOCH_LOG_COLUMNS = ["epoch", "phase", "step", "train_loss", "val_loss", "val_accuracy", "val_f1"]


def build_model(cfg: RunConfig, label_names: list[str]):
    """The base model with the method applied: the structure every saved run is loaded into."""
    model, tokenizer = load_model(cfg.model.name, len(label_names), label_names, seed=cfg.train.seed,
                                  max_positions=max(512, cfg.model.max_length), attention=cfg.model.attention,
                                  attention_dropout=cfg.model.attention_dropout)
    if cfg.model.padding_side:
        tokenizer.padding_side = cfg.model.padding_side
    method = get_method(cfg.method)
    return method.apply(model), tokenizer, method


def write_metrics(run_dir: Path, metrics: dict) -> None:
    """Write metrics.json, the file that marks a run finished, with the format version."""
    atomic_write_json(run_dir / METRICS_FILE, {**metrics, "format_version": FORMAT_VERSION})


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


def check_version(run_dir: Path) -> None:
    """Refuse a run saved in a newer format than this sendit reads (a run without metrics.json, or
    written before versioning, is version 1)."""
    path = run_dir / METRICS_FILE
    try:
        version = json.loads(path.read_text()).get("format_version", 1) if path.is_file() else 1
    except ValueError as err:
        raise RunError(f"{path}: not valid JSON ({err})") from None
    if version > FORMAT_VERSION:
        raise RunError(f"{path}: saved-run format {version}, newer than the {FORMAT_VERSION} this sendit "
                       f"reads; upgrade sendit")


def load(run_dir: str | Path):
    """Rebuild a saved run: (model in eval mode, tokenizer, RunConfig). Validates every file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    for name in ("config.yaml", ADAPTER_FILE):
        if not (run_dir / name).is_file():
            raise RunError(f"{run_dir}: not a sendit run (missing {name})")
    check_version(run_dir)
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
