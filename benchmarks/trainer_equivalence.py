#!/usr/bin/env python3
"""Does a change to the trainer keep training bit-identical? Fits tiny-bert (1 thread, fp32 unless
said) in configurations that reach every path of the loop: both phase kinds, epoch boundaries, token
budgets, several validations per epoch, early stopping, max_steps, no validation split, a custom loss,
fp16 loss scaling. Saves each fit's epoch log, best row, counts and final weights; `compare` checks
two saves exactly. Minutes on a CPU, against the quickstart study's quarter hour (equivalence.sh).

    PYTHONPATH=BEFORE/src python benchmarks/trainer_equivalence.py save /tmp/before.pt
    PYTHONPATH=AFTER/src python benchmarks/trainer_equivalence.py save /tmp/after.pt
    python benchmarks/trainer_equivalence.py compare /tmp/before.pt /tmp/after.pt
"""
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch

# (method, method options, TrainConfig fields); `no_val`, `distill` and `fp16` are this script's switches.
CASES = {
    "full-2ep-evals2": ("full", {}, dict(epochs=2, evals_per_epoch=2)),
    "lora-2ep-nobuckets": ("lora", {}, dict(epochs=2, length_buckets=False)),
    "lora-tokens": ("lora", {}, dict(epochs=1.5, batch_tokens=300, evals_per_epoch=3)),
    "head-3ep": ("head", {}, dict(epochs=3, evals_per_epoch=2)),
    "bitfit-patience": ("bitfit", {}, dict(epochs=3, eval_every_steps=3, early_stopping_patience=1)),
    "two_phase": ("two_phase", {"full_epochs": 1, "head_epochs": 3}, dict(evals_per_epoch=2, grad_clip=0.5)),
    "two_phase-maxsteps": ("two_phase", {"full_epochs": 2, "head_epochs": 2}, dict(max_steps=7, eval_every_steps=2)),
    "prompt-cosine": ("prompt_tuning", {}, dict(epochs=2, scheduler="cosine", warmup_ratio=0.2)),
    "ia3": ("ia3", {}, dict(epochs=1)),
    "dora": ("dora", {}, dict(epochs=1, max_steps=5)),
    "full-noval": ("full", {}, dict(epochs=1, evals_per_epoch=2, no_val=True)),
    "head-noval": ("head", {}, dict(epochs=2, no_val=True)),
    "full-distill": ("full", {}, dict(epochs=1, distill=True)),
    "full-fp16": ("full", {}, dict(epochs=1, max_steps=6, fp16=True)),
}


def save(out: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import LABELS, synthetic_frame
    from sendit.artifacts import build_model
    from sendit.batching import encode
    from sendit.config import DataConfig, DistillConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
    from sendit.data import prepare
    from sendit.distill import distillation_loss
    from sendit.models import load_tokenizer
    from sendit.run import seed_everything
    from sendit.train import Batching, Trainer

    path = Path(tempfile.mkdtemp()) / "tweets.csv"
    synthetic_frame(400).to_csv(path, index=False)
    splits = prepare(DataConfig(dataset="csv", path=str(path), label_names=LABELS))
    tokenizer = load_tokenizer("tiny-bert")
    train, val = (encode(tokenizer, frame.text.tolist(), frame.label.to_numpy(), 32)
                  for frame in (splits.train, splits.val))
    teacher = torch.randn(len(train), 2, generator=torch.Generator().manual_seed(2)) * 5
    fits = {}
    for name, (method, options, fields) in CASES.items():
        fields = dict(fields)
        no_val, distill, fp16 = (fields.pop(switch, False) for switch in ("no_val", "distill", "fp16"))
        cfg = TrainConfig(**{"batch_size": 16, "bf16": False, "seed": 3, **fields})
        run = RunConfig(data=DataConfig(label_names=LABELS), model=ModelConfig(name="tiny-bert", max_length=32),
                        method=MethodConfig(name=method, lr=1e-2, options=options), train=cfg)
        seed_everything(cfg.seed)
        model, _, adapter = build_model(run, LABELS)
        loss = distillation_loss(DistillConfig(temperature=3.0, alpha=0.5), teacher) if distill else None
        progress = []
        fit = Trainer(model, adapter, cfg, Batching(tokenizer.pad_token_id), LABELS, "fp16" if fp16 else "fp32",
                      progress.append, loss).fit(train, val.subset(range(0)) if no_val else val)
        fits[name] = {"log": fit.epoch_log, "best": fit.best, "examples": fit.train_examples,
                      "stopped_early": fit.stopped_early, "progress": progress,
                      "weights": {n: p.detach().clone() for n, p in model.named_parameters()},
                      "trainable": {n: p.requires_grad for n, p in model.named_parameters()}}
        print(name, f"{len(fit.epoch_log)} validations, {fit.train_examples} examples", flush=True)
    torch.save(fits, out)


def compare(before: str, after: str) -> int:
    old, new = torch.load(before), torch.load(after)
    different = 0
    for name in old:
        a, b = old[name], new[name]
        differs = [key for key in a if key != "weights" and a[key] != b[key]]
        if a["weights"].keys() != b["weights"].keys() or not all(torch.equal(a["weights"][n], b["weights"][n])
                                                                 for n in a["weights"]):
            differs.append("weights")
        different += bool(differs)
        print(name, f"DIFFERENT: {differs}" if differs else "identical")
    print(f"{len(old)} configurations, {different} different")
    return int(bool(different))


if __name__ == "__main__":
    if sys.argv[1:2] == ["save"] and len(sys.argv) == 3:
        save(sys.argv[2])
    elif sys.argv[1:2] == ["compare"] and len(sys.argv) == 4:
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
