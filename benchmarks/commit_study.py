#!/usr/bin/env python3
"""Copy a finished (or partly finished) study's small outputs into the repository, then re-make its results,
statistics and report from them: what `benchmarks/results/seeds/<study>/` holds.

  python benchmarks/commit_study.py /work/studies/seeds/imdb_methods benchmarks/results/seeds/imdb_methods --cut 200

Copied: config.yaml, the search journal and a distillation's distill_summary.csv (its inference speeds need the
models) if any, and each finished run's files except weights (*.safetensors); unfinished runs are left out. What
the repository adds to the target is kept: STATUS.md (what is still running, written by hand) and test_all/
(benchmarks/score_predictions.py's scores on a whole published test split). `--cut N` shortens texts longer than N characters in the prediction files (IMDb
reviews: the repository keeps a tenth of the size); predictions and metrics are unchanged.
"""
import argparse
import shutil
from pathlib import Path

import pandas as pd

from sendit.io import atomic_write_csv
from sendit.report import write_report
from sendit.results import is_done, write_results
from sendit.search import JOURNAL

KEPT = ("config.yaml", JOURNAL, "distill_summary.csv")
ADDED = ("STATUS.md", "test_all")


def copy_study(source: Path, target: Path) -> int:
    """The study's small files into `target` (emptied first but for ADDED); returns the number of finished
    runs copied."""
    for path in target.glob("*"):
        if path.is_dir() and path.name not in ADDED:
            shutil.rmtree(path)
        elif path.name not in ADDED:
            path.unlink()
    (target / "runs").mkdir(parents=True)
    for name in KEPT:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    runs = [run for run in sorted((source / "runs").iterdir()) if is_done(run)]
    for run in runs:
        (target / "runs" / run.name).mkdir()
        for path in run.iterdir():
            if path.is_file() and path.suffix != ".safetensors":
                shutil.copy2(path, target / "runs" / run.name / path.name)
    return len(runs)


def cut_texts(target: Path, limit: int) -> None:
    for path in target.glob("runs/*/predictions*.csv"):
        frame = pd.read_csv(path, keep_default_na=False)
        long = frame["text"].str.len() > limit
        frame.loc[long, "text"] = frame.loc[long, "text"].str[:limit] + "..."
        atomic_write_csv(path, frame)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="The study's directory (its output_dir/name)")
    ap.add_argument("target", type=Path, help="Where in the repository, e.g. benchmarks/results/seeds/<study>")
    ap.add_argument("--cut", type=int, default=0, help="Cut prediction texts longer than this many characters")
    args = ap.parse_args()
    copied = copy_study(args.source, args.target)
    if args.cut:
        cut_texts(args.target, args.cut)
    write_results(args.target)
    write_report(args.target)  # statistics too, in the config's method order, as `sendit report` writes them
    print(f"{copied} finished runs of {args.source} -> {args.target} (results, statistics and report re-made)")


if __name__ == "__main__":
    main()
