"""Per-run peak memory: a reset forgets what earlier work allocated and freed."""
import sys

import pytest

from sendit.measure import peak_memory_mb, reset_peak_memory, rss_mb

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux")


def test_peak_after_reset_ignores_memory_freed_before_it():
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
