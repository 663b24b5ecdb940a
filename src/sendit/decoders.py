"""Decoder batches: position ids that follow the attention mask, so left padding changes nothing.

GPT-2 and GPT-Neo number positions 0..T-1 along the padded row whatever the attention mask says,
so a left-padded example starts at position `T - len` instead of 0 and its logits change with the
length of its batch-mates. OPT derives positions from the mask itself, and every model gives the
same logits with right padding. Passing `position_ids` computed from the mask makes left padding
exact for all three (tests/test_methods.py checks it on the tiny models).

Left padding is for decoders only: encoders pool their first token, which left padding turns into
a pad, and RoBERTa counts positions from `padding_idx + 1` (it must not get these 0-based ids).
sendit left-pads only when `model.padding_side: left`.
"""
from __future__ import annotations

import torch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over the real tokens of each row; pads get 0 (they are masked anyway)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
