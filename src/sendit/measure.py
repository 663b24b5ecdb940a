"""Cost measurements: peak memory of one run alone, wall time, parameters, size on disk, matmul peaks,
and prediction speed (throughput in batches, latency one text at a time) of any predictor that has
the interface of `artifacts.Predictor` (`deploy.ExportPredictor` has it too).

Memory is measured on the run's device and named by `memory_kind`: the CPU's resident set (RSS),
CUDA's allocated device memory, or the MPS driver's allocation. The RSS high-water mark (VmHWM)
only rises during a process's life; writing 5 to /proc/self/clear_refs resets it (Linux), so each
run of a study measures its own peak.
"""
from __future__ import annotations

import ctypes
import gc
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else float("nan")


def release_freed_memory() -> None:
    """Hand memory freed by earlier runs back to the OS, so it is not counted in the next run's peak.

    glibc keeps freed heap pages mapped; without `malloc_trim` a later run's resident set (and so
    its reset high-water mark) starts above the baseline by whatever earlier runs left behind.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def memory_kind(device: str) -> str:
    """What `peak_memory_mb` measures on `device`."""
    return {"cuda": "cuda allocated", "mps": "mps driver allocated"}.get(device, "cpu rss")


def memory_mb(device: str = "cpu") -> float:
    """Memory in use now on `device`: the baseline that `memory_delta_mb` subtracts from the peak."""
    if device == "cuda":
        return torch.cuda.memory_allocated() / 2**20
    if device == "mps":
        return torch.mps.driver_allocated_memory() / 2**20
    return rss_mb()


def reset_peak_memory(device: str = "cpu") -> bool:
    """Reset the peak counter of `device` after releasing freed memory; False where none can be reset
    (MPS has no peak counter; the CPU's needs Linux)."""
    release_freed_memory()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return True
    if device == "mps":
        torch.mps.empty_cache()
        return False
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory_mb(device: str = "cpu") -> float:
    """Peak memory on `device` since the last reset: CUDA's max allocated; on MPS, what the driver
    holds now (it keeps no peak); on the CPU the resident high-water mark."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    if device == "mps":
        return torch.mps.driver_allocated_memory() / 2**20
    kb = _status_kb("VmHWM")
    if kb is None:  # not Linux: the process-lifetime peak, which macOS reports in bytes, Linux in kB
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kb = maxrss / 1024 if sys.platform == "darwin" else maxrss
    return kb / 1024


def peak_reserved_mb(device: str) -> float | None:
    """CUDA's peak reserved memory (allocated plus the caching allocator's slack); None elsewhere."""
    return torch.cuda.max_memory_reserved() / 2**20 if device == "cuda" else None


class Timer:
    """Wall-clock seconds of a `with` block."""

    def __enter__(self):
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def file_mb(path: Path) -> float:
    return path.stat().st_size / 2**20 if path.exists() else 0.0


def directory_mb(path: Path) -> float:
    """The files directly in `path` (an export: model, tokenizer, manifest)."""
    return sum(file_mb(p) for p in path.iterdir() if p.is_file())


def weights_mb(model: torch.nn.Module) -> float:
    """The model's parameters and buffers as a safetensors file would store them (a tied tensor once):
    what shipping a torch model takes, base weights and adapter included."""
    unique = {t.data_ptr(): t.numel() * t.element_size() for t in model.state_dict().values()}
    return sum(unique.values()) / 2**20


def throughput(predictor, encoded, batch_size: int, precision: str | None,
               repeats: int = 2) -> tuple[np.ndarray, float]:
    """(logits, examples/s of the forward passes alone) over length-sorted batches of `batch_size`: one
    warm-up pass, whose logits are returned, then the best of `repeats` (other load only slows a pass)."""
    logits, _ = predictor.logits(encoded, batch_size, precision)
    seconds = min(predictor.logits(encoded, batch_size, precision)[1] for _ in range(repeats))
    return logits, len(logits) / seconds if seconds else math.inf


def latency_ms(predictor, texts: list[str], precision: str | None) -> np.ndarray:
    """Milliseconds to label each text alone (batch 1), cleaning and tokenising included: what one
    request waits for; after one warm-up text."""
    predictor.predict(texts[:1], 1, precision)
    times = []
    for text in texts:
        with Timer() as timer:
            predictor.predict([text], 1, precision)
        times.append(1000 * timer.seconds)
    return np.asarray(times)


def matmul_gflops(dtype: torch.dtype, size: int = 1024, seconds: float = 0.3) -> float:
    """Square-matmul throughput (GFLOP/s) in `dtype` on the CPU, with torch's thread count: one
    warm-up product, then the fastest of the products that fit in about `seconds` (other load only
    ever slows one down). A time budget rather than a count, because a dtype without fast kernels
    (bf16 on AVX2: ~50x slower here) would otherwise take minutes."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best, spent = float("inf"), 0.0
    while spent < seconds:
        start = time.perf_counter()
        a @ b
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return 2 * size**3 / best / 1e9
