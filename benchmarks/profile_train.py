#!/usr/bin/env python3
"""Where a training step's time goes: torch.profiler over `sendit.run.execute` (the `sendit train` path).

Trains --steps optimizer steps of --method on the first tweets of benchmarks/data/train.csv (made by
`make bench`) and a 64-tweet test set, then groups the aten operators' self CPU time into matrix
multiplies, attention, normalisation, activations, dropout, casts, the optimizer and the rest, so
the share of time that is not matrix multiplication (the MFU gap) has names. Writes a markdown
table to benchmarks/results/profile_<method>.md.

  python benchmarks/profile_train.py --method full --steps 40
"""
import argparse
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path

from machine import cpu_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
# First match wins: operator name pattern -> group.
GROUPS = [
    (r"fused_adam|adamw", "optimizer (AdamW)"),
    (r"scaled_dot_product|_flash_attention|_efficient_attention", "attention (SDPA)"),
    (r"addmm|^aten::mm$|bmm|matmul|linear", "matrix multiplies"),
    (r"layer_norm", "layer norm"),
    (r"gelu|tanh", "activations"),
    (r"dropout|bernoulli", "dropout"),
    (r"softmax|log_softmax|nll_loss|cross_entropy", "softmax and loss"),
    (r"_to_copy|^aten::copy_$|^aten::to$|clone", "casts and copies"),
    (r"embedding", "embeddings"),
    (r"vector_norm|_foreach_norm|clamp|_foreach_mul", "gradient clipping"),
]


def group_of(name: str) -> str:
    return next((group for pattern, group in GROUPS if re.search(pattern, name)), "other")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--method", default="full")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train", default=str(ROOT / "benchmarks" / "data" / "train.csv"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import pandas as pd
    import torch
    from torch.profiler import ProfilerActivity, profile

    from sendit.config import DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
    from sendit.data import Splits
    from sendit.run import execute

    frame = pd.read_csv(args.train).astype({"text": str})
    n_train = args.steps * args.batch_size
    splits = Splits(frame.iloc[:n_train], frame.iloc[:0], frame.iloc[n_train:n_train + 64], ["0", "1"], {})
    cfg = RunConfig(data=DataConfig(dataset="csv", path=args.train), model=ModelConfig(name=args.model),
                    method=MethodConfig(name=args.method, lr=args.lr),
                    train=TrainConfig(batch_size=args.batch_size, threads=args.threads))
    with tempfile.TemporaryDirectory() as tmp, profile(activities=[ProfilerActivity.CPU]) as prof:
        row = execute(cfg, Path(tmp) / "run", splits)
    totals, top = defaultdict(float), []
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            totals[group_of(event.key)] += event.self_cpu_time_total
            top.append((event.self_cpu_time_total, event.key, event.count))
    whole = sum(totals.values())
    cpu = cpu_model()
    lines = [f"# Where the time of `{args.method}` training goes ({args.model}, torch.profiler)", "",
             f"Machine: {cpu}, torch threads {args.threads}, bf16 autocast {row['bf16']}. {args.steps} steps of batch "
             f"{args.batch_size} on benchmarks/data/train.csv through `sendit.run.execute` (load, train, 64 test "
             f"tweets): {row['train_examples_per_s']:.1f} training examples/s while profiled.", "",
             f"Command: `python benchmarks/profile_train.py --model {args.model} --method {args.method} "
             f"--lr {args.lr} --steps {args.steps} --threads {args.threads}`", "",
             "| group | self CPU s | share |", "|---|---:|---:|"]
    for group, micros in sorted(totals.items(), key=lambda item: -item[1]):
        lines.append(f"| {group} | {micros / 1e6:.2f} | {micros / whole:.1%} |")
    lines += ["", "Top operators by self CPU time:", "", "| operator | group | calls | self CPU s | share |",
              "|---|---|---:|---:|---:|"]
    for micros, name, count in sorted(top, reverse=True)[:20]:
        lines.append(f"| `{name}` | {group_of(name)} | {count:,} | {micros / 1e6:.2f} | {micros / whole:.1%} |")
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"profile_{args.method}.md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
