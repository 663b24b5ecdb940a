"""Atomic file writes: a reader never sees a half-written result, whatever kills the process."""
from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

import numpy as np


def new_file_beside(path: Path, suffix: str) -> Path:
    """A new empty file named after `path` in its folder, with the permissions a plain `open(path, "w")` gives
    (the umask's; tempfile's are 0600, which hid every result, report and download from the user's group)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path` (whose permissions, if it
    exists, the new file keeps)."""
    tmp = new_file_beside(path, ".tmp")
    try:
        write(tmp)
        if path.exists():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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
