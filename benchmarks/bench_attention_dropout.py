#!/usr/bin/env python3
"""Training speed with and without attention-probability dropout, against text length.

With dropout on the attention probabilities, torch's scaled-dot-product attention on a CPU cannot use
its fused kernel and falls back to plain matrix multiplies, softmax and a dropout mask of
batch x heads x length x length random numbers; with `model.attention_dropout=0` it takes the fused
kernel. Which is faster depends on the length (the mask grows with its square) and on the CPU, so
this measures both at several lengths on IMDb reviews cut to exactly that many tokens (every batch
full length), the same number of tokens per run, alternating the order over --reps repetitions.
`benchmarks/bench_train.py` (the `sendit train` code path) runs each variant. Writes
benchmarks/results/attention_dropout.md with the machine and the commands.

  python benchmarks/bench_attention_dropout.py --lengths 64,128,256,512 --methods full,lora
"""
import argparse
import math
import sys
from pathlib import Path

import numpy as np

from bench_vs_peer import LR, ROOT, run
from machine import cpu_model

OVERRIDE = "model.attention_dropout=0"


def imdb_train():
    """IMDb's training reviews, read and cleaned once for every length."""
    from sendit.config import DataConfig
    from sendit.data.datasets import split_of

    return split_of(DataConfig(dataset="imdb", path=str(ROOT / "data" / "imdb")), "train")[0][["text", "label"]]


def review_files(reviews, out: Path, rows: int, length: int) -> dict[str, Path]:
    """`rows` reviews of at least `length` words (so at least as many tokens: every batch is full) and 32 more
    to test on, a fixed sample, as `text,label` CSVs."""
    frame = reviews[reviews.text.str.split().str.len() >= length].sample(n=rows + 32, random_state=0)
    out.mkdir(parents=True, exist_ok=True)
    files = {"train": out / "train.csv", "test": out / "test.csv"}
    frame.iloc[:rows].to_csv(files["train"], index=False)
    frame.iloc[rows:].to_csv(files["test"], index=False)
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--methods", default="full,lora")
    ap.add_argument("--lengths", default="64,128,256,512")
    ap.add_argument("--tokens", type=int, default=40960, help="training tokens per run (rows = tokens / length)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "attention_dropout.md"))
    args = ap.parse_args()
    lengths = [int(length) for length in args.lengths.split(",")]
    reviews, speeds, commands = imdb_train(), {}, {}
    for length in lengths:
        files = review_files(reviews, ROOT / "benchmarks" / "data" / "attention_dropout" / str(length),
                             math.ceil(args.tokens / length), length)
        for method in args.methods.split(","):
            base = [sys.executable, "benchmarks/bench_train.py", "--model", args.model, "--train", str(files["train"]),
                    "--test", str(files["test"]), "--method", method, "--epochs", "1",
                    "--lr", str(LR[method]), "--batch-size", str(args.batch_size), "--max-length", str(length),
                    "--threads", str(args.threads)]
            commands[(length, method)] = " ".join(base)
            for rep in range(args.reps):
                for dropout_off in ((False, True) if rep % 2 == 0 else (True, False)):
                    record = run(base + (["--set", OVERRIDE] if dropout_off else []))
                    speeds.setdefault((length, method, dropout_off), []).append(record["train_examples_per_s"])
                    print(length, method, "off" if dropout_off else "on", record["train_examples_per_s"], flush=True)
    write_markdown(Path(args.out), speeds, commands, args)


def write_markdown(path: Path, speeds: dict, commands: dict, args) -> None:
    lines = ["# Attention-probability dropout and training speed, by text length", "",
             f"Machine: {cpu_model()}, torch threads {args.threads}, sendit's `auto` precision. IMDb training reviews "
             f"cut to each length (every batch full), {args.tokens:,} training tokens per run, batch "
             f"{args.batch_size}, {args.reps} alternating repetitions.", "",
             "| length | method | train ex/s, dropout 0.1 (the model's) | train ex/s, `attention_dropout=0` | "
             "speed-up of dropout 0 |", "|---:|---|---:|---:|---:|"]
    for length, method in commands:
        on, off = (np.mean(speeds[(length, method, dropout_off)]) for dropout_off in (False, True))
        lines.append(f"| {length} | {method} | {on:.1f} | {off:.1f} | {off / on:.2f}x |")
    lines += ["", "Commands (dropout 0 adds `--set model.attention_dropout=0`):", "",
              *(f"- {length} tokens, {method}: `{command}`" for (length, method), command in commands.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
