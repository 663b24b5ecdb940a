"""The training loop: a method's phases, validation, best checkpoint by val macro-F1, early stopping.

Built on accelerate's `Accelerator`, so the same loop runs on one CPU, a GPU, or several processes
under `torchrun` / `accelerate launch` (each rank takes every world_size-th batch; gradients are
averaged by DDP). Two kinds of phase exist (see `sendit.methods.base`): `end_to_end` batches go
through the whole model; `head_features` trains the head alone on pooled features computed once.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from sendit.batching import Encoded, collate, length_bucketed_batches, random_batches, sorted_batches
from sendit.config import TrainConfig
from sendit.evaluate import classification_metrics, predict_logits, reduced_precision
from sendit.hardware import autocast
from sendit.methods.base import Method, Phase
from sendit.models import PooledHead

ProgressHook = Callable[[int], None]  # called with the number of examples just processed
# (model outputs, batch, example indices) -> loss; the default is the model's own cross-entropy.
LossHook = Callable[[object, dict, np.ndarray], torch.Tensor]


@dataclass
class FitResult:
    epoch_log: list[dict] = field(default_factory=list)  # one row per validation
    best: dict = field(default_factory=dict)  # the epoch-log row of the kept checkpoint
    train_seconds: float = 0.0
    train_examples: int = 0
    stopped_early: bool = False


@dataclass
class Batching:
    """How batches are padded for this model."""

    pad_id: int
    left_pad: bool = False


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
    """Runs a method's phases on one model, keeping the best state by validation macro-F1."""

    def __init__(self, model: nn.Module, method: Method, cfg: TrainConfig, batching: Batching,
                 label_names: list[str], precision: str = "fp32", progress: ProgressHook | None = None,
                 loss: LossHook | None = None, device: str = "cpu", eval_precision: str | None = None):
        """`precision` trains (fp32 | bf16 | fp16); `eval_precision` validates (default: `precision`)."""
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision {precision!r}: fp32, bf16 or fp16 (sendit.hardware decides `auto`)")
        self.model, self.method, self.cfg = model, method, cfg
        self.loss = loss or (lambda outputs, batch, index: outputs.loss)
        self.batching, self.label_names, self.precision = batching, label_names, precision
        self.eval_precision = eval_precision or precision
        self.progress = progress or (lambda n: None)
        self.accelerator = make_accelerator(precision, device)
        if next(model.parameters()).device != self.accelerator.device:  # head-only phases are never prepared
            model.to(self.accelerator.device)
        self.rng = np.random.default_rng(cfg.seed)  # one batch order on every rank; each takes its share
        self.saved_names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.result = FitResult()
        self.best_state: dict[str, torch.Tensor] | None = None
        self.evals_since_best = 0
        self.epoch_offset = 0.0

    def fit(self, train: Encoded, val: Encoded) -> FitResult:
        start = time.perf_counter()
        for phase in self.method.phases(self.cfg):
            self.evals_since_best = 0
            run = self._end_to_end if phase.kind == "end_to_end" else self._head_features
            run(phase, train, val)
            self.epoch_offset += phase.epochs
        self.result.train_seconds = time.perf_counter() - start
        if self.best_state is not None:
            self._restore_best()
        return self.result

    # -- phases -------------------------------------------------------------------------------

    def _end_to_end(self, phase: Phase, train: Encoded, val: Encoded) -> None:
        acc, cfg = self.accelerator, self.cfg
        if self.precision == "bf16" and cfg.bf16_frozen_weights and self.method.frozen_weights_in_bf16:
            frozen_linear_weights_to_bf16(self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = adamw(params, phase.lr, cfg)
        batches = self._epoch_batches(train)
        # Token budgets vary the batch count a little between epochs; the first epoch's sets the schedule.
        steps_per_epoch = math.ceil(len(batches) / acc.num_processes)
        total = self._total_steps(phase, steps_per_epoch)
        scheduler = self._scheduler(optimizer, total)
        model, optimizer = acc.prepare(self.model, optimizer)  # a prepared scheduler steps once per process
        # fp16 only: autocast and loss scaling here (accelerate autocasts bf16 inside the prepared model).
        scaler = torch.amp.GradScaler(acc.device.type) if self.precision == "fp16" else None
        eval_every = self._eval_every(steps_per_epoch)
        step, loss_sum, loss_count = 0, torch.zeros((), device=acc.device), 0
        model.train()
        while step < total:
            for index in batches[acc.process_index::acc.num_processes]:
                batch = {k: v.to(acc.device) for k, v in collate(train, index, **vars(self.batching)).items()}
                with autocast(acc.device.type, "fp16" if scaler else "fp32"):
                    outputs = model(**batch)
                loss = self.loss(outputs, batch, index)
                acc.backward(scaler.scale(loss) if scaler else loss)
                if scaler:
                    scaler.unscale_(optimizer)  # clip the true gradients
                if cfg.grad_clip:
                    acc.clip_grad_norm_(params, cfg.grad_clip)
                if scaler:
                    scaler.step(optimizer)  # skipped when a gradient overflowed; the scale then shrinks
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.detach().float()  # summed on-device: no host sync per step
                loss_count += 1
                step += 1
                self.result.train_examples += len(index)
                self.progress(len(index) * acc.num_processes)
                if step % eval_every == 0 or step == total:
                    epoch = self.epoch_offset + step / steps_per_epoch
                    self._validate(phase, epoch, step, float(loss_sum) / loss_count, val)
                    loss_sum, loss_count = torch.zeros((), device=acc.device), 0
                    model.train()
                    if step == total or self._should_stop():
                        break
            if step == total or self._should_stop():
                break
            batches = self._epoch_batches(train)

    def _epoch_batches(self, train: Encoded) -> list[np.ndarray]:
        cfg = self.cfg
        if cfg.length_buckets:
            return length_bucketed_batches(train.lengths, cfg.batch_size, self.rng, max_tokens=cfg.batch_tokens)
        return random_batches(len(train), cfg.batch_size, self.rng)

    def _head_features(self, phase: Phase, train: Encoded, val: Encoded) -> None:
        """Train the head on pooled features: one encoder pass, then many cheap head epochs."""
        cfg, head = self.cfg, PooledHead(self.model)
        for name, param in self.model.named_parameters():
            param.requires_grad = False
        for param in head.parameters():
            param.requires_grad = True
        train_x = self._features(head, train)
        val_x = self._features(head, val)
        device = train_x.device
        train_y = torch.from_numpy(train.labels).to(device)
        optimizer = adamw(list(head.parameters()), phase.lr, cfg)
        steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        total = self._total_steps(phase, steps_per_epoch)
        scheduler = self._scheduler(optimizer, total)
        eval_every = self._eval_every(steps_per_epoch)
        step, loss_sum, loss_count = 0, torch.zeros((), device=device), 0
        while step < total:
            self.model.train()
            for index in random_batches(len(train), cfg.batch_size, self.rng):
                index = torch.from_numpy(index).to(device)
                loss = nn.functional.cross_entropy(head.logits(train_x[index]), train_y[index])
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.detach()
                loss_count += 1
                step += 1
                self.result.train_examples += len(index)
                self.progress(len(index))
                if step % eval_every == 0 or step == total:
                    epoch = self.epoch_offset + step / steps_per_epoch
                    self._validate_head(head, phase, epoch, step, float(loss_sum) / loss_count, val_x, val)
                    loss_sum, loss_count = torch.zeros((), device=device), 0
                    self.model.train()
                    if step == total or self._should_stop():
                        break
            if step == total or self._should_stop():
                break

    # -- helpers ------------------------------------------------------------------------------

    @torch.no_grad()
    def _features(self, head: PooledHead, encoded: Encoded) -> torch.Tensor:
        """Pooled features of every example, on the model's device."""
        self.model.eval()
        device = next(self.model.parameters()).device
        out = torch.empty(0, device=device)
        batches = sorted_batches(encoded.lengths, self.cfg.eval_batch_size)
        with reduced_precision(self.model, self.eval_precision, len(batches) > 1):
            for index in batches:
                batch = {k: v.to(device) for k, v in collate(encoded, index, **vars(self.batching)).items()
                         if k != "labels"}
                features = head.extract(batch)
                if out.numel() == 0:
                    out = torch.empty((len(encoded), features.shape[1]), device=device)
                out[torch.from_numpy(index).to(device)] = features
        return out

    def _total_steps(self, phase: Phase, steps_per_epoch: int) -> int:
        total = max(1, math.ceil(phase.epochs * steps_per_epoch))
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def _eval_every(self, steps_per_epoch: int) -> int:
        if self.cfg.eval_every_steps:
            return self.cfg.eval_every_steps
        return max(1, math.ceil(steps_per_epoch / max(1, self.cfg.evals_per_epoch)))

    def _scheduler(self, optimizer, total: int):
        from transformers import get_scheduler

        name = {"constant": "constant_with_warmup"}.get(self.cfg.scheduler, self.cfg.scheduler)
        return get_scheduler(name, optimizer, num_warmup_steps=int(self.cfg.warmup_ratio * total),
                             num_training_steps=total)

    def _validate(self, phase: Phase, epoch: float, step: int, train_loss: float, val: Encoded) -> None:
        if len(val) == 0:  # no validation split: log the training loss, keep the last weights
            self.result.epoch_log.append({"epoch": round(epoch, 4), "phase": phase.name, "step": step,
                                          "train_loss": train_loss})
            return
        model = self.accelerator.unwrap_model(self.model)
        logits, _ = predict_logits(model, val, self.cfg.eval_batch_size, self.eval_precision, **vars(self.batching))
        val_loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val.labels)))
        self._record(phase, epoch, step, train_loss, val_loss, logits.argmax(-1), val.labels)

    @torch.no_grad()
    def _validate_head(self, head: PooledHead, phase: Phase, epoch: float, step: int, train_loss: float,
                       val_x: torch.Tensor, val: Encoded) -> None:
        if len(val) == 0:
            return self._validate(phase, epoch, step, train_loss, val)
        self.model.eval()
        logits = head.logits(val_x).cpu()
        val_loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(val.labels)))
        self._record(phase, epoch, step, train_loss, val_loss, logits.argmax(-1).numpy(), val.labels)

    def _record(self, phase: Phase, epoch: float, step: int, train_loss: float, val_loss: float,
                predictions: np.ndarray, labels: np.ndarray) -> None:
        metrics = classification_metrics(labels, predictions, self.label_names)
        row = {"epoch": round(epoch, 4), "phase": phase.name, "step": step, "train_loss": train_loss,
               "val_loss": val_loss, "val_accuracy": metrics["accuracy"], "val_f1": metrics["f1_macro"]}
        self.result.epoch_log.append(row)
        if not self.result.best or row["val_f1"] > self.result.best["val_f1"]:
            self.result.best = row
            self.evals_since_best = 0
            self.best_state = {n: p.detach().clone() for n, p in self.model.named_parameters()
                               if n in set(self.saved_names)}
        else:
            self.evals_since_best += 1

    def _should_stop(self) -> bool:
        """True once `early_stopping_patience` validations in a row of this phase brought no val-F1
        gain (Hugging Face's EarlyStoppingCallback). Asked only before the phase's last step, so
        `stopped_early` means validations were skipped."""
        patience = self.cfg.early_stopping_patience
        stop = patience is not None and self.evals_since_best >= patience
        self.result.stopped_early |= stop
        return stop

    def _restore_best(self) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in self.best_state.items():
                params[name].copy_(value)
        for name, param in params.items():  # back to the method's trainable set, for saving
            param.requires_grad = name in set(self.saved_names)
