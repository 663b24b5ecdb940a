#!/usr/bin/env python3
"""sendit's inference path against the one before it, on saved runs: `evaluate.predict_logits` ex/s with

- `as trained`: the adapter beside the base weights, the whole last block (sendit before this change);
- `folded`: the adapter folded into the weights (the method's `for_inference`), the whole last block;
- `sendit`: folded and the last block on the first token only (sendit.first_token): today's path;

interleaved over repetitions, and how far the logits move (max absolute difference against `as trained`,
share of equal predictions). A method that does not fold has no `folded` side.

  python benchmarks/bench_first_token.py RUN [RUN ...] --test test.csv --reps 4 --threads 2
"""
import argparse
import contextlib
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="saved run directories")
    ap.add_argument("--test", required=True, help="CSV with a `text` column")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import pandas as pd
    import torch

    from sendit import evaluate
    from sendit.artifacts import Predictor, batching_for
    from sendit.provenance import cpu_model

    torch.set_num_threads(args.threads)
    texts = pd.read_csv(args.test)["text"].astype(str).tolist()
    first_token_only, whole_block = evaluate.first_token_only, lambda _model: contextlib.nullcontext()
    rows = []
    for run in args.runs:
        trained, deployed = Predictor.from_run(run, as_trained=True), Predictor.from_run(run)
        sides = {"as trained": (trained.model, whole_block), "folded": (deployed.model, whole_block),
                 "sendit": (deployed.model, first_token_only)}
        if hasattr(deployed.model, "peft_config") or not hasattr(trained.model, "peft_config"):
            del sides["folded"]  # nothing was folded: that side would time `as trained` again
        encoded = trained.encode(trained.clean(texts))
        batching = batching_for(trained.tokenizer, trained.model)

        def timed(side: str):
            model, evaluate.first_token_only = sides[side]  # what predict_logits enters around its forward passes
            return evaluate.predict_logits(model, encoded, trained.cfg.train.eval_batch_size, "fp32", **vars(batching))

        rates, logits = {side: [] for side in sides}, {}
        for side in sides:
            timed(side)  # warm-up
        for rep in range(args.reps):
            order = list(sides)[rep % len(sides):] + list(sides)[:rep % len(sides)]
            for side in order:
                logits[side], seconds = timed(side)
                rates[side].append(len(texts) / seconds)
        evaluate.first_token_only = first_token_only
        median = {side: statistics.median(values) for side, values in rates.items()}
        cells = [f"{median[s]:.1f} ({', '.join(f'{r:.0f}' for r in rates[s])})" if s in sides else "-"
                 for s in ("as trained", "folded", "sendit")]
        base, now = logits["as trained"], logits["sendit"]
        rows.append(f"| {trained.cfg.method.name} ({os.path.basename(run.rstrip('/'))}) | " + " | ".join(cells)
                    + f" | {median['sendit'] / median['as trained']:.2f}x | {np.abs(now - base).max():.1e} | "
                    f"{(now.argmax(1) == base.argmax(1)).mean():.2%} |")
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {args.threads} threads; {time.strftime('%Y-%m-%d %H:%M')} UTC; "
          f"load average at the end {os.getloadavg()[0]:.2f}; {platform.node()}")
    print(f"{len(texts)} texts of {args.test}; fp32, the runs' evaluation batch size, {args.reps} reps, order rotated\n")
    print("| run | as trained ex/s (median; each rep) | folded | sendit (folded, first token) | sendit vs as trained "
          "| max abs logit diff | equal predictions |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
