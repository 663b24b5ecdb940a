"""Label new texts with a saved run, cleaned exactly as its training data was."""
from __future__ import annotations

import numpy as np
import pandas as pd

from sendit.batching import encode
from sendit.evaluate import predict_logits, softmax
from sendit.run import batching_for, use_bf16


def predict_texts(model, tokenizer, cfg, texts: list[str], batch_size: int = 64, bf16: bool | None = None,
                  on_batch=None) -> pd.DataFrame:
    """One row per text: label and the probability of every class."""
    from sendit.data.clean import clean_series

    cleaned = clean_series(pd.Series(texts, dtype="string").fillna(""), cfg.data.clean).tolist()
    encoded = encode(tokenizer, cleaned, np.zeros(len(texts), dtype=np.int64), cfg.model.max_length)
    bf16 = use_bf16(cfg) if bf16 is None else bf16
    logits, _ = predict_logits(model, encoded, batch_size, bf16, **vars(batching_for(tokenizer, model)),
                               on_batch=on_batch)
    names = cfg.data.label_names
    probs = softmax(logits)
    frame = pd.DataFrame({"text": texts, "label": [names[i] for i in logits.argmax(-1)]})
    for i, name in enumerate(names):
        frame[f"p_{name}"] = probs[:, i]
    return frame


def read_texts(arguments: list[str], file, text_column: str, stdin) -> list[str]:
    """Texts from arguments ('-' reads stdin, one per line) and/or a file (lines, CSV or JSONL)."""
    from pathlib import Path

    from sendit.data import DataError

    texts = []
    for argument in arguments:
        if argument == "-":
            texts.extend(line for line in stdin.read().splitlines() if line.strip())
        else:
            texts.append(argument)
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        if path.suffix in (".csv", ".tsv", ".jsonl"):
            frame = (pd.read_json(path, lines=True) if path.suffix == ".jsonl"
                     else pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ","))
            if text_column not in frame.columns:
                raise DataError(f"{path}: no column '{text_column}' (columns: {', '.join(map(str, frame.columns))})")
            texts.extend(frame[text_column].astype(str).tolist())
        else:
            texts.extend(line for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return texts
