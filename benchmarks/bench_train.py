#!/usr/bin/env python3
"""sendit's side of the training benchmark, with the peer's command-line contract.

Takes the arguments of ../shared/peer/trainer_baseline.py (CSV files `text,label`) and prints one
JSON line with the peer's keys, so both can be run on the same files and compared. Training goes
through `sendit.run.execute`, the code path of `sendit train`, with sendit's defaults for
everything the arguments leave open (length-bucketed dynamic padding, the precision `auto` measures
fastest here; the JSON line names it). `--method lora` is the peer's LoRA (r=8, alpha=16, dropout
0.1, query and value), so both sides train the same method. Texts are used as given (no cleaning), as the peer does.

  python benchmarks/bench_train.py --model minilm --train train.csv --test test.csv --method lora \
      --epochs 1 --lr 1e-3 --batch-size 32 --max-length 64 --threads 2
"""
import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--method", choices=["full", "lora", "bitfit", "head"], default="lora")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--lora-alpha", type=int, default=16)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--output-dir", default=None, help="run directory (default: a temporary one)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a sendit config override, as `sendit train --set` (e.g. train.bf16=false): "
                         "how benchmarks/bench_ablation.py turns one speed-up off")
    args = ap.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from sendit.config import RunConfig, apply_overrides, build
    from sendit.data import Splits
    from sendit.run import execute

    splits = Splits(*(_read(path) for path in (args.train, None, args.test)), label_names=_labels(args), stats={})
    options = ({"r": args.lora_r, "alpha": args.lora_alpha, "dropout": 0.1, "target": "qv"}
               if args.method == "lora" else {})
    cfg = build(RunConfig, apply_overrides({
        "data": {"dataset": "csv", "path": args.train},
        "model": {"name": args.model, "max_length": args.max_length},
        "method": {"name": args.method, "lr": args.lr, "options": options},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                  "threads": args.threads or None}}, args.set))
    with tempfile.TemporaryDirectory() as tmp:
        row = execute(cfg, Path(args.output_dir or tmp) / "run", splits)
    print(json.dumps({
        "peer": "sendit", "method": args.method, "overrides": args.set,
        "padding": "length-bucketed" if cfg.train.length_buckets else "dynamic", "bf16": row["bf16"],
        "precision": row["precision"], "inference_precision": row["inference_precision"],
        "train_examples": row["train_examples"], "trainable_params": row["trainable_params"],
        "train_s": round(row["runtime_sec"], 2), "train_examples_per_s": round(row["train_examples_per_s"], 2),
        "infer_s": round(row["inference_time_sec"], 2),
        "infer_examples_per_s": round(row["inference_examples_per_s"], 2),
        "accuracy": round(row["test_accuracy"], 4), "f1_macro": round(row["test_f1_macro"], 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "wall_s": round(time.perf_counter() - start, 2),
    }))


def _read(path):
    import pandas as pd

    if path is None:
        return pd.DataFrame({"text": pd.Series(dtype=str), "label": pd.Series(dtype="int64")})
    frame = pd.read_csv(path)
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        sys.exit(f"{path}: missing column(s) {', '.join(sorted(missing))}; expected text,label")
    return frame.assign(text=frame["text"].astype(str))[["text", "label"]]


def _labels(args) -> list[str]:
    import pandas as pd

    top = max(int(pd.read_csv(p, usecols=["label"])["label"].max()) for p in (args.train, args.test))
    return [str(i) for i in range(top + 1)]


if __name__ == "__main__":
    main()
