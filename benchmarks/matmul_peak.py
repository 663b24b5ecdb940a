#!/usr/bin/env python3
"""This CPU's matmul peak (GFLOP/s) in fp32 and bf16, square matrices, the given thread count.

The denominator of MFU: measured in the same benchmark run, on the same machine state.
"""
import argparse
import json

import torch

from sendit.measure import matmul_gflops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=2048,
                    help="matrix side; 1024 keeps a dtype without fast kernels (bf16 on AVX2: ~45 s a 2048^2 product) short")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps({"threads": args.threads, "size": args.size,
                      "fp32_gflops": round(matmul_gflops(torch.float32, args.size, 2.0), 1),
                      "bf16_gflops": round(matmul_gflops(torch.bfloat16, args.size, 2.0), 1)}))


if __name__ == "__main__":
    main()
