#!/usr/bin/env python3
"""Peak memory and time of evaluating a saved run under several oneDNN primitive-cache capacities.

oneDNN (torch's CPU matmuls in bf16) keeps each primitive it builds in a cache of 1,024 entries by default, one
per operation and input shape. Length-sorted batches give nearly every batch its own shape, so evaluating many
texts grows memory by the entries' weights and scratchpads until the cache is full. sendit bounds it past 128 tokens
(`sendit.host.bound_primitive_cache`, unless ONEDNN_PRIMITIVE_CACHE_CAPACITY is set); this measures what each
capacity costs, each in a fresh process, in the order given, on the run's test texts (tokenising excluded).

  python benchmarks/bench_primitive_cache.py RUN --dataset imdb:test -n 4000 --capacities 1024 32 4 --precision bf16
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from machine import cpu_model

CHILD = """
import json, resource, sys, time
from dataclasses import replace
import numpy as np
from sendit.artifacts import Predictor
from sendit.data import parse_split_name, split_of
run, dataset, n, precision = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
predictor = Predictor.from_run(run)
name, split = parse_split_name(dataset)
frame, _ = split_of(replace(predictor.cfg.data, dataset=name, test_sample=None), split or "test")
frame = frame.sample(n=min(n, len(frame)), random_state=0)
encoded = predictor.encode(frame["text"].tolist(), frame["label"].to_numpy(), predictor.cfg.data)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
logits, seconds = predictor.logits(encoded, precision=precision)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"examples": len(frame), "seconds": round(seconds, 1), "peak_rss_mb": round(peak),
                  "growth_mb": round(peak - before), "accuracy": float((logits.argmax(-1) == encoded.labels).mean())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--dataset", required=True, help="NAME:SPLIT of the texts to evaluate")
    ap.add_argument("-n", type=int, default=4000, help="texts (a random sample of the split)")
    ap.add_argument("--capacities", nargs="+", type=int, default=[1024, 32])
    ap.add_argument("--precision", default="bf16")
    args = ap.parse_args()
    print(json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(), "run": str(args.run), "dataset": args.dataset,
                      "precision": args.precision}))
    for capacity in args.capacities:
        env = {**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(capacity)}
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.run), args.dataset, str(args.n), args.precision],
                             env=env, capture_output=True, text=True, check=True).stdout
        print(json.dumps({"capacity": capacity, **json.loads(out.strip().splitlines()[-1])}), flush=True)


if __name__ == "__main__":
    main()
