"""Cost measurements: peak memory of one run alone, wall time, parameters, size on disk.

The RSS high-water mark (VmHWM) only rises during a process's life; writing 5 to
/proc/self/clear_refs resets it (Linux), so each run of a study measures its own peak.
"""
from __future__ import annotations

import resource
import time
from pathlib import Path

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


def reset_peak_memory() -> bool:
    """Reset the peak-RSS (and CUDA peak) counters; False where the OS cannot."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory_mb() -> float:
    """Peak resident memory since the last reset (CUDA: max allocated on the device)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    kb = _status_kb("VmHWM")
    if kb is None:  # not Linux: the process-lifetime peak (kB on Linux, bytes on macOS)
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


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


def bf16_supported() -> bool:
    """Whether bf16 autocast pays off: GPUs with bf16, and CPUs with AMX tiles.

    Measured on an AVX512-BF16 CPU without AMX (AMD EPYC, 2 threads, minilm): bf16 autocast made
    a LoRA all-linear training step ~12x slower and full fine-tuning ~4x slower than fp32, and
    inference 0.9x; on a Sapphire Rapids Xeon with AMX it is 1.4-2.5x faster (../shared/MEASURED.md).
    """
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags
