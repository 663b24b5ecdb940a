#!/usr/bin/env python3
"""Inference speed against the evaluation batch size, and a LoRA adapter folded or not.

sendit evaluates in length-sorted batches (`train.eval_batch_size`); a larger batch pads more (the
longest text of a sorted batch sets its width), a smaller one runs more, smaller matmuls. This
times `evaluate.predict_logits` on one test file for each batch size, interleaved over repetitions,
for minilm with full fine-tuning's structure and with a LoRA adapter (r 8, query/value) as trained
and folded (`merge_and_unload`). Weights are untrained: speed does not depend on their values.

  python benchmarks/bench_eval_batch.py --test test.csv --batch-sizes 16 32 64 128 --reps 5 [--attention eager]
"""
import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test", required=True, help="CSV with a `text` column")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attention", default=None, help="transformers' attention implementation (default: the model's, sdpa)")
    args = ap.parse_args()

    import pandas as pd
    import torch

    from sendit.batching import encode, sorted_batches
    from sendit.config import MethodConfig
    from sendit.evaluate import predict_logits
    from sendit.provenance import cpu_model
    from sendit.methods import get_method
    from sendit.models import load_model

    torch.set_num_threads(args.threads)
    texts = pd.read_csv(args.test)["text"].astype(str).tolist()
    variants = {}
    for name, method in (("full", "full"), ("lora", "lora"), ("lora folded", "lora")):
        model, tokenizer = load_model(args.model, 2, ["negative", "positive"], attention=args.attention)
        model = get_method(MethodConfig(name=method, options={"target": "qv"} if method == "lora" else {})).apply(model)
        variants[name] = model.merge_and_unload() if name.endswith("folded") else model
    encoded = encode(tokenizer, texts, [0] * len(texts), args.max_length)
    tokens = int(encoded.lengths.sum())
    rates = {(v, b): [] for v in variants for b in args.batch_sizes}
    for variant, model in variants.items():  # warm-up
        predict_logits(model, encoded.subset(list(range(64))), 64, "fp32", tokenizer.pad_token_id)
    for rep in range(args.reps):
        for batch_size in args.batch_sizes[rep % 2::] + args.batch_sizes[:rep % 2]:
            for variant, model in variants.items():
                _, seconds = predict_logits(model, encoded, batch_size, "fp32", tokenizer.pad_token_id)
                rates[(variant, batch_size)].append(len(texts) / seconds)
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {args.threads} threads; {time.strftime('%Y-%m-%d %H:%M')} UTC; "
          f"load average before the end {os.getloadavg()[0]:.2f}; {platform.node()}")
    print(f"{len(texts)} texts, {tokens} tokens; {args.model} ({args.attention or 'default'} attention), max length {args.max_length}, fp32, {args.reps} reps\n")
    print("| batch | padded tokens | " + " | ".join(f"{v} ex/s (median; each rep)" for v in variants) + " |")
    print("|---|---|" + "---|" * len(variants))
    for batch_size in args.batch_sizes:
        padded = sum(len(index) * int(encoded.lengths[index].max()) for index in sorted_batches(encoded.lengths, batch_size))
        cells = [f"{statistics.median(rates[(v, batch_size)]):.1f} ({', '.join(f'{r:.0f}' for r in rates[(v, batch_size)])})"
                 for v in variants]
        print(f"| {batch_size} | {padded} (+{padded / tokens - 1:.1%}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
