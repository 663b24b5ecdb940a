#!/usr/bin/env python3
"""Head-only training for 20 epochs: cached pooled features vs re-running the frozen encoder.

Both sides train the same head with the same trainer; the naive side declares an `end_to_end`
phase (every epoch runs the encoder forward, as a plain Trainer does), sendit's `head` method a
`head_features` phase (one encoder pass, then 20 epochs on the cached features). Times include
feature extraction.
"""
import argparse
import json
import time
import warnings

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--epochs", type=float, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    from sendit.config import DataConfig, MethodConfig, TrainConfig
    from sendit.data import prepare
    from sendit.methods.base import Phase
    from sendit.methods.head import Head
    from sendit.models import load_model
    from sendit.hardware import representative_batch, training_precision
    from sendit.run import encode_splits
    from sendit.train import Batching, Trainer

    class HeadReRunningEncoder(Head):
        """The naive schedule: the head trains end to end, so every epoch re-runs the encoder."""

        def phases(self, train):
            return [Phase("end_to_end", train.epochs, self.lr)]

    splits = prepare(DataConfig(dataset="sentiment140"))
    splits.train = splits.train.iloc[:args.n_train]
    cfg = TrainConfig(epochs=args.epochs, batch_size=32, evals_per_epoch=1)
    results = {}
    for name, method in (("cached_features", Head(MethodConfig(name="head"))),
                         ("encoder_every_epoch", HeadReRunningEncoder(MethodConfig(name="head")))):
        model, tokenizer = load_model(args.model, 2, seed=42)
        model = method.apply(model)
        encoded = encode_splits(tokenizer, splits, 64)
        batching = Batching(tokenizer.pad_token_id)
        precision = training_precision("auto", "cpu", model, representative_batch(encoded["train"], 32, batching.pad_id))
        trainer = Trainer(model, method, cfg, batching, splits.label_names, precision.precision)
        start = time.perf_counter()
        fit = trainer.fit(encoded["train"], encoded["val"])
        results[name] = {"seconds": round(time.perf_counter() - start, 1), "best_val_f1": round(fit.best["val_f1"], 4)}
        print(name, results[name], flush=True)
    results["speedup"] = round(results["encoder_every_epoch"]["seconds"] / results["cached_features"]["seconds"], 1)
    print(json.dumps({"n_train": args.n_train, "epochs": args.epochs, "val_examples": len(splits.val), **results}))


if __name__ == "__main__":
    main()
