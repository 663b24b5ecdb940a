#!/usr/bin/env python3
"""Score `sendit eval -o` prediction files of several runs on one test set: accuracy and macro-F1 with their
95% bootstrap intervals over the test examples, and McNemar's test between each pair (one seed each), as a
markdown table; the prediction files are copied beside it without their texts (row order is the split's:
label, prediction and probabilities to 4 decimals).

  sendit eval RUN_A --dataset imdb:test -o a.csv; sendit eval RUN_B --dataset imdb:test -o b.csv
  python benchmarks/score_predictions.py benchmarks/results/seeds/imdb_sizes/test_all NAME_A=a.csv NAME_B=b.csv
"""
import argparse
import itertools
import json
from pathlib import Path

import pandas as pd

from sendit.io import atomic_write_csv, atomic_write_text
from sendit.stats import bootstrap_ci, discordant, format_p, mcnemar


def read(item: str) -> tuple[str, pd.DataFrame]:
    name, _, path = item.partition("=")
    return name, pd.read_csv(path, keep_default_na=False, na_values=[""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="a folder: scores.md and each NAME's predictions without texts")
    ap.add_argument("predictions", nargs="+", metavar="NAME=FILE")
    args = ap.parse_args()
    runs = dict(read(item) for item in args.predictions)
    labels = next(iter(runs.values()))["label"].to_numpy()
    for name, frame in runs.items():
        if len(frame) != len(labels) or (frame["label"].to_numpy() != labels).any():
            raise SystemExit(f"{name}: not the same test examples as the first file ({len(frame)} vs {len(labels)})")
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [f"{len(labels):,} test examples; 95% intervals: percentile bootstrap over the test examples (2,000 "
             "resamples); one run per model.", "",
             "| model | accuracy | 95% interval | macro-F1 | 95% interval |", "|---|---:|---|---:|---|"]
    scores = {}
    for name, frame in runs.items():
        acc, f1 = (bootstrap_ci(labels, frame["pred"].to_numpy(), metric) for metric in ("accuracy", "f1_macro"))
        scores[name] = {"accuracy": acc._asdict(), "f1_macro": f1._asdict()}
        lines.append(f"| {name} | {acc.estimate:.4f} | [{acc.low:.4f}, {acc.high:.4f}] | {f1.estimate:.4f} | "
                     f"[{f1.low:.4f}, {f1.high:.4f}] |")
        kept = frame[["label", "pred", *(c for c in frame if c.startswith("prob_"))]].round(4)
        atomic_write_csv(args.out / f"{name}_predictions.csv", kept)
    lines += ["", "| pair | only the first right | only the second right | McNemar |", "|---|---:|---:|---|"]
    for (a, frame_a), (b, frame_b) in itertools.combinations(runs.items(), 2):
        correct_a, correct_b = frame_a["pred"].to_numpy() == labels, frame_b["pred"].to_numpy() == labels
        only_a, only_b = discordant(correct_a, correct_b)
        lines.append(f"| {a} vs {b} | {only_a:,} | {only_b:,} | {format_p(mcnemar(correct_a, correct_b)[1])} |")
    atomic_write_text(args.out / "scores.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(scores))


if __name__ == "__main__":
    main()
