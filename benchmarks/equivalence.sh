#!/usr/bin/env bash
# The quickstart study on 2,000 tweets in fp32 with pinned threads, from the tree given as $1, into $2.
# Used to show that a refactoring leaves every metric column and prediction identical: run it on the tree
# before and after, then `python benchmarks/equivalence.py BEFORE/equivalence AFTER/equivalence`.
set -euo pipefail
tree=$1; out=$2
cd "$tree"
PYTHONPATH=src OMP_NUM_THREADS=1 "${SENDIT:-$(pwd)/.venv/bin/sendit}" study configs/quickstart.yaml \
  --set data.sample=2000 --set train.threads=1 --set train.bf16=false \
  --set name=equivalence --set output_dir="$out" "${@:3}"
