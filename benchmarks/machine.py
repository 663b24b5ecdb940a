"""The machine a benchmark ran on, as its results file names it (sendit.hardware's CPU model name)."""
from sendit.provenance import cpu_model  # noqa: F401
