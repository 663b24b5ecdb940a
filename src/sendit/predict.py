"""Label new texts with a saved run or an export, cleaned exactly as its training data was.

Nothing here imports torch: a run's torch `Predictor` is imported only when a run (not an export) is opened.
"""
from __future__ import annotations

import csv
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from sendit.calibration import softmax
from sendit.deploy import ExportError, ExportPredictor, is_export


def open_predictor(path: str | Path, device: str = "auto", as_trained: bool = False):
    """A run's `artifacts.Predictor` (torch, on `device`; `as_trained`: its adapter not folded) or an
    export's `deploy.ExportPredictor` (no torch, ONNX Runtime on the CPU), by what the directory holds;
    both label texts the same way."""
    if is_export(path):
        if device not in ("auto", "cpu"):
            raise ExportError(f"{path}: an export runs on the CPU (ONNX Runtime); device {device!r} applies to runs")
        return ExportPredictor.from_export(path)
    # Here, not above: opening an export must not import torch.
    from sendit.artifacts import Predictor
    from sendit.hardware import resolve_device

    return Predictor.from_run(path, resolve_device(device, "--device"), as_trained)


def predict_probabilities(predictor, texts: list[str], batch_size: int = 64, precision: str | None = None,
                          on_batch=None) -> np.ndarray:
    """Class probabilities, one row per text: cleaned, tokenised and batched by length as in evaluation."""
    return softmax(predictor.predict(texts, batch_size, precision, on_batch))


def predict_texts(predictor, texts: list[str], batch_size: int = 64, precision: str | None = None,
                  on_batch=None) -> list[dict]:
    """One row per text: text, label and the probability of every class (`p_<label>`). Plain rows, not a
    DataFrame: importing pandas would double the start-up of `sendit predict` on an export."""
    probs = predict_probabilities(predictor, texts, batch_size, precision, on_batch)
    names = predictor.label_names
    return [{"text": text, "label": names[row.argmax()], **{f"p_{name}": float(p) for name, p in zip(names, row)}}
            for text, row in zip(texts, probs)]


def write_rows(rows: list[dict], output: str, stream) -> None:
    """`predict_texts` rows as CSV (with a header) or JSON lines."""
    if output == "csv":
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        stream.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


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
    QLoRA runs cannot be loaded in the same process. No-op once peft is imported, and for exports (no peft).
    """
    run_dirs = [run_dir for run_dir in run_dirs if not is_export(run_dir)]
    if "peft" in sys.modules or not run_dirs:
        return
    from sendit.config import ConfigError, load_run
    from sendit.methods import METHODS

    def needs_bitsandbytes(run_dir) -> bool:
        try:
            method = load_run(Path(run_dir) / "config.yaml").method.name
        except (ConfigError, OSError):
            return True  # unreadable: leave everything as is and let `load` report it
        return method not in METHODS or METHODS[method].needs_bitsandbytes

    if not any(needs_bitsandbytes(run_dir) for run_dir in run_dirs):
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
    import pandas as pd

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
