"""`make gpu-check` on a machine without CUDA: it says so, fails, and writes no results file."""
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def test_without_cuda_it_exits_1_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu.md"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hides any GPU, so the test means the same everywhere
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "gpu-check: no CUDA device" in done.stderr and "gpu.md not written" in done.stderr
    assert not out.exists() and not (tmp_path / "work").exists()
