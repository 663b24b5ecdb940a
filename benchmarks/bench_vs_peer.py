#!/usr/bin/env python3
"""`make bench`: sendit against the fastest configuration of the peer (HF Trainer + PEFT) on this machine.

Four sides per method, on the same CSV files, hyperparameters and thread count, for --reps
repetitions with the order rotated each repetition (drift hits every side alike):
- `sendit`: its defaults (benchmarks/bench_train.py, the `sendit train` code path; precision `auto`),
- `sendit_other`: the same with the precisions `auto` did not pick forced (fp32 <-> bf16, training
  and inference each), to show the default is never the slower,
- `peer_fp32` and `peer_bf16`: the peer with dynamic padding, without and with `--bf16`; the faster
  of the two (per metric) is the one sendit is compared with.

A precision whose matmuls run SLOW_GATE times slower than the other's (bf16 on a CPU without bf16
units: ~40x on AVX2) would take hours on 6,000 tweets, so its sides train on the first --slow-train
tweets and infer on the first --slow-test, for --slow-reps repetitions: examples/s is a rate, and
a gap of that size is not noise. The results file says which rows ran so, and names the machine.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT.parent / "shared" / "peer" / "trainer_baseline.py"
LR = {"full": 5e-5, "lora": 1e-3, "bitfit": 2e-3, "head": 2e-3}
SLOW_GATE = 3.0  # matmuls this many times slower than the other precision's: its sides run on the slow slices
OTHER = {"fp32": "bf16", "bf16": "fp32", "fp16": "fp32"}
NEED = {"full": 1.5, "lora": 1.7, "bitfit": 1.7}  # train ex/s over the fastest peer (issue 15); inference: 2x
SIDES = ("sendit", "peer_fp32", "sendit_other", "peer_bf16")


def prepare_files(out: Path, n_train: int, n_small: int, n_test: int | None, n_slow_train: int,
                  n_slow_test: int) -> dict[str, Path]:
    """Quickstart data (cleaned Sentiment140 20k): train slices and a >= 2,000-example test set, and the
    slow sides' slices of both."""
    import pandas as pd

    from sendit.config import DataConfig
    from sendit.data import prepare

    splits = prepare(DataConfig(dataset="sentiment140", split=[0.8, 0.1, 0.1], seed=42))
    out.mkdir(parents=True, exist_ok=True)
    test = pd.concat([splits.val, splits.test], ignore_index=True)
    slices = {"train": (splits.train, n_train), "small": (splits.train, n_small),
              "slow_train": (splits.train, n_slow_train), "test": (test, n_test), "slow_test": (test, n_slow_test)}
    files = {name: out / f"{name}.csv" for name in slices}
    for name, (frame, rows) in slices.items():
        frame.iloc[:rows].to_csv(files[name], index=False)
    return files


def run(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    return result_line(command, done.returncode, done.stdout, done.stderr)


def result_line(command: list[str], returncode: int, stdout: str, stderr: str) -> dict:
    """The JSON result line a benchmark side prints last; a failed or silent command stops the benchmark."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if returncode or not lines:
        raise SystemExit(f"failed: {' '.join(command)}\n{stderr[-3000:]}")
    return json.loads(lines[-1])


def train_flops(train_csv: Path, model: str, max_length: int, method: str, epochs: float) -> float:
    """Model FLOPs of training on non-pad tokens: (2 N T + 4 L T^2 d) per forward; x3 for full FT
    (backward computes input and weight gradients), x2 where weights are frozen (input gradients only),
    x1 for head-only (no gradient enters the encoder; the head's own FLOPs are negligible)."""
    import pandas as pd
    from transformers import AutoConfig

    from sendit.models import load_tokenizer, resolve_path

    config = AutoConfig.from_pretrained(resolve_path(model))
    tokenizer = load_tokenizer(model)
    lengths = np.array([len(ids) for ids in tokenizer(pd.read_csv(train_csv).text.astype(str).tolist(),
                                                       truncation=True, max_length=max_length)["input_ids"]])
    d, layers = config.hidden_size, config.num_hidden_layers
    non_embedding = layers * (4 * d * d + 2 * d * config.intermediate_size)
    forward = 2 * non_embedding * lengths.sum() + 4 * layers * (lengths.astype(float) ** 2).sum() * d
    return forward * {"full": 3, "head": 1}.get(method, 2) * epochs


def slow_precisions(peak: dict) -> list[str]:
    """The precision whose matmul peak is SLOW_GATE times below the other's, if either is."""
    fp32, bf16 = peak["fp32_gflops"], peak["bf16_gflops"]
    return ["bf16"] if fp32 > SLOW_GATE * bf16 else ["fp32"] if bf16 > SLOW_GATE * fp32 else []


def side_command(side: str, common: list[str], peer: list[str], chosen: dict | None) -> tuple[list[str], str]:
    """(command, training precision) of a side; `peer` is the peer's command, `chosen` sendit's default
    run (its precisions)."""
    python = sys.executable
    if side == "sendit":
        return [python, "benchmarks/bench_train.py", *common], chosen["precision"] if chosen else "auto"
    if side == "sendit_other":
        train, infer = OTHER[chosen["precision"]], OTHER[chosen["inference_precision"]]
        return ([python, "benchmarks/bench_train.py", *common, "--set", f"train.precision={train}",
                 "--set", f"train.eval_precision={infer}"], train)
    precision = side.removeprefix("peer_")
    bf16 = ["--bf16"] if precision == "bf16" else []
    return [*peer, "--padding", "dynamic", *bf16], precision


def with_files(command: list[str], train: Path, test: Path) -> list[str]:
    command = command.copy()
    command[command.index("--train") + 1], command[command.index("--test") + 1] = str(train), str(test)
    return command


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--methods", default="full,lora,bitfit", help="of full,lora,bitfit,head (head: 20 epochs)")
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--n-small", type=int, default=1000, help="train slice of head-only x20")
    ap.add_argument("--n-test", type=int, default=None, help="test slice (default: all 3,944 tweets)")
    ap.add_argument("--slow-train", type=int, default=128, help="train slice of a slow precision's sides")
    ap.add_argument("--slow-test", type=int, default=256, help="test slice of a slow precision's sides")
    ap.add_argument("--slow-reps", type=int, default=1, help="repetitions of a slow precision's sides")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42,
                    help="repetition r trains every side with seed SEED + r: accuracy is a mean over seeds, not one")
    ap.add_argument("--peer", default=str(PEER), help="the peer's script")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_vs_peer.md"))
    ap.add_argument("--rewrite", action="store_true",
                    help="only re-write the markdown from the measurements saved beside it (OUT with .json)")
    args = ap.parse_args()
    if args.rewrite:
        saved = json.loads(Path(args.out).with_suffix(".json").read_text())
        return write_markdown(Path(args.out), saved["records"], saved["peak"], saved["commands"],
                              argparse.Namespace(**saved["args"]))
    from sendit.models import resolve_path

    files = prepare_files(ROOT / "benchmarks" / "data", args.n_train, args.n_small, args.n_test, args.slow_train,
                          args.slow_test)
    peak = run([sys.executable, "benchmarks/matmul_peak.py", "--threads", str(args.threads), "--size", "1024"])
    peak["slow"] = slow_precisions(peak)
    print("matmul peak", peak, flush=True)
    commands, records = [], []
    for method in args.methods.split(","):
        epochs, train = (20, files["small"]) if method == "head" else (1, files["train"])
        common = ["--model", args.model, "--train", str(train), "--test", str(files["test"]), "--method", method,
                  "--epochs", str(epochs), "--lr", str(LR[method]), "--batch-size", "32",
                  "--max-length", str(args.max_length), "--threads", str(args.threads)]
        peer = [sys.executable, args.peer, *common]
        peer[peer.index("--model") + 1] = resolve_path(args.model)  # the peer takes a directory, not an alias
        results = {side: [] for side in SIDES}
        for rep in range(args.reps):
            for side in SIDES[rep % len(SIDES):] + SIDES[:rep % len(SIDES)]:  # sendit first in rep 0: `chosen`
                command, precision = side_command(side, common, peer, (results["sendit"] or [None])[0])
                slow = precision in peak["slow"]
                if slow and rep >= args.slow_reps:
                    continue
                if slow:
                    command = with_files(command, files["slow_train"], files["slow_test"])
                command = [*command, "--seed", str(args.seed + rep)]
                result = run(command)
                results[side].append({"precision": precision, **result, "slow": slow})  # sendit's own precision wins
                print(method, rep, side, results[side][-1], flush=True)
                if rep == 0:
                    commands.append((method, side, " ".join(command)))
        # sendit's head-only runs the encoder once (cached features), the peer once per epoch.
        epoch_flops = {slow: train_flops(files["slow_train"] if slow else train, args.model, args.max_length,
                                         method, 1) for slow in (False, True)}
        flops = {side: epoch_flops[bool(runs and runs[0]["slow"])]
                 * (1 if method == "head" and side.startswith("sendit") else epochs) for side, runs in results.items()}
        records.append((method, results, flops))
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"peak": peak, "args": vars(args), "records": records, "commands": commands}, indent=1))
    write_markdown(Path(args.out), records, peak, commands, args)


def mean(runs, key):
    return float(np.mean([r[key] for r in runs])) if runs else float("nan")


def each(runs, key, form: str = ".1f") -> str:
    values = ", ".join(f"{r[key]:{form}}" for r in runs)
    return f"{mean(runs, key):{form}} ({values})" if len(runs) > 1 else values or "-"


def verdict(value: float, need: float) -> str:
    return f"{value:.2f}x ({'yes' if value >= need else 'NO'}: needs {need:g}x)"


def write_markdown(path: Path, records, peak: dict, commands, args) -> None:
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    slow = ", ".join(peak["slow"]) or "none"
    test_rows = len(__import__("pandas").read_csv(ROOT / "benchmarks/data/test.csv"))
    out = [f"# sendit vs the fastest peer configuration (HF Trainer + PEFT), {time.strftime('%Y-%m-%d')}", "",
           f"Machine: {cpu_model()}, {cores} cores, torch threads {args.threads}. Matmul peak in this run "
           f"(benchmarks/matmul_peak.py, {peak['size']}^2): fp32 {peak['fp32_gflops']} GFLOP/s, bf16 "
           f"{peak['bf16_gflops']} GFLOP/s.",
           f"Data: quickstart Sentiment140 (cleaned 20k sample); train {args.n_train:,} tweets (head-only: "
           f"{args.n_small:,}, 20 epochs), test {test_rows:,}; "
           f"batch 32, max length {args.max_length}; {args.reps} repetitions, the order of the sides rotated each; "
           f"repetition r trains every side with seed {getattr(args, 'seed', 42)} + r.",
           f"Slow precision here (matmuls over {SLOW_GATE:g}x slower than the other's): {slow}. Its sides "
           f"(marked *) trained on the first {args.slow_train:,} tweets and inferred on the first {args.slow_test:,} "
           f"test tweets, {args.slow_reps} repetition(s): their ex/s are rates on that slice, their accuracy is "
           "not comparable and not shown.", "",
           "| method | side | precision | train ex/s (each rep) | infer ex/s (each rep) | test acc | peak RSS MB | "
           "MFU (of that precision's peak) |", "|---|---|---|---|---|---|---|---|"]
    for method, results, flops in records:
        for side, runs in results.items():
            if not runs:
                continue
            star = "*" if runs[0]["slow"] else ""
            mfu = flops[side] / mean(runs, "train_s") / (peak[f"{runs[0]['precision']}_gflops"] * 1e9)
            accuracy = "-" if star else each(runs, "accuracy", ".4f")
            precision = (f"{runs[0]['precision']}/{runs[0]['inference_precision']}" if "inference_precision" in runs[0]
                         else runs[0]["precision"])
            out.append(f"| {method} | {side}{star} | {precision} | {each(runs, 'train_examples_per_s')} | "
                       f"{each(runs, 'infer_examples_per_s')} | {accuracy} | {mean(runs, 'peak_rss_mb'):.0f} | "
                       f"{mfu:.1%} |")
    out += ["", "Acceptance (issue 15): sendit's default over the fastest peer side (per metric: the faster of "
            "peer_fp32 and peer_bf16), and over its own other precision (never more than 5% slower: >= 0.95x).", "",
            "| method | fastest peer (train) | train vs fastest peer | infer vs fastest peer | accuracy vs it (points) "
            "| default vs other precision: train | infer |", "|---|---|---|---|---|---|---|"]
    for method, results, _ in records:
        sendit = results["sendit"]
        peers = [side for side in ("peer_fp32", "peer_bf16") if results[side]]
        fastest = max(peers, key=lambda side: mean(results[side], "train_examples_per_s"))
        infer_peer = max(mean(results[side], "infer_examples_per_s") for side in peers)
        train_ratio = mean(sendit, "train_examples_per_s") / mean(results[fastest], "train_examples_per_s")
        gap = mean(sendit, "accuracy") - mean(results[fastest], "accuracy")
        accuracy = ("n/a (slow slice)" if results[fastest][0]["slow"] else
                    f"{100 * gap:+.2f} ({'yes' if abs(gap) <= 0.01 else 'NO'})")
        other = results["sendit_other"]
        out.append(f"| {method} | {fastest} | {verdict(train_ratio, NEED.get(method, 1.0))} | "
                   f"{verdict(mean(sendit, 'infer_examples_per_s') / infer_peer, 2.0)} | {accuracy} | "
                   f"{verdict(mean(sendit, 'train_examples_per_s') / mean(other, 'train_examples_per_s'), 0.95)} | "
                   f"{verdict(mean(sendit, 'infer_examples_per_s') / mean(other, 'infer_examples_per_s'), 0.95)} |")
    out += ["", "Commands (first repetition):", ""] + [f"- {m}, {side}: `{command}`" for m, side, command in commands]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
