"""Process-wide settings that make CPU training faster and keep its memory bounded.

glibc hands large freed blocks (above its mmap threshold, at most 32 MiB by default) and the
heap's free top (above its trim threshold) straight back to the OS. A training step frees and
re-allocates ~100 MB of activations and gradients (minilm's embedding gradient alone is 47 MB), so
every step faulted ~20-30k fresh pages back in: 12-15% of a minilm full fine-tuning step on this
machine, plus kernel time. With both thresholds at 1 GiB freed memory is kept and reused: under
100 faults per step. Runs of a study still start from a trimmed heap (`measure.release_freed_memory`)
so each one's peak memory is its own.

oneDNN, behind torch's bf16 matmuls on CPU, caches every primitive it builds (1,024 by default), one per
operation and input shape; length-sorted batches give nearly every batch a shape of its own. Up to 128 tokens
the shapes recur and a smaller cache is slower (tweets at 64 tokens: LoRA training -11% with 32 entries, -8%
with 256); past it they outnumber any cache, which then only grows memory: evaluating IMDb's 25,000 test
reviews at 256 tokens reached 10.9 GB (killed beside a study on a 24 GB machine). `bound_primitive_cache`
keeps 32 entries for such lengths: 1.3 GB less at 4,000 reviews, training 0.6 GB less, at the same speed
(benchmarks/results/primitive_cache.md). ONEDNN_PRIMITIVE_CACHE_CAPACITY set by the user wins.
"""
from __future__ import annotations

import ctypes
import os

REUSE_BYTES = 1 << 30
PRIMITIVE_CACHE_CAPACITY = 32
RECURRING_SHAPES_MAX_LENGTH = 128  # up to this many tokens oneDNN's default cache pays (measured at 64 and 256)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where malloc is not glibc's."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, REUSE_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, REUSE_BYTES))


def bound_primitive_cache(max_length: int) -> None:
    """Bound oneDNN's primitive cache for this process and its children when texts run past
    RECURRING_SHAPES_MAX_LENGTH tokens, unless the user set its size; before the process's first matmul
    (oneDNN reads the size once, at its first primitive)."""
    if max_length > RECURRING_SHAPES_MAX_LENGTH:
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(PRIMITIVE_CACHE_CAPACITY))
