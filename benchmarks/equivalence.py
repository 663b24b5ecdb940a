#!/usr/bin/env python3
"""Two studies of the same config, run by two versions of sendit: are their results identical?

Compares every results.csv column except timings and memory, and each run's predictions.csv and
epoch_log.csv byte for byte (as frames). Exit code 1 on any difference.
"""
import sys
from pathlib import Path

import pandas as pd

MEASURED = {"runtime_sec", "peak_memory_mb", "inference_time_sec", "train_examples_per_s", "memory_delta_mb",
            "inference_examples_per_s", "peak_reserved_mb"}


def main(before: Path, after: Path) -> int:
    old = pd.read_csv(before / "results.csv").set_index("run_id")
    new = pd.read_csv(after / "results.csv").set_index("run_id")
    columns = [c for c in old.columns if c in new.columns and c not in MEASURED]
    differing = [c for c in columns if not new.loc[old.index, c].equals(old[c])]
    print(f"{len(old)} runs, {len(columns)} results columns compared; differing: {differing or 'none'}")
    print(f"columns only after: {sorted(set(new.columns) - set(old.columns))}")
    same_files = True
    for run in old.index:
        for name in ("predictions.csv", "epoch_log.csv"):
            same = pd.read_csv(before / "runs" / run / name).equals(pd.read_csv(after / "runs" / run / name))
            same_files &= same
            print(f"{run} {name}: {'identical' if same else 'DIFFERENT'}")
    return 0 if not differing and same_files else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
