#!/usr/bin/env python3
"""Write a study's results as a markdown table, with the machine and the command that made them.

  python benchmarks/study_table.py runs/methods_minilm benchmarks/results/methods_minilm.md \
      --command "sendit study configs/methods_minilm.yaml" --title "Every method on minilm"
"""
import argparse
import os
from pathlib import Path

import pandas as pd

from machine import cpu_model

COLUMNS = [("method", "method", "{}"), ("train_size", "train n", "{:,.0f}"), ("lr", "lr", "{:g}"), ("batch_size", "batch", "{:.0f}"),
           ("seed", "seed", "{:.0f}"), ("best_val_f1", "val F1", "{:.4f}"), ("best_epoch", "best epoch", "{:g}"),
           ("test_accuracy", "test acc", "{:.4f}"),
           ("test_f1_macro", "macro-F1", "{:.4f}"), ("trainable_params", "trainable params", "{:,.0f}"),
           ("runtime_sec", "train s", "{:.0f}"), ("train_examples_per_s", "train ex/s", "{:.0f}"),
           ("peak_memory_mb", "peak RSS MB (this run)", "{:,.0f}"), ("adapter_mb", "adapter MB", "{:.3g}"),
           ("inference_examples_per_s", "infer ex/s", "{:,.0f}")]


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores"


def cell(value, fmt: str) -> str:
    return "-" if pd.isna(value) else fmt.format(value)


def summary_table(summary: pd.DataFrame) -> list[str]:
    def spread(row, metric: str) -> str:
        std = row[f"{metric}_std"]
        return f"{row[f'{metric}_mean']:.4f}" + ("" if pd.isna(std) else f" ± {std:.4f}")

    def interval(row, metric: str) -> str:
        return f"[{row[f'{metric}_ci_low']:.4f}, {row[f'{metric}_ci_high']:.4f}]"

    lines = ["| method | train n | configuration | seeds | test acc | 95% CI | macro-F1 | 95% CI |",
             "|---|---|---|---|---|---|---|---|"]
    for _, row in summary.iterrows():
        size = "-" if pd.isna(row.get("train_size")) else f"{row['train_size']:,.0f}"
        lines.append(f"| {row['method']} | {size} | {row['config_id']} | {row['seeds']} | {spread(row, 'test_accuracy')} | "
                     f"{interval(row, 'test_accuracy')} | {spread(row, 'test_f1_macro')} | "
                     f"{interval(row, 'test_f1_macro')} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--command", required=True)
    ap.add_argument("--title", required=True)
    ap.add_argument("--notes", default="")
    args = ap.parse_args()
    results = pd.read_csv(args.study / "results.csv")
    lines = [f"# {args.title}", "", f"Machine: {machine()}. Command: `{args.command}`.", "",
             "| " + " | ".join(h for _, h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for _, row in results.iterrows():
        lines.append("| " + " | ".join(cell(row.get(c), f) for c, _, f in COLUMNS) + " |")
    if (args.study / "summary.csv").exists():
        lines += ["", "Each method's best configuration (chosen on validation macro-F1) over its seeds: mean ± "
                  "standard deviation over the seeds, and the 95% percentile-bootstrap interval of the "
                  "seed-averaged score (test examples resampled, 2,000 times):", "",
                  *summary_table(pd.read_csv(args.study / "summary.csv"))]
    if (args.study / "pairwise.csv").exists():
        pairs = pd.read_csv(args.study / "pairwise.csv")
        lines += ["", "McNemar tests between methods (same test set):", ""]
        verdicts = pairs[[c for c in pairs.columns if "verdict" in c][0]]
        sizes = pairs["train_size"] if "train_size" in pairs else pd.Series(float("nan"), index=pairs.index)
        lines += [f"- {'' if pd.isna(n) else f'train n {n:,.0f}: '}{v}" for n, v in zip(sizes, verdicts)]
    if args.notes:
        lines += ["", args.notes]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
