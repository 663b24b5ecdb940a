#!/usr/bin/env python3
"""What surrounds the matrix multiplies: the training loop's own cost, threads, and tokenisation.

1. Loop overhead: a 2-layer, 64-wide BERT (random weights, MiniLM's tokenizer) makes each step's
   arithmetic nearly free, so milliseconds per optimizer step measure the loop itself (collation,
   autocast, optimizer and scheduler calls, host syncs, framework bookkeeping). sendit
   (benchmarks/bench_train.py, the `sendit train` path) and the best-configured peer
   (`--padding dynamic --bf16`) alternate over --reps repetitions on the same files.
2. Threads: minilm full fine-tuning with 1 and 2 torch threads, and two 1-thread runs at once (their
   summed examples/s): what a study on 2 cores should do.
3. Tokenisation: seconds to tokenise a study's splits once (sendit caches them for every run of the
   study) against one run's training seconds, for tweets and for IMDb reviews when ./data has them.

Data as `make bench`'s (benchmarks/data). Writes benchmarks/results/loop.md with the machine and commands.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench_vs_peer import LR, PEER, ROOT, prepare_files, result_line, run
from machine import cpu_model


def tiny_model_dir(out: Path) -> Path:
    """A random tiny BERT with MiniLM's tokenizer, saved so both sides load it as a local model."""
    from sendit.models import load_model

    model, tokenizer = load_model("tiny-bert", 2, seed=0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def loop_overhead(files: dict, args, work: Path) -> list[str]:
    model = str(tiny_model_dir(work / "tiny-bert"))
    common = ["--model", model, "--train", str(files["train"]), "--test", str(files["test"]), "--method", "full",
              "--epochs", "1", "--lr", str(LR["full"]), "--batch-size", "32", "--max-length", str(args.max_length),
              "--threads", str(args.threads)]
    sides = {"sendit": [sys.executable, "benchmarks/bench_train.py", *common],
             "peer_best": [sys.executable, str(PEER), *common, "--padding", "dynamic", "--bf16"]}
    records = {side: [] for side in sides}
    for rep in range(args.reps):
        for side in (list(sides) if rep % 2 == 0 else list(sides)[::-1]):
            records[side].append(run(sides[side]))
            print("loop", side, records[side][-1], flush=True)
    steps = int(np.ceil(records["sendit"][0]["train_examples"] / 32))
    per_step = {side: np.mean([r["train_s"] for r in rs]) / steps * 1000 for side, rs in records.items()}
    infer = {side: np.mean([r["infer_examples_per_s"] for r in rs]) for side, rs in records.items()}
    return ["## 1. The loop's own cost (tiny model: arithmetic nearly free)", "",
            f"tiny BERT (2 layers, hidden 64, random), full fine-tuning, {steps} steps of 32, mean of {args.reps}.", "",
            "| side | ms per training step | train ex/s | infer ex/s |", "|---|---|---|---|",
            *(f"| {side} | {per_step[side]:.2f} | {np.mean([r['train_examples_per_s'] for r in records[side]]):.0f} | "
              f"{infer[side]:.0f} |" for side in sides),
            "", f"Peer / sendit time per step: {per_step['peer_best'] / per_step['sendit']:.2f}x.", "",
            f"- sendit: `{' '.join(sides['sendit'][1:])}`", f"- peer: `{' '.join(sides['peer_best'][1:])}`", ""]


def threads(files: dict, args) -> list[str]:
    def command(n_threads: int) -> list[str]:
        return [sys.executable, "benchmarks/bench_train.py", "--model", args.model, "--train", str(files["small"]),
                "--test", str(files["test"]), "--method", "full", "--epochs", "1", "--lr", str(LR["full"]),
                "--batch-size", "32", "--max-length", str(args.max_length), "--threads", str(n_threads)]

    rows = {"1 thread": [], "2 threads": [], "two 1-thread runs at once (sum)": []}
    for rep in range(args.reps):
        rows["2 threads"].append(run(command(2))["train_examples_per_s"])
        rows["1 thread"].append(run(command(1))["train_examples_per_s"])
        pair = [subprocess.Popen(command(1), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(2)]
        outputs = [(p, *p.communicate()) for p in pair]
        rows["two 1-thread runs at once (sum)"].append(sum(
            result_line(command(1), p.returncode, out, err)["train_examples_per_s"] for p, out, err in outputs))
        print("threads", {k: v[-1] for k, v in rows.items()}, flush=True)
    return ["## 2. Threads (minilm, full fine-tuning)", "",
            f"{len(pd.read_csv(files['small'])):,} tweets, 1 epoch, batch 32, mean of {args.reps}.", "",
            "| setting | train ex/s (total) |", "|---|---|",
            *(f"| {name} | {np.mean(values):.1f} |" for name, values in rows.items()), "",
            f"- `{' '.join(command(2)[1:])}` (and `--threads 1`)", ""]


def tokenisation(files: dict, args) -> list[str]:
    from sendit.batching import encode
    from sendit.config import DataConfig
    from sendit.data import prepare
    from sendit.models import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    sets = {"Sentiment140 (quickstart, 20k tweets, 64 tokens)": (DataConfig(dataset="sentiment140", seed=42), 64)}
    if (ROOT / "data" / "imdb").exists():
        sets["IMDb (50k reviews, 512 tokens)"] = (DataConfig(dataset="imdb", seed=42), 512)
    lines = ["## 3. Tokenisation, once per study", "",
             "| data | texts | tokenise all splits, s | per 1,000 texts, s |", "|---|---|---|---|"]
    for name, (data, max_length) in sets.items():
        splits = prepare(data)
        texts = pd.concat([splits.train, splits.val, splits.test]).text.tolist()
        start = time.perf_counter()
        encode(tokenizer, texts, np.zeros(len(texts), dtype=np.int64), max_length)
        seconds = time.perf_counter() - start
        lines.append(f"| {name} | {len(texts):,} | {seconds:.1f} | {seconds / len(texts) * 1000:.3f} |")
        print("tokenise", name, seconds, flush=True)
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loop.md"))
    args = ap.parse_args()
    files = prepare_files(ROOT / "benchmarks" / "data", 6000, 1000)
    cpu = cpu_model()
    with tempfile.TemporaryDirectory() as work:
        lines = ["# Around the matrix multiplies: loop, threads, tokenisation", "",
                 f"Machine: {cpu}, {os.cpu_count()} cores. Command: `python benchmarks/bench_loop.py "
                 f"--reps {args.reps}`.", "",
                 *loop_overhead(files, args, Path(work)), *threads(files, args), *tokenisation(files, args)]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
