#!/usr/bin/env python3
"""`make bench-ablation`: each of sendit's training speed-ups measured alone, by turning it off.

For each method, `benchmarks/bench_train.py` (the `sendit train` code path) runs with all defaults
and then with exactly one switch changed through a config override, alternating the order over
--reps repetitions so drift hits every variant alike: a default speed-up turned off, or an option
that is off by default (token budgets, no attention dropout) turned on. The speed-up of a switch
is the examples/s with it over those without it; accuracy is reported beside it, since a speed-up
that costs accuracy is not one. Data as `make bench`'s (its prepare_files), in benchmarks/data/ablation. Writes
benchmarks/results/ablation.md with the machine and the commands.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from bench_vs_peer import LR, ROOT, prepare_files, run
from machine import cpu_model

# name -> (override, what the switch is, whether the override turns it on: options off by default)
SWITCHES = {
    "length buckets": ("train.length_buckets=false",
                       "batches of similar length (shuffled buckets) instead of random batches; both pad dynamically",
                       False),
    "bf16 autocast": ("train.precision=fp32", "bf16 autocast where `auto` measures it faster, instead of fp32", False),
    "fused AdamW": ("train.fused_optimizer=false", "torch's fused AdamW kernel instead of its per-tensor loop", False),
    "SDPA attention": ("model.attention=eager", "scaled-dot-product attention instead of transformers' eager one",
                       False),
    "freed memory kept": ("train.reuse_freed_memory=false",
                          "glibc keeps freed memory for reuse (sendit.host) instead of faulting pages in every step",
                          False),
    "frozen weights in bf16": ("train.bf16_frozen_weights=false",
                               "frozen linear weights stored in bf16 under bf16 training instead of cast by autocast "
                               "in every step (methods with frozen weights; full FT has none)", False),
    "fast dropout": ("train.fast_dropout=false",
                     "dropout masks from a quarter of the random draws (sendit.dropout) instead of torch's dropout",
                     False),
    "token budget (on)": ("train.batch_tokens=640",
                          "batches of up to 640 padded tokens (~32 tweets of average length) instead of 32 tweets",
                          True),
    "no attention dropout (on)": ("model.attention_dropout=0",
                                  "attention-probability dropout 0 instead of the model's 0.1 (a regulariser: "
                                  "accuracy must be checked over seeds)", True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--methods", default="full,lora")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ablation.md"))
    args = ap.parse_args()
    files = prepare_files(ROOT / "benchmarks" / "data" / "ablation", args.n_train, args.n_train, args.n_test, 0, 0)
    variants = {"defaults": None, **{name: override for name, (override, *_) in SWITCHES.items()}}
    results, commands = {}, {}
    for method in args.methods.split(","):
        base = [sys.executable, "benchmarks/bench_train.py", "--model", args.model, "--train", str(files["train"]),
                "--test", str(files["test"]), "--method", method, "--epochs", "1", "--lr", str(LR[method]),
                "--batch-size", "32", "--max-length", str(args.max_length), "--threads", str(args.threads)]
        commands[method] = " ".join(base)
        for rep in range(args.reps):
            order = list(variants.items())
            for name, override in (order if rep % 2 == 0 else order[::-1]):
                record = run(base + (["--set", override] if override else []))
                results.setdefault((method, name), []).append(record)
                print(method, name, record, flush=True)
    write_markdown(Path(args.out), results, commands, variants, args)


def write_markdown(path: Path, results: dict, commands: dict, variants: dict, args) -> None:
    cpu = cpu_model()
    lines = [f"# Each speed-up alone: sendit with one switch changed ({args.reps} alternating repetitions)", "",
             f"Machine: {cpu}, torch threads {args.threads}. Data: benchmarks/data/ablation (cleaned Sentiment140), "
             f"train {args.n_train:,} tweets, 1 epoch, batch 32, max length {args.max_length}.", "",
             "| method | variant | override | train ex/s | speed-up of the switch | infer ex/s | test acc | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for method in commands:
        default = np.mean([r["train_examples_per_s"] for r in results[(method, "defaults")]])
        for name, override in variants.items():
            records = results[(method, name)]
            speed = np.mean([r["train_examples_per_s"] for r in records])
            gain = "-" if override is None else f"{(speed / default if SWITCHES[name][2] else default / speed):.2f}x"
            lines.append(f"| {method} | {name} | {f'`{override}`' if override else '-'} | {speed:.1f} | {gain} | "
                         f"{np.mean([r['infer_examples_per_s'] for r in records]):.1f} | "
                         f"{np.mean([r['accuracy'] for r in records]):.4f} | "
                         f"{np.mean([r['peak_rss_mb'] for r in records]):,.0f} |")
    lines += ["", "Switches:", "", *(f"- {name} (`{override}`): {what}" for name, (override, what, _) in SWITCHES.items()),
              "", "Commands (each variant adds `--set OVERRIDE`):", "",
              *(f"- {method}: `{command}`" for method, command in commands.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
