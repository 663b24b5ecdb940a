"""The saved-run format: what a run directory holds, how it is written and how it is loaded back.

A run directory holds `config.yaml` (the RunConfig, label names filled in), `adapter.safetensors`
(exactly the parameters the method trains, head included), `epoch_log.csv`, `predictions.csv`
(test set) and `metrics.json`. `metrics.json` is written last and atomically: a run directory
without it is unfinished; a resumed study (or `sendit train` again) goes on from its
`checkpoint.safetensors` (`sendit.checkpoint`, deleted once metrics.json is written) or, without one,
redoes it. It carries `format_version`; runs
written before the format had a version have none and are read as version 1 (the same files).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sendit.batching import Encoded
from sendit.calibration import softmax
from sendit.config import DataConfig, RunConfig, load_run
from sendit.data.clean import clean_like_training
from sendit.data.inputs import encode_inputs
from sendit.errors import InputError
from sendit.evaluate import predict_logits
from sendit.io import atomic_write, atomic_write_json
from sendit.hardware import Decision, inference_precision, representative_batch
from sendit.methods import get_method
from sendit.models import load_model
from sendit.results import METRICS_FILE
from sendit.train import VALIDATION_COLUMNS, Batching

FORMAT_VERSION = 1  # raise it when a file changes in a way an older sendit cannot read
ADAPTER_FILE = "adapter.safetensors"


class RunError(InputError):
    """A run directory that is missing files or whose files fail validation."""


EPOCH_LOG_COLUMNS = ["epoch", "phase", "step", "train_loss", "val_loss", *VALIDATION_COLUMNS.values()]


def build_model(cfg: RunConfig, label_names: list[str]):
    """The base model with the method applied: the structure every saved run is loaded into."""
    model, tokenizer = load_model(cfg.model.name, len(label_names), label_names, seed=cfg.train.seed,
                                  max_positions=max(512, cfg.model.max_length), attention=cfg.model.attention,
                                  attention_dropout=cfg.model.attention_dropout)
    if cfg.model.padding_side:
        tokenizer.padding_side = cfg.model.padding_side
    method = get_method(cfg.method)
    return method.apply(model), tokenizer, method


def eval_precision(cfg: RunConfig, model, encoded: Encoded, batching: Batching) -> Decision:
    """The inference precision for a (loaded) run's model on this machine, timed on `encoded` where
    `train.eval_precision` is auto (see sendit.hardware)."""
    device = next(model.parameters()).device.type
    batch = representative_batch(encoded, cfg.train.eval_batch_size, **vars(batching))
    return inference_precision(cfg.train.eval_precision, device, model, batch)


def batching_for(tokenizer, model) -> Batching:
    return Batching(pad_id=tokenizer.pad_token_id, left_pad=tokenizer.padding_side == "left")


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


def load(run_dir: str | Path, device: str = "cpu"):
    """Rebuild a saved run: (model in eval mode on `device`, a resolved torch device name (see
    hardware.resolve_device), tokenizer, RunConfig). Validates every file."""
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
    return model.to(device).eval(), tokenizer, cfg


@dataclass
class Predictor:
    """A saved run ready to label texts: encoded, batched by length and run in the precision of its
    evaluation, the one way `sendit eval`, `sendit predict`, serving and distillation use a run."""

    model: object
    tokenizer: object
    cfg: RunConfig

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu", as_trained: bool = False) -> "Predictor":
        """The run's model in the form inference runs it (its method's `for_inference`: adapters folded
        where that computes the same function), or `as_trained`: exactly the saved structure."""
        model, tokenizer, cfg = load(run_dir, device)
        return cls(model if as_trained else get_method(cfg.method).for_inference(model), tokenizer, cfg)

    @property
    def label_names(self) -> list[str]:
        return self.cfg.data.label_names

    def clean(self, texts: list[str]) -> list[str]:
        """New texts cleaned exactly as the run's training data was."""
        given = pd.Series(texts, dtype="string").fillna("")
        # Stripped as every reader strips its texts (denoised ones already are).
        return clean_like_training(given, self.cfg.data).str.strip().tolist()

    def encode(self, texts: list[str], labels: np.ndarray | None = None, data: DataConfig | None = None) -> Encoded:
        """Token ids as the run's training made them (`data`: another dataset's config); labels default to 0."""
        labels = np.zeros(len(texts), dtype=np.int64) if labels is None else labels
        return encode_inputs(self.tokenizer, texts, labels, data or self.cfg.data, self.cfg.model.max_length)

    def logits(self, encoded: Encoded, batch_size: int | None = None, precision: str | None = None,
               on_batch=None) -> tuple[np.ndarray, float]:
        """(logits, seconds the forward passes took); batch size and precision default to the run's
        evaluation's (`train.eval_precision`; auto: the faster on this machine, measured once)."""
        batching = batching_for(self.tokenizer, self.model)
        precision = precision or eval_precision(self.cfg, self.model, encoded, batching).precision
        return predict_logits(self.model, encoded, self.cfg.train.eval_batch_size if batch_size is None else batch_size,
                              precision, **vars(batching), on_batch=on_batch)

    def predict(self, texts: list[str], batch_size: int | None = None, precision: str | None = None,
                on_batch=None) -> np.ndarray:
        """Logits of new texts, one row per text: cleaned, tokenised and batched as in evaluation."""
        return self.logits(self.encode(self.clean(texts)), batch_size, precision, on_batch)[0]
