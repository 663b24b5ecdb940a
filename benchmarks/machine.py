"""The machine a benchmark ran on, as its results file names it."""
import platform
import subprocess


def cpu_model() -> str:
    """lscpu's model name (e.g. "AMD EPYC ..."), else what the platform module reports."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        lines = []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")),
                platform.processor() or platform.machine() or "?")
