"""Checkpoints inside a run: what the training loop needs to go on where a killed run stopped, so a run
longer than a working session still finishes, and finishes as it would have uninterrupted.

One file per run, `checkpoint.safetensors` in its run directory, replaced atomically (`sendit.io`), so
only the latest exists and a kill mid-save leaves the previous one whole. Its tensors (weights, best
weights so far, optimizer state, torch's random states, the epoch's batch order) are safetensors, the
rest (phase, step, epoch log, scheduler, numpy's random state) JSON in its metadata: nothing is
unpickled. It carries a fingerprint of its run's config and training data; a checkpoint of another
run, of another checkpoint version, or one that cannot be read is ignored with a warning, and the run
starts from its beginning. `sendit.train` decides what goes in; `sendit.run` deletes the file once
the run's metrics.json is written.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sendit.io import atomic_write

CHECKPOINT_FILE = "checkpoint.safetensors"
VERSION = "1"  # raise it when what a checkpoint holds changes: older ones are then ignored, not misread
log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    state: dict  # everything else, JSON


def fingerprint(config: dict, *arrays: np.ndarray) -> str:
    """A digest of what a checkpoint and the run resuming from it must share: the config and `arrays`."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class Checkpoints:
    """A run's checkpoint file, and when the next save is due."""

    def __init__(self, run_dir: Path, fingerprint: str, minutes: float):
        self.path, self.fingerprint, self.interval = Path(run_dir) / CHECKPOINT_FILE, fingerprint, 60 * minutes
        self.last = time.monotonic()

    def due(self) -> bool:
        """One clock read: the loop asks after every step."""
        return time.monotonic() - self.last >= self.interval

    def save(self, checkpoint: Checkpoint) -> None:
        from safetensors.torch import save_file

        metadata = {"version": VERSION, "fingerprint": self.fingerprint, "state": json.dumps(checkpoint.state)}
        tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in checkpoint.tensors.items()}
        atomic_write(self.path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        self.last = time.monotonic()

    def load(self) -> Checkpoint | None:
        """The run's checkpoint; None where there is none or it cannot be used (a warning says why)."""
        from safetensors import SafetensorError, safe_open

        for partial in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # a save the kill interrupted
            partial.unlink()
        if not self.path.is_file():
            return None
        try:
            with safe_open(str(self.path), "pt") as file:
                metadata = file.metadata() or {}
                if metadata.get("version") != VERSION:
                    return self._ignore(f"checkpoint version {metadata.get('version')}, this sendit reads {VERSION}")
                if metadata.get("fingerprint") != self.fingerprint:
                    return self._ignore("it belongs to another config or other training data")
                tensors = {name: file.get_tensor(name) for name in file.keys()}
            return Checkpoint(tensors, json.loads(metadata["state"]))
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            return self._ignore(f"it cannot be read ({err})")

    def _ignore(self, why: str) -> None:
        log.warning("%s: not resumed from, %s; the run starts from its beginning", self.path, why)


def discard(run_dir: Path) -> None:
    """Delete a finished run's checkpoint: its results are written."""
    (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state_dict split into its tensors (`optimizer.<param>.<key>`) and the JSON rest."""
    saved = optimizer.state_dict()
    tensors = {f"optimizer.{param}.{key}": value for param, state in saved["state"].items()
               for key, value in state.items() if torch.is_tensor(value)}
    rest = {str(param): {key: value for key, value in state.items() if not torch.is_tensor(value)}
            for param, state in saved["state"].items()}
    return tensors, {"param_groups": saved["param_groups"], "state": rest}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], saved: dict) -> None:
    """The inverse of `optimizer_state`."""
    state = {int(param): dict(rest) for param, rest in saved["state"].items()}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, param, key = name.split(".", 2)
            state[int(param)][key] = value
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def random_states() -> dict[str, torch.Tensor]:
    """torch's random states, which dropout draws from: the CPU's and every GPU's (once CUDA is in use)."""
    states = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        states |= {f"rng.cuda.{device}": state for device, state in enumerate(torch.cuda.get_rng_state_all())}
    return states


def set_random_states(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[f"rng.cuda.{device}"] for device in range(torch.cuda.device_count())
            if f"rng.cuda.{device}" in tensors]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
