"""Per-run peak memory: a reset forgets what earlier work allocated and freed."""
import subprocess
import sys

import pytest

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
