"""A run against its exports on this CPU: ex/s at batch 64, accuracy, agreement, size, cold `sendit predict`.

    python benchmarks/bench_deploy.py RUN EXPORT [EXPORT ...] [--held-out N] [--threads T] [--bf16]

Texts: the run's own test split (accuracy as the run reports it) and N held-out tweets from the
same source file that the run's sample never contained (drawn with seed 0), for a larger test of
accuracy and of agreement with torch. ex/s is the forward passes alone (texts tokenised first),
length-sorted batches of 64, best of 2, torch (fp32; with --bf16 also under bf16 autocast) and ONNX Runtime
each on T threads. Cold predict: a new `sendit predict DIR "text"` process, interpreter start included, best of 3.
Writes benchmarks/results/deploy.md (or --out).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sendit.artifacts import Predictor
from sendit.data import prepare
from sendit.deploy import MODEL_FILE, ExportPredictor
from sendit.measure import throughput
from sendit.provenance import cpu_model

REPO = Path(__file__).resolve().parents[1]
TEXT = "ugh my flight got cancelled"


def held_out(cfg, n: int):
    """N tweets of the run's source file outside the run's sample, cleaned as the run's data were."""
    used = prepare(cfg.data)
    everything = prepare(dataclasses.replace(cfg.data, sample=None))
    seen = set(np.concatenate([s["text"].to_numpy() for s in (used.train, used.val, used.test)]))
    pool = [frame[~frame["text"].isin(seen)] for frame in (everything.train, everything.val, everything.test)]
    import pandas as pd

    return used.test, pd.concat(pool).sample(n=min(n, sum(map(len, pool))), random_state=0)


def cold_predict(directory: Path, repeats: int = 3) -> float:
    sendit = Path(sys.executable).with_name("sendit")
    command = [str(sendit), "predict", str(directory), TEXT] if sendit.exists() else [
        sys.executable, "-m", "sendit.cli", "predict", str(directory), TEXT]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("exports", type=Path, nargs="+")
    parser.add_argument("--held-out", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true",
                        help="Also time the torch run in bf16 (worth it where the CPU has bf16 kernels, e.g. AMX)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "deploy.md")
    args = parser.parse_args()
    args.load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    torch_run = Predictor.from_run(args.run)
    test, extra = held_out(torch_run.cfg, args.held_out)
    torch_variants = [("torch fp32", torch_run, "fp32")] + [("torch bf16", torch_run, "bf16")] * args.bf16
    exports = [(f"onnx {export.manifest['precision']} ({path.name})", export, None)
               for path in args.exports for export in [ExportPredictor.from_export(path, threads=args.threads)]]
    rows, reference = [], {}
    for name, predictor, precision in torch_variants + exports:
        results = {}
        for split, frame in (("test", test), ("held_out", extra))[:2 if len(extra) else 1]:
            texts, labels = frame["text"].tolist(), frame["label"].to_numpy()
            logits, rate = throughput(predictor, predictor.encode(predictor.clean(texts)), 64, precision)
            predictions = logits.argmax(1)
            reference.setdefault(split, predictions)
            results[split] = (float((predictions == labels).mean()), float((predictions == reference[split]).mean()),
                              rate)
        directory = args.run if isinstance(predictor, Predictor) else predictor.directory
        size = (directory / "adapter.safetensors" if isinstance(predictor, Predictor) else directory / MODEL_FILE)
        cold = cold_predict(directory, 1 if isinstance(predictor, Predictor) else 3)
        rows.append((name, results, size.stat().st_size / 1e6, cold))
        print(name, results, f"{cold:.2f} s", flush=True)
    write(args, rows, len(test), len(extra))


def write(args, rows, n_test: int, n_extra: int) -> None:
    """The table; agreement and ex/s are on the held-out tweets, or on the test split where the run's
    sample left none (a run on the whole source file)."""
    measured = "held_out" if n_extra else "test"
    base = rows[0][1][measured][2]
    lines = [f"# Deploying a run on this CPU: torch against its ONNX exports, {datetime.date.today()}", "",
             f"Machine: {cpu_model()}, {os.cpu_count()} cores, {args.threads} threads for torch and ONNX Runtime "
             f"alike. Load average (1 min) before the measurement {args.load_before:.2f}, after "
             f"{os.getloadavg()[0]:.2f}: above ~{args.threads} means other jobs shared the cores, and the rates "
             "are then lower and noisier than on an idle machine.", "",
             f"Run: `{args.run}`.", "",
             f"Command: `python benchmarks/bench_deploy.py {args.run} {' '.join(map(str, args.exports))} "
             f"--held-out {args.held_out} --threads {args.threads}{' --bf16' * args.bf16}`", "",
             f"Test: the run's test split ({n_test:,} tweets). Held-out: {n_extra:,} tweets of the same source file "
             "outside the run's sample. Agreement: share of predictions equal to torch fp32's. ex/s: forward passes "
             f"on the {measured.replace('_', '-')} texts, length-sorted batches of 64, best of 2. Cold predict: a new "
             "`sendit predict DIR \"text\"` process, best of 3 (torch: 1).", "",
             f"| variant | test acc | held-out acc | agreement ({measured.replace('_', '-')}) | ex/s | vs torch | model MB "
             "| cold predict s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, results, size, cold in rows:
        held = f"{results['held_out'][0]:.4f}" if n_extra else "-"
        agreement, rate = results[measured][1], results[measured][2]
        lines.append(f"| {name} | {results['test'][0]:.4f} | {held} | {agreement:.2%} | {rate:,.0f} | "
                     f"{rate / base:.2f}x | {size:.1f} | {cold:.2f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
