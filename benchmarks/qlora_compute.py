#!/usr/bin/env python3
"""QLoRA's 4-bit layers multiplied in bf16 (the paper's `compute_dtype`) against sendit's `auto` (dequantised to
fp32; a bf16 run's autocast makes it bf16), with LoRA as the yardstick: seconds per training step (forward,
backward, AdamW) and per inference batch on minilm, best of `--reps`, the three interleaved in each repetition.
Random token ids: a speed measurement, not a trained model.

  python benchmarks/qlora_compute.py [--batch 16] [--length 128] [--reps 3] [--threads 1]

Results: benchmarks/results/qlora_compute.md.
"""
import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARMS = [("LoRA", "lora", {}), ("QLoRA, compute auto", "qlora", {"compute_dtype": "auto"}),
        ("QLoRA, compute bfloat16", "qlora", {"compute_dtype": "bfloat16"})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from sendit.artifacts import build_model
    from sendit.config import MethodConfig, ModelConfig, RunConfig
    from sendit.provenance import cpu_model

    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (args.batch, args.length), generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": torch.randint(0, 2, (args.batch,), generator=generator)}

    def arm(method: str, options: dict):
        torch.manual_seed(0)
        cfg = RunConfig(model=ModelConfig(name="minilm", max_length=args.length),
                        method=MethodConfig(name=method, options=options))
        model = build_model(cfg, ["negative", "positive"])[0]
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def train_step():
            model.train()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        def inference():
            model.eval()
            with torch.inference_mode():
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

        train_step(), inference()  # warm-up
        return train_step, inference

    steps = {name: arm(method, options) for name, method, options in ARMS}
    best = {name: [float("inf"), float("inf")] for name in steps}
    for _ in range(args.reps):
        for name, functions in steps.items():
            for which, function in enumerate(functions):
                start = time.perf_counter()
                function()
                best[name][which] = min(best[name][which], time.perf_counter() - start)

    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {args.threads} thread(s); batch {args.batch} x "
          f"{args.length} tokens; best of {args.reps}; {time.strftime('%Y-%m-%d %H:%M')} UTC\n")
    print("| arm | s / training step | x LoRA | s / inference batch | x LoRA |\n|---|---|---|---|---|")
    lora = best["LoRA"]
    for name, (train, infer) in best.items():
        print(f"| {name} | {train:.3f} | {train / lora[0]:.2f} | {infer:.3f} | {infer / lora[1]:.2f} |")


if __name__ == "__main__":
    main()
