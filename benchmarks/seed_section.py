#!/usr/bin/env python3
"""One section of benchmarks/results/seeds.md: a study's selected configurations (mean ± std over seeds, 95%
intervals, cost) beside a seed study's published numbers, with a verdict derived from the interval.

  python benchmarks/seed_section.py benchmarks/results/seeds/imdb_methods --metric test_accuracy \
      --theirs full=0.865 lora=0.856 qlora=0.848 ia3=0.843

The verdict compares the seed's number with the 95% interval of sendit's seed-averaged score that holds both
sources of chance (summary.csv's `*_ci_seeds_*`, `sendit.stats.with_seeds`): the test sample (the percentile
bootstrap over test examples, `*_ci_*`) and the seeds (Student's t over the seeds' scores, k - 1 degrees of
freedom), their half-widths added in quadrature. Inside it, no significant difference; above or below it,
worse or better, by how much. With one seed only the test sample's part is known, and the verdict says so. The
bootstrap interval alone is the one for another test set with these same trained models; the seed spread is what
another run of the method adds.
Only the two numbers' difference is judged: the seed's own spread is unknown (one run per method).
"""
import argparse
from pathlib import Path

import pandas as pd

METRICS = {"test_accuracy": "accuracy", "test_f1_macro": "macro-F1", "test_recall_macro": "macro-recall"}


def parse_theirs(items: list[str]) -> dict[str, float]:
    theirs = {}
    for item in items:
        method, _, value = item.partition("=")
        theirs[method] = float(value)
    return theirs


def verdict(theirs: float, low: float, high: float, mean: float) -> str:
    points = 100 * (mean - theirs)
    if low <= theirs <= high:
        return f"no significant difference ({points:+.1f} points; theirs inside our 95% interval)"
    side = "better" if points > 0 else "worse"
    return f"{side} by {abs(points):.1f} points (theirs outside our 95% interval)"


def section(study: Path, metric: str, theirs: dict[str, float]) -> list[str]:
    summary = pd.read_csv(study / "summary.csv")
    name = METRICS[metric]
    sized = "train_size" in summary and summary.train_size.nunique() > 1
    if sized:  # each method's sizes in order (summary.csv lists run ids alphabetically: n10000 before n5000)
        first = {method: i for i, method in enumerate(dict.fromkeys(summary["method"]))}
        summary = summary.sort_values(["method", "train_size"],
                                      key=lambda c: c.map(first) if c.name == "method" else c)
    lines = [f"| method |{' train n |' if sized else ''} configuration | seeds | {name} (mean ± std) | 95% CI, test "
             f"| 95% CI, seeds + test | other (mean) | train s | peak RSS MB | theirs | verdict |",
             "|---|" + ("---|" if sized else "") + "---|---|---|---|---|---|---|---|---|---|"]
    other = "test_f1_macro" if metric != "test_f1_macro" else "test_accuracy"
    for _, row in summary.iterrows():
        std = "" if pd.isna(row[f"{metric}_std"]) else f" ± {100 * row[f'{metric}_std']:.1f}"
        test_only = f"[{100 * row[f'{metric}_ci_low']:.1f}, {100 * row[f'{metric}_ci_high']:.1f}]"
        low, high = row[f"{metric}_ci_seeds_low"], row[f"{metric}_ci_seeds_high"]
        both = f"[{100 * low:.1f}, {100 * high:.1f}]" if row["n_seeds"] > 1 else "(one seed)"
        key = f"{row['method']}@{row['train_size']:.0f}" if sized else row["method"]
        mine = theirs.get(key)
        said = ("-", "-") if mine is None else (f"{100 * mine:.1f}", verdict(mine, low, high, row[f"{metric}_mean"])
                                                + (" (test sample only: one seed)" if row["n_seeds"] < 2 else ""))
        size = f" {row['train_size']:,.0f} |" if sized else ""
        lines.append(f"| {row['method']} |{size} {row['config_id']} | {row['seeds']} | "
                     f"{100 * row[f'{metric}_mean']:.1f}{std} | {test_only} | {both} | {METRICS[other]} "
                     f"{100 * row[f'{other}_mean']:.1f} | {row['runtime_sec_mean']:.0f} | "
                     f"{row['peak_memory_mb_mean']:,.0f} | {said[0]} | {said[1]} |")
    if (study / "pairwise.csv").exists():
        pairs = pd.read_csv(study / "pairwise.csv")
        if sized:
            pairs = pairs.sort_values("train_size", kind="stable")
        lines += ["", "Paired tests between the selected configurations on the same test set, over the seeds both ran "
                  "(McNemar's extension to the seed-averaged accuracy; McNemar itself with one seed): "
                  + "; ".join(pairs["verdict"] + (" at " + pairs["train_size"].map("{:,.0f}".format) + " examples"
                                                  if sized else "")) + "."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", type=Path, help="A study directory (summary.csv, pairwise.csv)")
    ap.add_argument("--metric", choices=METRICS, default="test_accuracy")
    ap.add_argument("--theirs", nargs="*", default=[],
                    help="METHOD=VALUE (METHOD@SIZE=VALUE for a size study), as fractions, e.g. lora=0.856")
    args = ap.parse_args()
    print("\n".join(section(args.study, args.metric, parse_theirs(args.theirs))))


if __name__ == "__main__":
    main()
