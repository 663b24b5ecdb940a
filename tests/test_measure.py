"""Per-run peak memory: a reset forgets what earlier work allocated and freed; the process settings that bound it."""
import os
import subprocess
import sys

import pytest

from sendit.host import PRIMITIVE_CACHE_CAPACITY, RECURRING_SHAPES_MAX_LENGTH
from sendit.measure import peak_memory_mb, release_freed_memory, reset_peak_memory, rss_mb

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux")


def test_peak_after_reset_ignores_memory_freed_before_it():
    release_freed_memory()  # what earlier tests freed (kept by keep_freed_memory) is not the baseline
    baseline = rss_mb()
    blocks = [bytearray(64 * 1024) for _ in range(4000)]  # ~250 MB in small heap blocks
    pinned = blocks[::10]  # every tenth stays: the freed rest are holes glibc does not trim by itself
    del blocks
    assert peak_memory_mb() > baseline + 200
    assert reset_peak_memory()
    assert peak_memory_mb() < baseline + 100, "freed heap memory still counted after the reset"
    kept = bytearray(150 * 2**20)
    kept[::4096] = b"x" * len(kept[::4096])  # touch every page
    assert peak_memory_mb() > baseline + 140
    del pinned


def test_freed_memory_is_kept_for_reuse():
    """A 64 MiB tensor allocated and freed 20 times: with glibc's defaults its 16,384 pages fault in
    every time; after `keep_freed_memory` the freed block is reused once the heap has grown to hold
    it (after 5-9 rounds here), so the last rounds fault none. Each mode in a fresh process."""
    code = ("import resource, statistics, sys, torch\n"
            "from sendit.host import keep_freed_memory\n"
            "assert sys.argv[1] == 'default' or keep_freed_memory()\n"
            "faults = []\n"
            "for _ in range(20):\n"
            "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "    torch.ones(2**24).sum()\n"
            "    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
            "print(statistics.median(faults[-8:]))\n")
    default, kept = (float(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                          check=True).stdout) for mode in ("default", "keep"))
    assert default > 10_000 and kept < 1_000


def test_the_primitive_cache_is_bounded_for_long_texts_only_and_never_against_the_users_size():
    """Past 128 tokens oneDNN's cache of a primitive per batch shape only grows memory (gigabytes scoring IMDb);
    up to 128 the shapes recur and the default cache is faster. A size the user set stays. Fresh processes."""
    code = ("import os, sys\nfrom sendit.host import bound_primitive_cache\n"
            "bound_primitive_cache(int(sys.argv[1]))\nprint(os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY'))\n")
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}

    def capacity(max_length: int, **extra) -> str:
        return subprocess.run([sys.executable, "-c", code, str(max_length)], env={**env, **extra},
                              capture_output=True, text=True, check=True).stdout.strip()

    assert capacity(256) == str(PRIMITIVE_CACHE_CAPACITY)
    assert capacity(RECURRING_SHAPES_MAX_LENGTH) == "None"
    assert capacity(256, ONEDNN_PRIMITIVE_CACHE_CAPACITY="1024") == "1024"
