"""What the model reads: texts as token ids the way the data config says.

Every place that tokenizes a run's texts (training splits, `sendit eval`, `sendit predict`,
distillation) goes through `encode_inputs`, so a target is always fed the same way (pair or inline)
and a long review is always truncated the same way (head, or head+tail).
"""
from __future__ import annotations

import numpy as np

from sendit.batching import Encoded, encode
from sendit.config import DataConfig
from sendit.data.errors import DataError
from sendit.data.sources import SOURCES
from sendit.data.target import as_pairs

TARGET_MODES = ("pair", "inline")
TRUNCATIONS = ("head", "head_tail")
# Sun et al. 2019 (How to Fine-Tune BERT for Text Classification?) kept the first 128 and the last
# 382 of the 510 tokens BERT has room for: a quarter from the head at any max_length.
HEAD_SHARE = 128 / 510


def encode_inputs(tokenizer, texts: list[str], labels, data: DataConfig, max_length: int) -> Encoded:
    """Token ids of `texts` for a model trained on `data`: target as pair or inline; head or head+tail."""
    if data.target_mode not in TARGET_MODES:
        raise DataError(f"data.target_mode: {data.target_mode!r}, expected one of {', '.join(TARGET_MODES)}")
    if data.truncation not in TRUNCATIONS:
        raise DataError(f"data.truncation: {data.truncation!r}, expected one of {', '.join(TRUNCATIONS)}")
    texts, pairs = list(texts), None
    if data.target_mode == "pair" and SOURCES[data.dataset].targeted:
        texts, pairs = as_pairs(texts)
    if data.truncation == "head":
        return encode(tokenizer, texts, labels, max_length, pairs=pairs)
    if pairs is not None:
        raise DataError("data.truncation: head_tail keeps both ends of one long text; with a sentence-pair "
                        "input (data.target_mode: pair) use truncation: head, or target_mode: inline")
    return Encoded(head_tail_ids(tokenizer, texts, max_length), np.array(labels, dtype=np.int64))


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
