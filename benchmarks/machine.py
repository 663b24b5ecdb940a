"""The machine a benchmark ran on, as its results file names it (sendit.hardware's CPU model name)."""
from sendit.hardware import cpu_model  # noqa: F401
