"""The training loop: a method's phases, validation, best checkpoint by the selection metric, early stopping.

Built on accelerate's `Accelerator`, so the same loop runs on one CPU, a GPU, or several processes
under `torchrun` / `accelerate launch` (each rank takes every world_size-th batch; gradients are
averaged by DDP). One loop (`Trainer._train_phase`) trains every phase; what differs between the two
kinds of phase (see `sendit.methods.base`), where the batches come from and what one step does, is a
small object per kind: `EndToEnd` sends token batches through the whole model; `HeadFeatures` trains
the head alone on pooled features computed once.

With `Checkpoints` (sendit.checkpoint) the loop saves, when one is due, all it needs to go on: a run
killed and started again loads the latest and ends as it would have uninterrupted.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from sendit.batching import Encoded, collate, length_bucketed_batches, random_batches, sorted_batches
from sendit.checkpoint import (Checkpoint, Checkpoints, load_optimizer_state, optimizer_state, random_states,
                               set_random_states)
from sendit.config import TrainConfig
from sendit.dropout import use_fast_dropout
from sendit.evaluate import classification_metrics, predict_logits, reduced_precision
from sendit.first_token import first_token_only
from sendit.hardware import autocast
from sendit.methods.base import Method, Phase
from sendit.models import PooledHead

ProgressHook = Callable[[int], None]  # called with the number of examples just processed
# Called with each validation's number in the run (1, 2, ...; a resumed run goes on counting) and its
# epoch-log row; True stops training there (a search's pruner).
ValidationHook = Callable[[int, dict], bool]
# (model outputs, batch, example indices) -> loss; the default is the model's own cross-entropy.
LossHook = Callable[[object, dict, np.ndarray], torch.Tensor]
log = logging.getLogger(__name__)


@dataclass
class FitResult:
    epoch_log: list[dict] = field(default_factory=list)  # one row per validation
    best: dict = field(default_factory=dict)  # the epoch-log row of the kept checkpoint
    train_seconds: float = 0.0
    train_examples: int = 0
    stopped_early: bool = False
    pruned: bool = False  # a search's pruner stopped the run at a validation (see sendit.pruning)


@dataclass
class Position:
    """Where a phase is: what a checkpoint records of it, and where a resumed phase goes on from."""

    order: list[np.ndarray]  # this epoch's batches, every rank's
    steps_per_epoch: int  # the first epoch's: it sets the schedule
    loss_sum: torch.Tensor  # the train loss since the last validation, summed on-device (no host sync per step)
    loss_count: int = 0
    taken: int = 0  # this rank's batches of `order` trained
    step: int = 0  # optimizer steps of the phase


@dataclass
class Batching:
    """How batches are padded for this model."""

    pad_id: int
    left_pad: bool = False


# What each validation logs, by epoch-log column: the scores of sendit.evaluate.classification_metrics a
# selection may rank by (config.SELECTION_METRICS). Macro-F1's column kept its name from before the choice.
VALIDATION_COLUMNS = {"accuracy": "val_accuracy", "f1_macro": "val_f1", "recall_macro": "val_recall_macro"}


def epoch_log_scores(metrics: dict) -> dict[str, float]:
    """The validation scores among `metrics` (classification_metrics' result) under their epoch-log names."""
    return {column: metrics[key] for key, column in VALIDATION_COLUMNS.items() if key in metrics}


# Devices with torch's fused AdamW kernel.
FUSED_ADAMW_DEVICES = {"cpu", "cuda", "mps", "xpu"}


def adamw(params: list[nn.Parameter], lr: float, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW through torch's fused kernel where it exists (also the peer Trainer's default,
    `adamw_torch_fused`). On CPU, torch otherwise loops over the tensors one by one: for minilm's
    22.7M parameters a step took ~120-150 ms that way and ~20 ms fused (1 thread)."""
    fused = cfg.fused_optimizer and all(p.is_floating_point() and p.device.type in FUSED_ADAMW_DEVICES
                                        for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=fused)


def frozen_linear_weights_to_bf16(model: nn.Module) -> int:
    """Store frozen nn.Linear weights and biases in bf16; returns how many values were cast.

    Under autocast every linear layer casts its float32 weight and bias to bf16 in every forward
    pass (autocast caches casts only of trainable leaves); stored in bf16 they give the same bf16
    values once, at half the memory. Packed quantized weights (bitsandbytes) are not float32 and
    stay as they are; so do embeddings and norms, which autocast leaves in float32.
    """
    cast = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            for param in (module.weight, module.bias):
                if param is not None and not param.requires_grad and param.dtype == torch.float32:
                    param.data = param.data.to(torch.bfloat16)
                    cast += param.numel()
    return cast


def make_accelerator(precision: str, device: str = "cpu"):
    """An Accelerator for this run's device and precision. accelerate keeps one precision per process
    and refuses another, but a study (or distillation) may run fp32 and bf16 runs in turn: the
    per-run state is reset then, the process group (PartialState) kept.

    fp16 is not handed to accelerate: on a CPU it would silently train in fp32. The Trainer autocasts
    and scales the loss itself (torch.amp), the same on every device."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    mixed = "bf16" if precision == "bf16" else "no"
    if AcceleratorState._shared_state and AcceleratorState._shared_state.get("_mixed_precision") != mixed:
        AcceleratorState._reset_state()
    return Accelerator(cpu=device == "cpu", mixed_precision=mixed)


class Trainer:
    """Runs a method's phases on one model, keeping the best state by the selection metric on validation."""

    def __init__(self, model: nn.Module, method: Method, cfg: TrainConfig, batching: Batching,
                 label_names: list[str], precision: str = "fp32", progress: ProgressHook | None = None,
                 loss: LossHook | None = None, device: str = "cpu", eval_precision: str | None = None,
                 selection_metric: str = "f1_macro", on_validation: ValidationHook | None = None,
                 checkpoints: Checkpoints | None = None):
        """`precision` trains (fp32 | bf16 | fp16); `eval_precision` validates (default: `precision`);
        `selection_metric` (a key of VALIDATION_COLUMNS) decides the kept weights and early stopping;
        `on_validation` sees each validation and may stop training (a search's pruner); `checkpoints`:
        where to save checkpoints and resume from (None: neither)."""
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision {precision!r}: fp32, bf16 or fp16 (sendit.hardware decides `auto`)")
        if selection_metric not in VALIDATION_COLUMNS:
            raise ValueError(f"selection metric {selection_metric!r}: one of {', '.join(VALIDATION_COLUMNS)}")
        self.score_column = VALIDATION_COLUMNS[selection_metric]
        self.model, self.method, self.cfg = model, method, cfg
        self.loss = loss or (lambda outputs, batch, index: outputs.loss)
        self.batching, self.label_names, self.precision = batching, label_names, precision
        self.eval_precision = eval_precision or precision
        self.progress = progress or (lambda n: None)
        self.on_validation = on_validation or (lambda number, row: False)
        self.accelerator = make_accelerator(precision, device)
        if next(model.parameters()).device != self.accelerator.device:  # head-only phases are never prepared
            model.to(self.accelerator.device)
        self.rng = np.random.default_rng(cfg.seed)  # one batch order on every rank; each takes its share
        self.saved_names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.result = FitResult()
        self.best_state: dict[str, torch.Tensor] | None = None
        self.evals_since_best = 0
        self.epoch_offset = 0.0
        self.checkpoints = checkpoints
        if checkpoints and self.accelerator.num_processes > 1:
            log.warning("no checkpoints under %d processes: a resumed run would need every rank's random state",
                        self.accelerator.num_processes)
            self.checkpoints = None

    def fit(self, train: Encoded, val: Encoded) -> FitResult:
        self.started = time.perf_counter()
        resumed = self._resume()
        for number, phase in enumerate(self.method.phases(self.cfg)):
            if self.result.pruned:
                break
            kind = PHASE_KINDS[phase.kind]
            if resumed and number < resumed.state["phase"]:
                # Trained before the checkpoint: only set up again, for what that did to the model (accelerate
                # wraps its forward in autocast, frozen weights may be stored in bf16).
                self._start(kind(self, train, val), phase, total=1)
            elif resumed and number == resumed.state["phase"]:
                self._set_weights(resumed.tensors, "weights.")  # before the kind: HeadFeatures pools with them
                self._train_phase(number, phase, kind(self, train, val), resumed)
            else:
                self.evals_since_best = 0
                self._train_phase(number, phase, kind(self, train, val))
            self.epoch_offset += phase.epochs
        self.result.train_seconds = time.perf_counter() - self.started
        if self.best_state is not None:
            self._restore_best()
        return self.result

    def _train_phase(self, number: int, phase: Phase, kind: PhaseKind, resumed: Checkpoint | None = None) -> None:
        """The training loop: each batch one optimizer step, a validation when due, a checkpoint when
        due, and one stop condition: the phase's last step (epochs, or `max_steps`) or patience run out."""
        cfg = self.cfg
        at = self._resumed_position(resumed, kind) if resumed else self._first_position(kind)
        total = max(1, math.ceil(phase.epochs * at.steps_per_epoch))
        total = min(total, cfg.max_steps) if cfg.max_steps else total
        eval_every = cfg.eval_every_steps or max(1, math.ceil(at.steps_per_epoch / max(1, cfg.evals_per_epoch)))
        self._start(kind, phase, total)
        if resumed:
            self._restore_phase(kind, resumed)
        kind.model.train()
        for index in self._epochs(kind, at):
            at.step += 1
            loss = kind.step(index)
            at.loss_sum += loss.detach().float()
            at.loss_count += 1
            self.result.train_examples += len(index)
            self.progress(len(index) * kind.processes)
            if at.step % eval_every == 0 or at.step == total:  # the last step always validates: it may be the best
                epoch = self.epoch_offset + at.step / at.steps_per_epoch
                prune = self._validate(kind, phase, round(epoch, 4), at.step, float(at.loss_sum) / at.loss_count)
                if at.step == total or self._should_stop():
                    break
                if prune:  # only before the phase's last step: a finished phase was not cut short
                    self.result.pruned = True
                    break
                at.loss_sum, at.loss_count = torch.zeros((), device=kind.device), 0
                kind.model.train()  # validation left it in eval mode (dropout off)
            if self.checkpoints and self.checkpoints.due():
                self._save_checkpoint(number, phase, kind, at)

    def _start(self, kind: PhaseKind, phase: Phase, total: int) -> None:
        optimizer = adamw(kind.params, phase.lr, self.cfg)
        kind.start(optimizer, self._scheduler(optimizer, total))

    @staticmethod
    def _first_position(kind: PhaseKind) -> Position:
        order = kind.epoch_batches()
        # Token budgets vary the batch count a little between epochs; the first epoch's sets the schedule.
        return Position(order, math.ceil(len(order) / kind.processes), torch.zeros((), device=kind.device))

    def _epochs(self, kind: PhaseKind, at: Position):
        """This process's batches, epoch after epoch, from `at` on. A new epoch's order is drawn only once
        the loop asks for its first batch, so a stop at an epoch's end draws nothing (the seed's order
        holds), and a checkpoint there holds the random state that draws the next."""
        while True:
            mine = at.order[kind.rank::kind.processes]
            while at.taken < len(mine):
                at.taken += 1
                yield mine[at.taken - 1]
            at.order, at.taken = kind.epoch_batches(), 0

    def _scheduler(self, optimizer, total: int):
        from transformers import get_scheduler

        name = {"constant": "constant_with_warmup"}.get(self.cfg.scheduler, self.cfg.scheduler)
        return get_scheduler(name, optimizer, num_warmup_steps=int(self.cfg.warmup_ratio * total),
                             num_training_steps=total)

    def _validate(self, kind: PhaseKind, phase: Phase, epoch: float, step: int, train_loss: float) -> bool:
        """Log (and score) one validation; return `on_validation`'s verdict: True asks to stop."""
        row = {"epoch": epoch, "phase": phase.name, "step": step, "train_loss": train_loss}
        if len(kind.val) == 0:  # no validation split: log the training loss, keep the last weights
            self.result.epoch_log.append(row)
            return False
        logits, labels = kind.val_logits(), kind.val.labels
        row["val_loss"] = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)))
        self._record(row, logits.argmax(-1), labels)
        return self.on_validation(len(self.result.epoch_log), row)

    def _record(self, row: dict, predictions: np.ndarray, labels: np.ndarray) -> None:
        """Score a validation; keep the weights when it beats the best so far."""
        row.update(epoch_log_scores(classification_metrics(labels, predictions, self.label_names)))
        self.result.epoch_log.append(row)
        if not self.result.best or row[self.score_column] > self.result.best[self.score_column]:
            self.result.best = row
            self.evals_since_best = 0
            self.best_state = {n: p.detach().clone() for n, p in self.model.named_parameters()
                               if n in set(self.saved_names)}
        else:
            self.evals_since_best += 1

    def _should_stop(self) -> bool:
        """True once `early_stopping_patience` validations in a row of this phase brought no gain in the
        selection metric (Hugging Face's EarlyStoppingCallback). Asked only before the phase's last step, so
        `stopped_early` means validations were skipped."""
        patience = self.cfg.early_stopping_patience
        stop = patience is not None and self.evals_since_best >= patience
        self.result.stopped_early |= stop
        return stop

    def _restore_best(self) -> None:
        self._set_weights(self.best_state)
        for name, param in self.model.named_parameters():  # back to the method's trainable set, for saving
            param.requires_grad = name in set(self.saved_names)

    def _set_weights(self, values: dict[str, torch.Tensor], prefix: str = "") -> None:
        """Copy `values[prefix + name]` into each trained parameter."""
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name in self.saved_names:
                params[name].copy_(values[prefix + name])

    # -- checkpoints: the state above and the phase's Position, saved and loaded ------------------------

    def _save_checkpoint(self, number: int, phase: Phase, kind: PhaseKind, at: Position) -> None:
        params = dict(self.model.named_parameters())
        optimizer_tensors, optimizer = optimizer_state(kind.optimizer)
        tensors = {**{f"weights.{name}": params[name] for name in self.saved_names},
                   **{f"best.{name}": value for name, value in (self.best_state or {}).items()},
                   **optimizer_tensors, **random_states(), "loss_sum": at.loss_sum,
                   "order.indices": torch.from_numpy(np.concatenate(at.order)),
                   "order.sizes": torch.tensor([len(batch) for batch in at.order])}
        log_rows = self.result.epoch_log
        state = {"phase": number, "phase_name": phase.name, "step": at.step, "taken": at.taken,
                 "steps_per_epoch": at.steps_per_epoch, "loss_count": at.loss_count, "epoch_log": log_rows,
                 "best": log_rows.index(self.result.best) if self.result.best else None,
                 "evals_since_best": self.evals_since_best, "train_examples": self.result.train_examples,
                 "stopped_early": self.result.stopped_early, "train_seconds": time.perf_counter() - self.started,
                 "optimizer": optimizer, "scheduler": kind.scheduler.state_dict(),
                 "scaler": kind.scaler.state_dict() if kind.scaler else None,
                 "numpy_rng": self.rng.bit_generator.state}
        self.checkpoints.save(Checkpoint(tensors, state))

    def _resume(self) -> Checkpoint | None:
        """Where there is a checkpoint, take back the run's record from it (epoch log, best weights,
        examples, seconds); the phase's own state is taken back where that phase starts again."""
        checkpoint = self.checkpoints.load() if self.checkpoints else None
        if checkpoint is None:
            return None
        state = checkpoint.state
        rows = state["epoch_log"]
        self.result = FitResult(rows, rows[state["best"]] if state["best"] is not None else {},
                                train_examples=state["train_examples"], stopped_early=state["stopped_early"])
        if state["best"] is not None:
            device = next(self.model.parameters()).device
            self.best_state = {name: checkpoint.tensors[f"best.{name}"].to(device) for name in self.saved_names}
        self.evals_since_best = state["evals_since_best"]
        self.started -= state["train_seconds"]
        self.progress(self.result.train_examples)
        log.info("%s: resuming at step %d of phase %r (%d examples trained, %.0f s)", self.checkpoints.path,
                 state["step"], state["phase_name"], state["train_examples"], state["train_seconds"])
        return checkpoint

    @staticmethod
    def _resumed_position(checkpoint: Checkpoint, kind: PhaseKind) -> Position:
        state, tensors = checkpoint.state, checkpoint.tensors
        sizes = tensors["order.sizes"].numpy()
        order = np.split(tensors["order.indices"].numpy(), np.cumsum(sizes)[:-1])
        return Position(order, state["steps_per_epoch"], tensors["loss_sum"].to(kind.device), state["loss_count"],
                        state["taken"], state["step"])

    def _restore_phase(self, kind: PhaseKind, checkpoint: Checkpoint) -> None:
        """Optimizer, schedule, loss scale and random states as they were: the loop goes on from here."""
        state = checkpoint.state
        load_optimizer_state(kind.optimizer, checkpoint.tensors, state["optimizer"])
        kind.scheduler.load_state_dict(state["scheduler"])
        if kind.scaler:
            kind.scaler.load_state_dict(state["scaler"])
        self.rng.bit_generator.state = state["numpy_rng"]
        set_random_states(checkpoint.tensors)


# -- phase kinds: what differs between phases; the loop above is shared ---------------------------------
# Each kind gives the loop `params` (what the optimizer trains), `epoch_batches()` (one epoch's order, all
# ranks' batches), `start(optimizer, scheduler)`, `step(index)` -> loss, `val_logits()`, and the `model`
# to put back in train mode, the `val` split, the `device` of the loss, this `rank` of `processes`, and
# for checkpoints the `optimizer`, `scheduler` and fp16 loss `scaler` (or None) that `start` set up.

class EndToEnd:
    """`end_to_end`: token batches through the whole model, prepared by accelerate (DDP across processes:
    every rank draws the same batch order and takes every num_processes-th batch)."""

    def __init__(self, trainer: Trainer, train: Encoded, val: Encoded):
        self.trainer, self.train, self.val = trainer, train, val
        if trainer.precision == "bf16" and trainer.cfg.bf16_frozen_weights and trainer.method.frozen_weights_in_bf16:
            frozen_linear_weights_to_bf16(trainer.model)
        if trainer.cfg.fast_dropout and trainer.accelerator.device.type == "cpu":
            use_fast_dropout(trainer.model)
        self.params = [p for p in trainer.model.parameters() if p.requires_grad]
        acc = trainer.accelerator
        self.rank, self.processes, self.device = acc.process_index, acc.num_processes, acc.device

    def epoch_batches(self) -> list[np.ndarray]:
        cfg, rng = self.trainer.cfg, self.trainer.rng
        if cfg.length_buckets:
            return length_bucketed_batches(self.train.lengths, cfg.batch_size, rng, max_tokens=cfg.batch_tokens)
        return random_batches(len(self.train), cfg.batch_size, rng)

    def start(self, optimizer: torch.optim.Optimizer, scheduler) -> None:
        acc = self.trainer.accelerator
        # The scheduler stays unprepared: a prepared one steps once per process.
        self.model, self.optimizer = acc.prepare(self.trainer.model, optimizer)
        self.scheduler = scheduler
        # fp16 only: autocast and loss scaling here (accelerate autocasts bf16 inside the prepared model).
        self.scaler = torch.amp.GradScaler(acc.device.type) if self.trainer.precision == "fp16" else None

    def step(self, index: np.ndarray) -> torch.Tensor:
        trainer, acc, scaler = self.trainer, self.trainer.accelerator, self.scaler
        batch = {k: v.to(acc.device) for k, v in collate(self.train, index, **vars(trainer.batching)).items()}
        with autocast(acc.device.type, "fp16" if scaler else "fp32"):
            outputs = self.model(**batch)
        loss = trainer.loss(outputs, batch, index)
        acc.backward(scaler.scale(loss) if scaler else loss)
        if scaler:
            scaler.unscale_(self.optimizer)  # clip the true gradients
        if trainer.cfg.grad_clip:
            acc.clip_grad_norm_(self.params, trainer.cfg.grad_clip)
        if scaler:
            scaler.step(self.optimizer)  # skipped when a gradient overflowed; the scale then shrinks
            scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def val_logits(self) -> np.ndarray:
        trainer = self.trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        logits, _ = predict_logits(model, self.val, trainer.cfg.eval_batch_size, trainer.eval_precision,
                                   **vars(trainer.batching))
        return logits


class HeadFeatures:
    """`head_features`: the head alone on pooled features computed once, so each epoch costs a few
    matrix products instead of an encoder pass. Every process trains the same head on every batch."""

    rank, processes, scaler = 0, 1, None

    def __init__(self, trainer: Trainer, train: Encoded, val: Encoded):
        self.trainer, self.model, self.val = trainer, trainer.model, val
        self.head = PooledHead(trainer.model)
        for param in trainer.model.parameters():
            param.requires_grad = False
        self.params = self.head.parameters()
        for param in self.params:
            param.requires_grad = True
        how = (trainer.cfg.eval_batch_size, trainer.eval_precision, trainer.batching)
        self.train_x, self.val_x = pooled_features(self.head, train, *how), pooled_features(self.head, val, *how)
        self.device = self.train_x.device
        self.train_y = torch.from_numpy(train.labels).to(self.device)

    def epoch_batches(self) -> list[np.ndarray]:
        return random_batches(len(self.train_y), self.trainer.cfg.batch_size, self.trainer.rng)

    def start(self, optimizer: torch.optim.Optimizer, scheduler) -> None:
        self.optimizer, self.scheduler = optimizer, scheduler

    def step(self, index: np.ndarray) -> torch.Tensor:
        index = torch.from_numpy(index).to(self.device)
        loss = nn.functional.cross_entropy(self.head.logits(self.train_x[index]), self.train_y[index])
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    @torch.no_grad()
    def val_logits(self) -> np.ndarray:
        self.model.eval()
        return self.head.logits(self.val_x).cpu().numpy()


PhaseKind = EndToEnd | HeadFeatures
PHASE_KINDS = {"end_to_end": EndToEnd, "head_features": HeadFeatures}


@torch.no_grad()
def pooled_features(head: PooledHead, encoded: Encoded, batch_size: int, precision: str,
                    batching: Batching) -> torch.Tensor:
    """Pooled features of every example, on the model's device."""
    head.model.eval()
    device = next(head.model.parameters()).device
    out = torch.empty(0, device=device)
    batches = sorted_batches(encoded.lengths, batch_size)
    with reduced_precision(head.model, precision, len(batches) > 1), first_token_only(head.model):
        for index in batches:
            batch = {k: v.to(device) for k, v in collate(encoded, index, **vars(batching)).items() if k != "labels"}
            features = head.extract(batch)
            if out.numel() == 0:
                out = torch.empty((len(encoded), features.shape[1]), device=device)
            out[torch.from_numpy(index).to(device)] = features
    return out
