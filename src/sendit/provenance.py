"""What made a run: sendit's version and git commit, the library versions, the hardware and threads.

Recorded in each run's metrics.json and shown in the report's footer, so a result can be traced and re-run.
"""
from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "transformers", "peft", "accelerate")


def git_commit(repo: Path = Path(__file__).resolve().parents[2]) -> str | None:
    """HEAD of the checkout sendit runs from, "+dirty" when tracked files differ; None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


@functools.cache  # asked per request by serve, per run by the precision cache
def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def provenance() -> dict:
    """JSON-serialisable: versions, commit, CPU/GPU model, torch threads and the Python version."""
    import torch

    import sendit

    return {
        "sendit": sendit.__version__, "git_commit": git_commit(), "python": platform.python_version(),
        **{package: version(package) for package in LIBRARIES},
        "cpu": cpu_model(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
    }


def describe(record: dict) -> str:
    """One line for a report footer: "sendit 0.1.0 (commit abc1234), torch 2.13.0, ..., on CPU x, 2 threads"."""
    commit = record.get("git_commit")
    libraries = ", ".join(f"{package} {record[package]}" for package in LIBRARIES if record.get(package))
    device = record.get("gpu") or record.get("cpu")
    return (f"sendit {record.get('sendit')}{f' (commit {commit[:12]})' if commit else ''}, {libraries}, "
            f"Python {record.get('python')}, on {device}, {record.get('threads')} torch threads")
