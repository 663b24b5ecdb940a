"""Dropout whose masks cost a quarter of the random draws, for training on a CPU.

torch's CPU dropout draws one random number per element, serially (`bernoulli_` uses one thread
whatever the thread count), then scales and multiplies: on minilm at 64 tokens its masks took ~5 ms
of forward and backward per dropout layer, where a multiply takes ~0.3 ms. LoRA adds a dropout on the
input of every adapted layer, so its steps paid most (1.51x faster with `lora_dropout: 0`).
`FastDropout` cuts each 64-bit draw of torch's generator into four 16-bit uniforms, compares them
with the drop probability rounded to 1/65536 (0.1 becomes 0.100006, and the kept values are scaled by
the rounded probability's 1 / (1 - p), so they stay unbiased) straight into a mask in the input's
dtype, and multiplies by it forward and backward: the same Bernoulli masks in distribution, from the
same seeded generator. Measured in `benchmarks/results/fast_dropout.md`. On CUDA torch's dropout is a
fused kernel already: it is left alone there.
"""
from __future__ import annotations

import math

import torch
from torch import nn

LEVELS = 1 << 16  # uniforms per 16 bits: the resolution of the drop probability
UNIFORMS_PER_DRAW = 4  # 16-bit uniforms in one 64-bit draw


def scaled_keep_mask(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """0 where an element is dropped, 1 / (1 - p) where it is kept, with p rounded to 1/65536."""
    count = math.prod(shape)
    draws = torch.randint(-2**63, 2**63 - 1, (-(-count // UNIFORMS_PER_DRAW),), dtype=torch.int64, device=device)
    uniforms = draws.view(torch.int16)[:count].view(shape)  # each uniform over -32768..32767
    dropped = round(p * LEVELS)
    mask = torch.empty(shape, dtype=dtype, device=device)
    torch.ge(uniforms, dropped - LEVELS // 2, out=mask)  # kept with probability 1 - dropped / LEVELS
    return mask.mul_(LEVELS / (LEVELS - dropped))


class _Masked(torch.autograd.Function):
    """x * mask with the mask saved for backward (torch's own dropout saves its mask the same way)."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class FastDropout(nn.Dropout):
    """nn.Dropout with cheaper masks; an nn.Dropout to every check, the same in evaluation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        return _Masked.apply(x, scaled_keep_mask(x.shape, self.p, x.dtype, x.device))


def use_fast_dropout(model: nn.Module) -> int:
    """Replace the model's nn.Dropout layers (its own and a PEFT adapter's) by FastDropout in place;
    return how many were replaced. Dropout a model applies through a function rather than a layer
    (transformers' attention-probability dropout, passed to its attention kernel as a number) stays
    torch's: `model.attention_dropout` decides that one."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p, child.inplace).train(child.training))
                replaced += 1
    return replaced
