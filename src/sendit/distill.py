"""Knowledge distillation: the teacher's logits computed once, cached on disk, mixed into the loss.

SEND-IT ran its teacher inside every training step; here the teacher labels the training set once
(bf16, length-sorted batches) and every student run reuses the cached logits. The cache key covers
the teacher's weights and config, the exact training texts and the teacher's tokenizer, so a change
of any of them computes fresh logits.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from sendit.artifacts import Predictor
from sendit.config import DistillConfig, RunConfig
from sendit.io import atomic_write
from sendit.models import cache_dir


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float,
            alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y), averaged over the batch.

    The T^2 keeps the soft term's gradients on the scale of the hard term's as T grows.
    """
    soft = F.kl_div(F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher / temperature, dim=-1),
                    reduction="batchmean", log_target=True)
    return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(student, labels)


def cache_key(teacher_dir: Path, texts: list[str], tokenizer, max_length: int) -> str:
    """Hash of what the logits depend on: teacher weights + config, texts, tokenizer, max length."""
    digest = hashlib.sha256()
    for name in ("adapter.safetensors", "config.yaml"):
        digest.update((teacher_dir / name).read_bytes())
    digest.update(json.dumps(texts).encode())
    digest.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    digest.update(f"{type(tokenizer).__name__}|{max_length}".encode())
    return digest.hexdigest()[:32]


def teacher_logits(cfg: DistillConfig, texts: list[str], batch_size: int = 128) -> tuple[torch.Tensor, bool]:
    """The teacher's logits on `texts` (in order), from the cache when present; (logits, was_cached)."""
    from safetensors.torch import load_file, save_file

    teacher_dir = Path(cfg.teacher)
    teacher = Predictor.from_run(teacher_dir)
    key = cache_key(teacher_dir, texts, teacher.tokenizer, teacher.cfg.model.max_length)
    path = cache_dir() / "teacher_logits" / f"{key}.safetensors"
    if path.is_file():
        return load_file(str(path))["logits"], True
    logits, _ = teacher.logits(teacher.encode(texts), batch_size)
    tensor = torch.from_numpy(logits)
    atomic_write(path, lambda tmp: save_file({"logits": tensor}, str(tmp)))
    return tensor, False


def distillation_loss(cfg: DistillConfig, logits_by_example: torch.Tensor):
    """The trainer's loss hook: KD against the cached teacher logits of the batch's examples."""

    def loss(outputs, batch, index) -> torch.Tensor:
        teacher = logits_by_example[torch.as_tensor(index)].to(outputs.logits.device)
        return kd_loss(outputs.logits.float(), teacher, batch["labels"], cfg.temperature, cfg.alpha)

    return loss


def loss_for(cfg: RunConfig, splits):
    """`run.execute`'s make_loss for `cfg`: KD against the teacher's logits on the training texts
    when cfg.distill is set, else None (the model's own cross-entropy)."""
    if cfg.distill is None:
        return None

    def make_loss():
        soft_targets, _ = teacher_logits(cfg.distill, splits.train["text"].tolist(), cfg.train.eval_batch_size)
        return distillation_loss(cfg.distill, soft_targets)

    return make_loss


def measure_inference(run_dir: Path, texts: list[str], batch_size: int) -> dict:
    """Forward-pass examples/s of a saved run in bf16 on length-sorted batches (tokenising excluded),
    in its deployed form: a LoRA/DoRA/IA3 adapter folded into the weights (same function, no extra
    matmuls); parameters counted before folding."""
    from dataclasses import replace

    from sendit.models import count_parameters

    predictor = Predictor.from_run(run_dir)
    _, total = count_parameters(predictor.model)
    predictor = replace(predictor, model=merged(predictor.model))
    encoded = predictor.encode(texts)
    predictor.logits(encoded.subset(np.arange(min(len(texts), batch_size))), batch_size, "bf16")  # warm-up
    _, seconds = predictor.logits(encoded, batch_size, "bf16")
    return {"inference_examples_per_s_bf16": len(texts) / seconds, "params": total, "model": predictor.cfg.model.name}


def merged(model):
    """The model with its adapter merged into the base weights where PEFT can; else unchanged."""
    try:
        return model.merge_and_unload()
    except (AttributeError, ValueError, NotImplementedError):  # prompt tuning, no adapter
        return model


def run_distillation(teacher: Path, student: str, method, train, seeds: list[int], out: Path, data=None,
                     kd: DistillConfig | None = None, console=None) -> "pd.DataFrame":
    """Students with and without KD (same seeds, same data) beside their teacher; returns the summary."""
    import pandas as pd
    from dataclasses import replace

    from sendit.config import ModelConfig, load_run, save_yaml
    from sendit.data import prepare
    from sendit.run import execute
    from sendit.results import is_done, write_results

    teacher_cfg = load_run(teacher / "config.yaml")
    kd = replace(kd or DistillConfig(), teacher=str(teacher))
    data = data or teacher_cfg.data
    splits = prepare(data)
    model = ModelConfig(name=student, max_length=teacher_cfg.model.max_length)
    label = method.label or method.name
    for seed in seeds:
        for variant, distill in ((f"{label}", None), (f"{label}+kd", kd)):
            run_dir = out / "runs" / f"{variant}-seed{seed}"
            if is_done(run_dir):
                continue
            cfg = RunConfig(data=data, model=model, method=replace(method, label=variant),
                            train=replace(train, seed=seed), distill=distill)
            row = execute(cfg, run_dir, splits, make_loss=loss_for(cfg, splits))
            if console:
                console.print(f"  {run_dir.name}: test acc {row['test_accuracy']:.4f}, F1 {row['test_f1_macro']:.4f}")
    results = write_results(out)
    texts = splits.test["text"].tolist()
    teacher_eval = _evaluate_teacher(teacher, splits)
    speed = {"teacher": measure_inference(teacher, texts, train.eval_batch_size)}
    speed["student"] = measure_inference(next((out / "runs").glob(f"{label}+kd-seed*")), texts, train.eval_batch_size)
    summary = summarise(results, teacher_eval, speed, teacher, out)
    save_yaml(RunConfig(data=data, model=model, method=method, train=train, distill=kd), out / "config.yaml")
    return summary


def _evaluate_teacher(teacher: Path, splits) -> dict:
    from sendit.evaluate import classification_metrics

    predictor = Predictor.from_run(teacher)
    encoded = predictor.encode(splits.test["text"].tolist(), splits.test["label"].to_numpy())
    logits, _ = predictor.logits(encoded)
    return classification_metrics(encoded.labels, logits.argmax(-1), predictor.label_names)


def summarise(results, teacher_eval: dict, speed: dict, teacher: Path, out: Path):
    """One table: teacher vs student without and with KD (mean, std over seeds), speed and size."""
    import pandas as pd

    from sendit.io import atomic_write_csv
    from sendit.measure import file_mb

    rows = [{"model": f"teacher ({speed['teacher']['model']})", "seeds": 1,
             "test_accuracy_mean": teacher_eval["accuracy"], "test_accuracy_std": 0.0,
             "test_f1_macro_mean": teacher_eval["f1_macro"], "test_f1_macro_std": 0.0,
             "params": speed["teacher"]["params"], "size_mb": file_mb(teacher / "adapter.safetensors"),
             "inference_examples_per_s_bf16": speed["teacher"]["inference_examples_per_s_bf16"]}]
    for method, group in results.groupby("method", sort=False):
        rows.append({"model": f"{method} ({speed['student']['model']})", "seeds": len(group),
                     "test_accuracy_mean": group.test_accuracy.mean(), "test_accuracy_std": group.test_accuracy.std(ddof=1),
                     "test_f1_macro_mean": group.test_f1_macro.mean(), "test_f1_macro_std": group.test_f1_macro.std(ddof=1),
                     "params": speed["student"]["params"], "size_mb": group.adapter_mb.mean(),
                     "inference_examples_per_s_bf16": speed["student"]["inference_examples_per_s_bf16"]})
    summary = pd.DataFrame(rows)
    summary["speedup_vs_teacher"] = summary.inference_examples_per_s_bf16 / rows[0]["inference_examples_per_s_bf16"]
    atomic_write_csv(out / "distill_summary.csv", summary)
    return summary
