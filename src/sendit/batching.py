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

    def concat(self, other: "Encoded") -> "Encoded":
        """These examples, then `other`'s (encoded by the same tokenizer the same way)."""
        types = self.token_type_ids + other.token_type_ids if self.token_type_ids is not None else None
        return Encoded(self.input_ids + other.input_ids, np.concatenate([self.labels, other.labels]), types)


def encode(tokenizer, texts: list[str], labels, max_length: int, pairs: list[str] | None = None,
           head_tail: bool = False) -> Encoded:
    """Tokenise without padding: the one place texts become token ids. A text longer than `max_length`
    keeps its head, or with `head_tail` its head and its tail; `pairs` gives a second segment (e.g. a target)."""
    labels = np.array(labels, dtype=np.int64)
    if len(texts) == 0:  # an absent split (e.g. no validation set); fast tokenizers fail on []
        return Encoded([], labels)
    if head_tail:
        return Encoded(head_tail_ids(tokenizer, list(texts), max_length), labels)
    out = tokenizer(list(texts), pairs, truncation=True, max_length=max_length, padding=False)
    types = out.get("token_type_ids") if pairs is not None else None
    as_arrays = lambda rows: [np.asarray(row, dtype=np.int64) for row in rows]  # noqa: E731
    return Encoded(as_arrays(out["input_ids"]), labels, as_arrays(types) if types is not None else None)


# Sun et al. 2019 (How to Fine-Tune BERT for Text Classification?) kept the first 128 and the last
# 382 of the 510 tokens BERT has room for: a quarter from the head at any max_length.
HEAD_SHARE = 128 / 510


def head_tail_ids(tokenizer, texts: list[str], max_length: int) -> list[np.ndarray]:
    """Token ids with the model's special tokens; a text too long keeps its head and its tail."""
    # max_length without truncation: all tokens, and no "longer than the maximum" warning
    out = tokenizer(texts, max_length=max_length, truncation=False, return_special_tokens_mask=True)
    return [np.asarray(head_tail(ids, special, max_length), dtype=np.int64)
            for ids, special in zip(out["input_ids"], out["special_tokens_mask"])]


def head_tail(ids: list[int], special: list[int], max_length: int) -> list[int]:
    """Keep the special tokens around the text ([CLS] ... [SEP]) and a quarter of the room from its head.

    At max_length 512 with [CLS] and [SEP]: the first 128 and the last 382 tokens of the text.
    """
    if len(ids) <= max_length:
        return ids
    start = special.index(0)  # the text's first token
    end = len(ids) - special[::-1].index(0)  # one past its last
    room = max_length - (len(ids) - (end - start))
    head = round(room * HEAD_SHARE)
    tail = room - head
    return ids[:start + head] + ids[end - tail:]


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
