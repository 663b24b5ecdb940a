"""What a method is: how it makes a model trainable, and the phases it trains in.

A method never touches the training loop: it sets `requires_grad` (or wraps the model with PEFT)
and declares its phases. The trainer knows two kinds of phase: `end_to_end` (batches through the
whole model) and `head_features` (the head alone, on pooled features computed once).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from sendit.config import ConfigError, MethodConfig, TrainConfig, build
from sendit.models import head_module_names, is_head_parameter

METHODS: dict[str, type["Method"]] = {}


@dataclass
class NoOptions:
    """This method has no options of its own."""


@dataclass(frozen=True)
class Phase:
    kind: str  # "end_to_end" or "head_features"
    epochs: float
    lr: float
    name: str = "train"


class Method:
    """Base of every adaptation method; subclasses register with `@register_method`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    default_lr: ClassVar[float | None]
    Options: ClassVar[type] = NoOptions
    # What the method can do, declared here and read by every other module (never matched by name):
    display_name: ClassVar[str] = ""  # as tables and figures show it; "" -> `name`
    baseline: ClassVar[bool] = False  # a reference point (zero-shot): reported, never recommended
    # Trains a small adapter over frozen base weights, so served runs of one base can share them.
    shares_base: ClassVar[bool] = False
    needs_bitsandbytes: ClassVar[bool] = False  # its saved runs load only with bitsandbytes installed
    foldable: ClassVar[bool] = False  # its update folds into the base weights (`folded`: merge_and_unload)
    # Whether frozen linear weights may be stored in bf16 under bf16 training (train.bf16_frozen_weights):
    # not where the method reads them outside autocast's casts (DoRA's weight norm).
    frozen_weights_in_bf16: ClassVar[bool] = True

    def __init__(self, config: MethodConfig):
        self.config = config
        self.options = build(self.Options, config.options, f"methods.{config.name}.options")
        self.lr = config.lr if config.lr is not None else self.default_lr
        self.validate()

    def validate(self) -> None:
        """Reject option values this method cannot use (a ConfigError naming the field), so a study
        fails when it is planned, before any data is prepared."""

    def apply(self, model: nn.Module) -> nn.Module:
        """Return the model with exactly this method's parameters trainable."""
        raise NotImplementedError

    def phases(self, train: TrainConfig) -> list[Phase]:
        return [Phase("end_to_end", train.epochs, self.lr)]

    @property
    def trains(self) -> bool:
        return bool(self.phases(TrainConfig()))

    def folded(self, model: nn.Module) -> nn.Module:
        """A `foldable` method's model with its update folded into plain weights, for export."""
        return model.merge_and_unload()

    @property
    def folds_exactly(self) -> bool:
        """Whether the folded model computes what the run computes up to float32 rounding (export then
        demands identical predictions; otherwise at most `--max-loss` points of validation accuracy lost)."""
        return True

    def for_inference(self, model: nn.Module) -> nn.Module:
        """The trained model as test passes, `eval`, `predict` and `serve` run it: folded where that computes
        the same function, so no adapter matmuls run beside each layer (all-linear LoRA on minilm infers
        1.21-1.29x faster folded: benchmarks/results/first_token.md). The model must not train afterwards.
        Weights held in bf16 (bf16 training's frozen base) stay unfolded: the update would be rounded to bf16."""
        in_float32 = all(p.dtype == torch.float32 for p in model.parameters())
        return self.folded(model).eval() if self.foldable and self.folds_exactly and in_float32 else model


class PeftMethod(Method):
    """A method PEFT implements: its config is all a subclass states (the head trains beside it)."""

    def apply(self, model: nn.Module) -> nn.Module:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(model))

    def peft_config(self, model: nn.Module):
        raise NotImplementedError


def register_method(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def display_name(method: str) -> str:
    """A method's display name; a study's own label (e.g. `lora_qv`) stays as written."""
    cls = METHODS.get(method)
    return (cls.display_name or cls.name) if cls else method


def is_baseline(method: str) -> bool:
    return method in METHODS and METHODS[method].baseline


def get_method(config: MethodConfig) -> Method:
    if config.name not in METHODS:
        raise ConfigError(f"unknown method '{config.name}'; known: {', '.join(sorted(METHODS))}")
    return METHODS[config.name](config)


def freeze_all_but(model: nn.Module, keep) -> nn.Module:
    """Set requires_grad on exactly the parameters whose name satisfies `keep(name)`."""
    for name, param in model.named_parameters():
        param.requires_grad = keep(name)
    return model


def keep_head(model: nn.Module):
    """A predicate for the classification head's parameters of `model`."""
    head = head_module_names(model)
    return lambda name: is_head_parameter(name, head)


def options_help(cls: type[Method]) -> list[tuple[str, str]]:
    """(field, default) pairs of a method's options, for `sendit methods`."""
    return [(f.name, repr(f.default if f.default is not dataclasses.MISSING else f.default_factory()))
            for f in dataclasses.fields(cls.Options)]
