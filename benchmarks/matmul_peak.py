#!/usr/bin/env python3
"""This CPU's matmul peak (GFLOP/s) in fp32 and bf16, square matrices, the given thread count.

The denominator of MFU: measured in the same benchmark run, on the same machine state.
"""
import argparse
import json
import time

import torch


def peak_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):  # best of three: background noise only ever slows a run down
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps({"threads": args.threads, "fp32_gflops": round(peak_gflops(torch.float32), 1),
                      "bf16_gflops": round(peak_gflops(torch.bfloat16), 1)}))


if __name__ == "__main__":
    main()
