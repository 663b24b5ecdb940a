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

The dropout on attention probabilities is no layer: transformers hands its probability to the attention
function, and torch's attention then leaves its fused kernel for a plain path with torch's dropout.
`use_fast_dropout` therefore also switches a model on transformers' SDPA attention to FAST_ATTENTION,
transformers' own SDPA function except when training with dropout, where it computes the same plain
attention with FastDropout's mask on the probabilities, or training on up to PLAIN_TRAINING_MAX_KEYS
tokens: there the plain path, without a mask, is the faster one too (torch's fused CPU kernel trains
slower on short sequences), so a model without attention dropout trains tweets no slower than one with it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

LEVELS = 1 << 16  # uniforms per 16 bits: the resolution of the drop probability
UNIFORMS_PER_DRAW = 4  # 16-bit uniforms in one 64-bit draw
FAST_ATTENTION = "sendit_fast_dropout"  # the name it is registered under with transformers
# Training on at most this many keys runs the plain attention, dropout or not: on minilm (bf16, AMX Xeon) a
# training step with attention dropout 0 took 1.1-1.4x as long through torch's fused kernel as through the
# plain path at 64-128 tokens, 0.6x at 256 (benchmarks/results/attention_dropout.md).
PLAIN_TRAINING_MAX_KEYS = 128


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
    """Replace the model's nn.Dropout layers (its own and a PEFT adapter's) by FastDropout in place, and
    move a model on SDPA attention to FAST_ATTENTION; return how many layers were replaced."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p, child.inplace).train(child.training))
                replaced += 1
    if getattr(getattr(model, "config", None), "_attn_implementation", None) == "sdpa":
        _register_fast_attention()
        model.set_attn_implementation(FAST_ATTENTION)
    return replaced


def attention_with_fast_dropout(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                                is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, unless it would drop probabilities or trains on short sequences: then
    softmax(q k^T * scaling + mask) (with FastDropout's mask), times v, as torch's attention computes it
    without its fused kernel. Grouped keys, position biases and queries shorter than the keys (a cache) keep
    transformers' path."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    short_training = module.training and key.shape[2] <= PLAIN_TRAINING_MAX_KEYS
    plain = ((dropout > 0 or short_training) and getattr(module, "num_key_value_groups", 1) == 1
             and kwargs.get("position_bias") is None and query.shape[2] == key.shape[2])
    if not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    scores = torch.matmul(query, key.transpose(-1, -2)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is None and causal and query.shape[2] > 1:  # as transformers' SDPA function decides
        attention_mask = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool, device=query.device).tril()
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        # the dtype's minimum, not -inf: a row with every key masked (a left pad under a causal mask) stays finite
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        scores = scores + attention_mask
    probabilities = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout > 0:
        probabilities = _Masked.apply(probabilities, scaled_keep_mask(probabilities.shape, dropout,
                                                                      probabilities.dtype, probabilities.device))
    return torch.matmul(probabilities, value).transpose(1, 2).contiguous(), None


def _register_fast_attention() -> None:
    """Register FAST_ATTENTION with transformers, with the attention masks it makes for SDPA."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(FAST_ATTENTION, attention_with_fast_dropout)
    AttentionMaskInterface.register(FAST_ATTENTION, sdpa_mask)
