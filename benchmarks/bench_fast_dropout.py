#!/usr/bin/env python3
"""Training speed with torch's dropout and with sendit's FastDropout (`train.fast_dropout`), by text length.

torch's CPU dropout draws one random number per element, on one thread; FastDropout (sendit.dropout) draws
a quarter as many and builds the mask in one comparison. The share of a step that dropout takes depends on
the method (LoRA adds a dropout before every adapted layer) and the length, so this measures full FT, the
peer's LoRA (query/value, dropout 0.1) and sendit's (all linear layers, dropout 0.05) on IMDb reviews cut
to each length, as `bench_attention_dropout.py` does (same files, runs alternating). Attention-probability
dropout is the model's in both variants (FastDropout does not reach it: `model.attention_dropout`).
Writes benchmarks/results/fast_dropout.md with the machine and the commands.

  python benchmarks/bench_fast_dropout.py --lengths 64,128,256 --methods full,lora,lora-all
"""
import argparse
from pathlib import Path

from bench_attention_dropout import add_arguments, alternate, write_markdown
from bench_vs_peer import ROOT

TORCH_DROPOUT = ["--set", "train.fast_dropout=false"]
# sendit's default LoRA, where bench_train.py's `lora` is the peer's
METHOD_SETS = {"lora-all": ["--set", "method.options.target=all-linear", "--set", "method.options.dropout=0.05"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap, ROOT / "benchmarks" / "results" / "fast_dropout.md")
    ap.set_defaults(lengths="64,128,256", methods="full,lora,lora-all")
    args = ap.parse_args()
    variants = {"torch": TORCH_DROPOUT, "fast": []}
    speeds, commands = alternate(args, variants, METHOD_SETS)
    write_markdown(Path(args.out), speeds, commands, args, "FastDropout and training speed, by text length", variants,
                   ("train ex/s, torch's dropout", "train ex/s, FastDropout", "speed-up"),
                   f"FastDropout is the default; torch's dropout adds `{' '.join(TORCH_DROPOUT)}`")


if __name__ == "__main__":
    main()
