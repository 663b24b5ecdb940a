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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps({"threads": args.threads, "fp32_gflops": round(matmul_gflops(torch.float32, 2048, 2.0), 1),
                      "bf16_gflops": round(matmul_gflops(torch.bfloat16, 2048, 2.0), 1)}))


if __name__ == "__main__":
    main()
