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
    add_arguments(ap, ROOT / "benchmarks" / "results" / "attention_dropout.md")
    args = ap.parse_args()
    variants = {"model's": [], "off": ["--set", OVERRIDE]}
    speeds, commands = alternate(args, variants)
    write_markdown(Path(args.out), speeds, commands, args, "Attention-probability dropout and training speed, by "
                   "text length", variants, ("train ex/s, dropout 0.1 (the model's)", "train ex/s, "
                                             "`attention_dropout=0`", "speed-up of dropout 0"),
                   f"dropout 0 adds `--set {OVERRIDE}`")


def add_arguments(ap: argparse.ArgumentParser, out: Path) -> None:
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--methods", default="full,lora")
    ap.add_argument("--lengths", default="64,128,256,512")
    ap.add_argument("--tokens", type=int, default=40960, help="training tokens per run (rows = tokens / length)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(out))


def alternate(args, variants: dict, method_sets: dict | None = None) -> tuple[dict, dict]:
    """Train examples/s of each of the two `variants` (key -> extra `bench_train.py` arguments) for every
    length and method, alternating their order over args.reps repetitions. `method_sets`: extra arguments
    of a method name that is not one of bench_train's (e.g. sendit's own LoRA)."""
    method_sets = method_sets or {}
    lengths = [int(length) for length in args.lengths.split(",")]
    first, second = variants
    reviews, speeds, commands = imdb_train(), {}, {}
    for length in lengths:
        files = review_files(reviews, ROOT / "benchmarks" / "data" / "attention_dropout" / str(length),
                             math.ceil(args.tokens / length), length)
        for method in args.methods.split(","):
            base_method = method.split("-")[0]
            base = [sys.executable, "benchmarks/bench_train.py", "--model", args.model, "--train", str(files["train"]),
                    "--test", str(files["test"]), "--method", base_method, "--epochs", "1",
                    "--lr", str(LR[base_method]), "--batch-size", str(args.batch_size), "--max-length", str(length),
                    "--threads", str(args.threads), *method_sets.get(method, [])]
            commands[(length, method)] = " ".join(base)
            for rep in range(args.reps):
                for variant in ((first, second) if rep % 2 == 0 else (second, first)):
                    record = run(base + variants[variant])
                    speeds.setdefault((length, method, variant), []).append(record["train_examples_per_s"])
                    print(length, method, variant, record["train_examples_per_s"], flush=True)
    return speeds, commands


def write_markdown(path: Path, speeds: dict, commands: dict, args, title: str, variants: dict, headers: tuple,
                   commands_note: str) -> None:
    """The table of train ex/s of the two `variants` (key -> its extra arguments; the second is the
    change measured) and the second's speed-up, by length and method, with the machine and commands."""
    before, after = variants
    lines = [f"# {title}", "",
             f"Machine: {cpu_model()}, torch threads {args.threads}, sendit's `auto` precision. IMDb training reviews "
             f"cut to each length (every batch full), {args.tokens:,} training tokens per run, batch "
             f"{args.batch_size}, {args.reps} alternating repetitions.", "",
             "| length | method | " + " | ".join(headers) + " |", "|---:|---|---:|---:|---:|"]
    for length, method in commands:
        slow, fast = (np.mean(speeds[(length, method, variant)]) for variant in (before, after))
        lines.append(f"| {length} | {method} | {slow:.1f} | {fast:.1f} | {fast / slow:.2f}x |")
    lines += ["", f"Commands ({commands_note}):", "",
              *(f"- {length} tokens, {method}: `{command}`" for (length, method), command in commands.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
