"""Atomic file writes: a reader never sees a half-written result, whatever kills the process."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_csv(path: Path, frame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def atomic_write_json(path: Path, value) -> None:
    """`value` as JSON (indent 1), numpy integers and floats as plain numbers (a NaN one as null)."""
    atomic_write_text(path, json.dumps(value, indent=1, default=_json_value))


def _json_value(value):
    if isinstance(value, (np.integer, np.floating)):
        return None if np.isnan(value) else value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
