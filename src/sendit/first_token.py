"""Inference that computes the last encoder block for the first token only.

An encoder's classifier reads one position of the last block's output: the first ([CLS], `<s>`;
the first virtual token under prompt tuning). That block's keys and values still need every
token, but its query, attention output, feed-forward and layer norms are needed for the first
token alone. On a 6-layer model that is ~14% of the arithmetic of a forward pass and measured
7-21% faster on minilm (benchmarks/results/first_token.md), with the same logits to float
rounding. The peer runs the whole block; this is one of the ways sendit beats it.

Blocks are recognised by their layout (the modules they hold), not by their class names; a model
without a known layout, a decoder, or a call whose attention mask is not a 4-D tensor runs as is.
"""
from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BlockLayout:
    """Where a block keeps its self-attention, its q/k/v projections, and how it finishes (output
    projection, residual and norm, feed-forward) from the attended first token."""

    attention: str
    projections: tuple[str, str, str]
    finish: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

    def matches(self, block: nn.Module) -> bool:
        try:
            attention = block.get_submodule(self.attention)
        except AttributeError:
            return False
        return (all(isinstance(getattr(attention, name, None), nn.Module) for name in self.projections)
                and hasattr(attention, "attention_head_size") and hasattr(attention, "scaling"))


def _finish_bert(block, context, first):
    attended = block.attention.output(context, first)  # dense, dropout, LayerNorm(x + first)
    return block.output(block.intermediate(attended), attended)


def _finish_distilbert(block, context, first):
    attended = block.sa_layer_norm(block.attention.out_lin(context) + first)
    return block.output_layer_norm(block.ffn(attended) + attended)


# BERT, RoBERTa, ELECTRA, XLM-R, MiniLM, ...; DistilBERT.
LAYOUTS = (
    BlockLayout("attention.self", ("query", "key", "value"), _finish_bert),
    BlockLayout("attention", ("q_lin", "k_lin", "v_lin"), _finish_distilbert),
)


def last_block(model: nn.Module) -> tuple[nn.Module, BlockLayout] | None:
    """The last transformer block of an encoder classifier and its layout, or None (decoders, unknown
    layouts)."""
    config = getattr(model, "config", None)
    if getattr(config, "is_decoder", False) or getattr(config, "is_encoder_decoder", False):
        return None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module):
            for layout in LAYOUTS:
                if layout.matches(module[-1]) and not hasattr(module[-1], "crossattention"):
                    return module[-1], layout
    return None


def _first_token_forward(layout: BlockLayout, full_forward):
    def forward(block, hidden_states, attention_mask=None, *args, **kwargs):
        if attention_mask is not None and not (torch.is_tensor(attention_mask) and attention_mask.dim() == 4):
            return full_forward(hidden_states, attention_mask, *args, **kwargs)
        attention = block.get_submodule(layout.attention)
        query, key, value = (getattr(attention, name) for name in layout.projections)
        batch, length, _ = hidden_states.shape
        size = attention.attention_head_size
        first = hidden_states[:, :1]

        def heads(x):  # (batch, positions, hidden) -> (batch, heads, positions, size)
            return x.view(batch, x.shape[1], -1, size).transpose(1, 2)

        mask = None if attention_mask is None else attention_mask[..., :1, :]
        context = F.scaled_dot_product_attention(heads(query(first)), heads(key(hidden_states)),
                                                 heads(value(hidden_states)), attn_mask=mask, scale=attention.scaling)
        return layout.finish(block, context.transpose(1, 2).reshape(batch, 1, -1), first)

    return forward


@contextlib.contextmanager
def first_token_only(model: nn.Module):
    """While inside, the model's last encoder block computes the first token only (see the module's
    docstring); outside, and for models it does not apply to, nothing changes. For inference only:
    the outputs of the other positions are gone, so do not ask for hidden states inside."""
    found = last_block(model)
    if found is None or "forward" in vars(found[0]):  # nothing to do, or already inside
        yield
        return
    block, layout = found
    block.forward = types.MethodType(_first_token_forward(layout, block.forward), block)
    try:
        yield
    finally:
        del block.forward
