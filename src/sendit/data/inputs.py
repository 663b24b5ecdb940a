"""What the model reads: texts as token ids the way the data config says.

Every place that tokenizes a run's texts (training splits, `sendit eval`, `sendit predict`,
distillation) goes through `encode_inputs`, so a target is always fed the same way (pair or inline)
and a long review is always truncated the same way (head, or head+tail); texts become token ids
only through `sendit.batching.encode`.
"""
from __future__ import annotations

from sendit.batching import Encoded, encode
from sendit.config import DataConfig
from sendit.data.errors import DataError
from sendit.data.sources import SOURCES
from sendit.data.target import as_pairs

TARGET_MODES = ("pair", "inline")
TRUNCATIONS = ("head", "head_tail")


def encode_inputs(tokenizer, texts: list[str], labels, data: DataConfig, max_length: int) -> Encoded:
    """Token ids of `texts` for a model trained on `data`: target as pair or inline; head or head+tail."""
    if data.target_mode not in TARGET_MODES:
        raise DataError(f"data.target_mode: {data.target_mode!r}, expected one of {', '.join(TARGET_MODES)}")
    if data.truncation not in TRUNCATIONS:
        raise DataError(f"data.truncation: {data.truncation!r}, expected one of {', '.join(TRUNCATIONS)}")
    texts, pairs = list(texts), None
    if data.target_mode == "pair" and SOURCES[data.dataset].targeted:
        texts, pairs = as_pairs(texts)
    head_tail = data.truncation == "head_tail"
    if head_tail and pairs is not None:
        raise DataError("data.truncation: head_tail keeps both ends of one long text; with a sentence-pair "
                        "input (data.target_mode: pair) use truncation: head, or target_mode: inline")
    return encode(tokenizer, texts, labels, max_length, pairs=pairs, head_tail=head_tail)
