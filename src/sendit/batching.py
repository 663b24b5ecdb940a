"""Tokenise once, then batch by length: the main speed-up over padding every tweet to 128 tokens.

Batches are formed from examples of similar length inside large shuffled windows, and the batch
order is shuffled too, so training sees random batches with little padding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sendit.decoders import position_ids_from_mask


@dataclass
class Encoded:
    """Token ids of a split, unpadded, with their labels."""

    input_ids: list[np.ndarray]
    labels: np.ndarray
    token_type_ids: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def subset(self, index: np.ndarray) -> "Encoded":
        types = [self.token_type_ids[i] for i in index] if self.token_type_ids is not None else None
        return Encoded([self.input_ids[i] for i in index], self.labels[index], types)


def encode(tokenizer, texts: list[str], labels, max_length: int, pairs: list[str] | None = None) -> Encoded:
    """Tokenise with truncation and no padding; `pairs` gives a second segment (e.g. a target)."""
    if len(texts) == 0:  # an absent split (e.g. no validation set); fast tokenizers fail on []
        return Encoded([], np.array(labels, dtype=np.int64))
    out = tokenizer(list(texts), pairs, truncation=True, max_length=max_length, padding=False)
    types = out.get("token_type_ids") if pairs is not None else None
    as_arrays = lambda rows: [np.asarray(row, dtype=np.int64) for row in rows]  # noqa: E731
    return Encoded(as_arrays(out["input_ids"]), np.array(labels, dtype=np.int64),
                   as_arrays(types) if types is not None else None)


def collate(encoded: Encoded, index, pad_id: int, left_pad: bool = False) -> dict[str, torch.Tensor]:
    """Pad the examples at `index` to the longest of them."""
    rows = [encoded.input_ids[i] for i in index]
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64) if encoded.token_type_ids is not None else None
    for j, (i, row) in enumerate(zip(index, rows)):
        span = slice(width - len(row), width) if left_pad else slice(0, len(row))
        ids[j, span] = row
        mask[j, span] = 1
        if types is not None:
            types[j, span] = encoded.token_type_ids[i]
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
             "labels": torch.from_numpy(encoded.labels[np.asarray(index)])}
    if types is not None:
        batch["token_type_ids"] = torch.from_numpy(types)
    if left_pad:  # decoders: positions count real tokens only (GPT-2/GPT-Neo ignore the mask otherwise)
        batch["position_ids"] = position_ids_from_mask(batch["attention_mask"])
    return batch


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                            window: int = 64, max_tokens: int | None = None) -> list[np.ndarray]:
    """Shuffle, sort by length inside windows of `window` batches, cut into batches, shuffle them.

    With `max_tokens` (token-budget batching) a batch takes examples while its padded size, rows x
    longest row, stays within the budget, instead of a fixed `batch_size`: short texts travel in
    larger batches, long ones in smaller.
    """
    order = rng.permutation(len(lengths))
    span = batch_size * window
    chunks = [order[i:i + span] for i in range(0, len(order), span)]
    order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
    if max_tokens is None:
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        batches = token_budget_cuts(order, lengths, max_tokens)
    return [batches[i] for i in rng.permutation(len(batches))]


def token_budget_cuts(order: np.ndarray, lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Cut `order` (sorted by length inside windows) into runs whose rows x longest row <= max_tokens;
    an example longer than the budget travels alone."""
    batches, start, longest = [], 0, 0
    for position, example in enumerate(order):
        longest_with = max(longest, int(lengths[example]))
        if position > start and (position - start + 1) * longest_with > max_tokens:
            batches.append(order[start:position])
            start, longest_with = position, int(lengths[example])
        longest = longest_with
    if start < len(order):
        batches.append(order[start:])
    return batches


def random_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches in length order, for inference: padding nearly vanishes; results are re-ordered."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
