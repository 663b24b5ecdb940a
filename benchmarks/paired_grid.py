#!/usr/bin/env python3
"""Two values of one grid key, paired seed by seed on the same test examples: a markdown table.

For a study whose grid varies one key over two values (e.g. `train.fast_dropout: [true, false]`) with the
same seeds: per method and seed, validation and test scores of both values, the test examples only one of
them gets right, McNemar's p; then per method the means and sendit's paired test over the seeds
(`sendit.stats.paired_test`: a sign-flip test on the examples' seed-summed differences).

  python benchmarks/paired_grid.py /work/studies/tuned/fast_dropout_minilm fast_dropout true false
"""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from sendit.stats import discordant, format_p, mcnemar, paired_test


def correct(study: Path, run_id: str) -> np.ndarray:
    predictions = pd.read_csv(study / "runs" / run_id / "predictions.csv")
    return (predictions["label"] == predictions["pred"]).to_numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", type=Path)
    ap.add_argument("key", help="the grid key, as it stands in the run ids (e.g. fast_dropout)")
    ap.add_argument("first", help="its value measured against (e.g. true)")
    ap.add_argument("second", help="its other value (e.g. false)")
    args = ap.parse_args()
    results = pd.read_csv(args.study / "results.csv")
    lines = [f"| method | {args.key} | seed | val macro-F1 % | test accuracy % | right only with {args.first} / "
             f"only with {args.second} | McNemar p |", "|---|---:|---:|---:|---:|---:|---:|"]
    verdicts = []
    for method, runs in results.groupby("method", sort=False):
        pairs = {}
        for value in (args.first, args.second):
            chosen = runs[runs.run_id.str.contains(f"-{args.key}{value}-")].sort_values("seed")
            pairs[value] = chosen
            for row in chosen.itertuples():
                lines.append(f"| {method} | {value} | {row.seed} | {100 * row.best_val_f1:.2f} | "
                             f"{100 * row.test_accuracy:.2f} | | |")
        first, second = pairs[args.first], pairs[args.second]
        if list(first.seed) != list(second.seed):
            raise SystemExit(f"{method}: seeds {list(first.seed)} vs {list(second.seed)}: not paired")
        a = np.stack([correct(args.study, run_id) for run_id in first.run_id])
        b = np.stack([correct(args.study, run_id) for run_id in second.run_id])
        for seed, seed_a, seed_b in zip(first.seed, a, b):
            only_a, only_b = discordant(seed_a, seed_b)
            lines.append(f"| {method} | pair | {seed} | | | {only_a} / {only_b} | {format_p(mcnemar(seed_a, seed_b)[1])} |")
        _, p = paired_test(a, b)
        verdicts.append(f"- {method}: validation {100 * first.best_val_f1.mean():.2f} ({args.first}) vs "
                        f"{100 * second.best_val_f1.mean():.2f} ({args.second}); test {100 * first.test_accuracy.mean():.2f}"
                        f" vs {100 * second.test_accuracy.mean():.2f}, "
                        f"{100 * (first.test_accuracy.mean() - second.test_accuracy.mean()):+.2f} points, "
                        f"paired over {len(a)} seeds {format_p(p)}")
    print("\n".join(lines + [""] + verdicts))


if __name__ == "__main__":
    main()
