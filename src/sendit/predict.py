"""Label new texts with a saved run, cleaned exactly as its training data was."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from sendit.artifacts import Predictor
from sendit.evaluate import softmax


def predict_probabilities(model, tokenizer, cfg, texts: list[str], batch_size: int = 64, precision: str | None = None,
                          on_batch=None) -> np.ndarray:
    """Class probabilities, one row per text: cleaned, tokenised and batched by length as in evaluation."""
    return softmax(Predictor(model, tokenizer, cfg).predict(texts, batch_size, precision, on_batch))


def predict_texts(model, tokenizer, cfg, texts: list[str], batch_size: int = 64, precision: str | None = None,
                  on_batch=None) -> pd.DataFrame:
    """One row per text: label and the probability of every class."""
    probs = predict_probabilities(model, tokenizer, cfg, texts, batch_size, precision, on_batch)
    names = cfg.data.label_names
    frame = pd.DataFrame({"text": texts, "label": [names[i] for i in probs.argmax(-1)]})
    for i, name in enumerate(names):
        frame[f"p_{name}"] = probs[:, i]
    return frame


@contextmanager
def progress(total: int, shown: bool):
    """A progress bar on stderr, so piped CSV/JSONL stays clean; drawn only on a terminal, then erased.
    Yields `advance(n)`, the `on_batch` of `predict_texts`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    stderr = Console(stderr=True)
    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=stderr,
                  transient=True, disable=not (shown and stderr.is_terminal)) as bar:
        task = bar.add_task("labelling", total=total)
        yield lambda done: bar.advance(task, done)


def skip_bitsandbytes(run_dirs) -> None:
    """Keep peft from importing bitsandbytes (1-2 s: it compiles kernels on import) unless a run needs it (QLoRA).

    peft imports bitsandbytes whenever it is installed (the `qlora` and `dev` extras); only QLoRA
    runs use it. Call this in a process that only predicts: once peft is imported without it,
    QLoRA runs cannot be loaded in the same process. No-op once peft is imported.
    """
    from sendit.config import ConfigError, load_run
    from sendit.methods import METHODS

    def needs_bitsandbytes(run_dir) -> bool:
        try:
            method = load_run(Path(run_dir) / "config.yaml").method.name
        except (ConfigError, OSError):
            return True  # unreadable: leave everything as is and let `load` report it
        return method not in METHODS or METHODS[method].needs_bitsandbytes

    if "peft" not in sys.modules and not any(needs_bitsandbytes(run_dir) for run_dir in run_dirs):
        sys.modules.setdefault("bitsandbytes", None)  # `import bitsandbytes` now raises ImportError


def read_texts(arguments: list[str], file, text_column: str, stdin) -> list[str]:
    """Texts from arguments ('-' reads stdin, one per line) and/or a file (lines, CSV/TSV or JSONL)."""
    texts = []
    for argument in arguments:
        if argument == "-":
            texts.extend(line for line in stdin.read().splitlines() if line.strip())
        else:
            texts.append(argument)
    if file is not None:
        texts.extend(_read_file(Path(file), text_column))
    return texts


def _read_file(path: Path, text_column: str) -> list[str]:
    """Texts kept verbatim: a tweet reading "NA" or "1.50" stays that string and an empty cell an empty
    text, so output rows line up with the file's rows."""
    from sendit.data import DataError

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix not in (".csv", ".tsv", ".jsonl"):
            return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        frame = (pd.read_json(path, lines=True, dtype=False, convert_dates=False) if path.suffix == ".jsonl"
                 else pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=False))
    except ValueError as err:  # undecodable bytes, malformed JSON or CSV
        raise DataError(f"{path}: cannot read texts ({err})") from None
    if text_column not in frame.columns:
        raise DataError(f"{path}: no column '{text_column}' (columns: {', '.join(map(str, frame.columns))})")
    return frame[text_column].fillna("").astype(str).tolist()
