#!/usr/bin/env python3
"""`make bench`: sendit against the peer (HF Trainer + PEFT) on the same files, alternating A/B.

For each method: sendit (benchmarks/bench_train.py, the `sendit train` code path) and the
best-configured peer (`--padding dynamic --bf16`) run alternately for --reps repetitions on the
same CSV files, hyperparameters and thread count; the seed-style peer (padding to 128, fp32) runs
once on a smaller slice because it is slow. Head-only is compared over 20 epochs. MFU counts model
FLOPs on non-pad tokens against the matmul peak measured in the same run. Writes a markdown table
to benchmarks/results/train_vs_peer.md with the machine and the commands.
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


def prepare_files(out: Path, n_train: int, n_small: int) -> dict[str, Path]:
    """Quickstart data (cleaned Sentiment140 20k): train slices and a >= 2,000-example test set."""
    from sendit.config import DataConfig
    from sendit.data import prepare

    splits = prepare(DataConfig(dataset="sentiment140", split=[0.8, 0.1, 0.1], seed=42))
    out.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    test = pd.concat([splits.val, splits.test], ignore_index=True)
    files = {"train": out / "train.csv", "small": out / "train_small.csv", "test": out / "test.csv"}
    splits.train.iloc[:n_train].to_csv(files["train"], index=False)
    splits.train.iloc[:n_small].to_csv(files["small"], index=False)
    test.to_csv(files["test"], index=False)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--methods", default="full,lora,bitfit,head")
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--n-small", type=int, default=1000, help="train slice for the seed-style peer and head x20")
    ap.add_argument("--reps", type=int, default=2)
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
    files = prepare_files(ROOT / "benchmarks" / "data", args.n_train, args.n_small)
    python = sys.executable
    peak = run([python, "benchmarks/matmul_peak.py", "--threads", str(args.threads)])
    lines, records = [], []
    for method in args.methods.split(","):
        epochs, train = (20, files["small"]) if method == "head" else (1, files["train"])
        common = ["--model", args.model, "--train", str(train), "--test", str(files["test"]), "--method", method,
                  "--epochs", str(epochs), "--lr", str(LR[method]), "--batch-size", "32",
                  "--max-length", str(args.max_length), "--threads", str(args.threads)]
        from sendit.models import resolve_path

        peer_common = common.copy()
        peer_common[1] = resolve_path(args.model)  # the peer takes a directory, not an alias
        sendit_cmd = [python, "benchmarks/bench_train.py", *common]
        best_cmd = [python, str(PEER), *peer_common, "--padding", "dynamic", "--bf16"]
        results = {"sendit": [], "peer_best": []}
        for rep in range(args.reps):  # alternate the order so drift hits both sides alike
            order = [("sendit", sendit_cmd), ("peer_best", best_cmd)]
            for name, command in (order if rep % 2 == 0 else order[::-1]):
                results[name].append(run(command))
                print(method, name, results[name][-1], flush=True)
        seed_common = peer_common.copy()
        seed_common[seed_common.index("--train") + 1] = str(files["small"])
        seed_common[seed_common.index("--max-length") + 1] = "128"
        results["peer_seed_style"] = [run([python, str(PEER), *seed_common, "--padding", "max_length"])]
        print(method, "peer_seed_style", results["peer_seed_style"][-1], flush=True)
        # sendit's head-only runs the encoder once (cached features), the peer once per epoch.
        epoch_flops = train_flops(train, args.model, args.max_length, method, 1)
        flops = {"sendit": epoch_flops * (1 if method == "head" else epochs), "peer_best": epoch_flops * epochs}
        records.append((method, results, flops))
        lines.append((method, " ".join(sendit_cmd), " ".join(best_cmd),
                      " ".join([python, str(PEER), *seed_common, "--padding", "max_length"])))
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"peak": peak, "args": vars(args), "records": records, "commands": lines}, indent=1))
    write_markdown(Path(args.out), records, peak, lines, args)


def mean(values):
    return float(np.mean(values)) if values else float("nan")


def write_markdown(path: Path, records, peak: dict, commands, args) -> None:
    cpu = cpu_model()
    out = [f"# sendit vs the peer (HF Trainer + PEFT), {time.strftime('%Y-%m-%d')}", "",
           f"Machine: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
           f"torch threads {args.threads}. Matmul peak measured in this run: fp32 {peak['fp32_gflops']} GFLOP/s, "
           f"bf16 {peak['bf16_gflops']} GFLOP/s (benchmarks/matmul_peak.py, 2048^2).",
           f"Data: quickstart Sentiment140 (cleaned 20k sample); train {args.n_train:,} tweets (head-only and the "
           f"seed-style peer: {args.n_small:,}), test {len(__import__('pandas').read_csv(ROOT / 'benchmarks/data/test.csv')):,}; "
           f"batch 32, max length {args.max_length} (seed-style peer: 128), {args.reps} alternating repetitions.", "",
           "| method | side | train ex/s | infer ex/s | test acc | F1 macro | peak RSS MB | train s | MFU (bf16 peak) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for method, results, flops in records:
        for side, runs in results.items():
            train_s = mean([r["train_s"] for r in runs])
            mfu = flops[side] / train_s / (peak["bf16_gflops"] * 1e9) if side in flops else float("nan")
            out.append(f"| {method} | {side} | {mean([r['train_examples_per_s'] for r in runs]):.1f} | "
                       f"{mean([r['infer_examples_per_s'] for r in runs]):.1f} | {mean([r['accuracy'] for r in runs]):.4f} | "
                       f"{mean([r['f1_macro'] for r in runs]):.4f} | {mean([r['peak_rss_mb'] for r in runs]):.0f} | "
                       f"{train_s:.1f} | {mfu:.1%} |")
    out += ["", "Ratios (sendit / peer):", "", "| method | train vs best peer | infer vs best peer | "
            "train vs seed-style peer | accuracy difference vs best peer (points) |", "|---|---|---|---|---|"]
    for method, results, _ in records:
        ratio = lambda key, other: mean([r[key] for r in results["sendit"]]) / mean([r[key] for r in results[other]])  # noqa: E731
        diff = 100 * (mean([r["accuracy"] for r in results["sendit"]]) - mean([r["accuracy"] for r in results["peer_best"]]))
        out.append(f"| {method} | {ratio('train_examples_per_s', 'peer_best'):.2f}x | "
                   f"{ratio('infer_examples_per_s', 'peer_best'):.2f}x | "
                   f"{ratio('train_examples_per_s', 'peer_seed_style'):.2f}x | {diff:+.2f} |")
    out += ["", "Commands:", ""] + [f"- {m}: `{a}`\n  - best peer: `{b}`\n  - seed-style peer: `{c}`" for m, a, b, c in commands]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
