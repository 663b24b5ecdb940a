#!/usr/bin/env python3
"""ONNX Runtime's MatMulNBits (weight-only 8/4-bit, int8 compute at accuracy_level 4) against an fp32 export and
its dynamic int8 export (`sendit export RUN --quantize int8`): ex/s and accuracy on the run's test texts.

  python benchmarks/bench_nbits.py FP32_EXPORT INT8_EXPORT RUN/predictions.csv --work DIR [--reps 2]

Results of 2026-11-30: benchmarks/results/deploy.md ("Tried: ONNX Runtime's MatMulNBits").
"""
import argparse
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from onnxruntime.quantization import matmul_nbits_quantizer
from tokenizers import Tokenizer

SETTINGS = [(8, 32), (8, 128), (4, 32), (4, 128)]  # (bits, block size)


def length_sorted_batches(tokenizer: Tokenizer, texts: list[str], max_length: int, size: int = 64):
    tokenizer.enable_truncation(max_length)
    encoded = [e.ids for e in tokenizer.encode_batch(texts)]
    order = np.argsort([len(e) for e in encoded])
    for start in range(0, len(order), size):
        index = order[start:start + size]
        ids = np.zeros((len(index), max(len(encoded[i]) for i in index)), np.int64)  # the export's pad id is 0
        mask = np.zeros_like(ids)
        for row, i in enumerate(index):
            ids[row, :len(encoded[i])], mask[row, :len(encoded[i])] = encoded[i], 1
        yield index, ids, mask


def quantized(fp32: Path, work: Path, bits: int, block: int) -> Path:
    path = work / f"nbits{bits}_block{block}.onnx"
    if not path.exists():
        config = matmul_nbits_quantizer.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True,
                                                                     accuracy_level=4, bits=bits)
        quantizer = matmul_nbits_quantizer.MatMulNBitsQuantizer(onnx.load(str(fp32)), algo_config=config)
        quantizer.process()
        quantizer.model.save_model_to_file(str(path), use_external_data_format=False)
    return path


def measure(path: Path, batches: list, n: int, reps: int) -> tuple[float, np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    predictions, best = np.zeros(n, int), float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for index, ids, mask in batches:
            predictions[index] = session.run(None, {"input_ids": ids, "attention_mask": mask})[0].argmax(-1)
        best = min(best, time.perf_counter() - start)
    return n / best, predictions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fp32", type=Path)
    ap.add_argument("int8", type=Path)
    ap.add_argument("predictions", type=Path, help="the run's predictions.csv (text, label)")
    ap.add_argument("--work", type=Path, required=True, help="where the MatMulNBits graphs are written")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(args.predictions, keep_default_na=False)
    batches = list(length_sorted_batches(Tokenizer.from_file(str(args.fp32 / "tokenizer.json")), list(frame.text), 64))
    variants = [("fp32", args.fp32 / "model.onnx"), ("dynamic int8 (kept)", args.int8 / "model.onnx")]
    variants += [(f"MatMulNBits {bits}-bit, block {block}", quantized(args.fp32 / "model.onnx", args.work, bits, block))
                 for bits, block in SETTINGS]
    print("| variant | ex/s | vs fp32 ONNX | test acc | agreement with fp32 | MB |\n|---|---:|---:|---:|---:|---:|")
    reference = rate_fp32 = None
    for name, path in variants:
        rate, predictions = measure(path, batches, len(frame), args.reps)
        reference, rate_fp32 = (predictions, rate) if reference is None else (reference, rate_fp32)
        print(f"| {name} | {rate:.0f} | {rate / rate_fp32:.2f}x | {(predictions == frame.label).mean():.4f} | "
              f"{(predictions == reference).mean():.2%} | {path.stat().st_size / 1e6:.1f} |")


if __name__ == "__main__":
    main()
