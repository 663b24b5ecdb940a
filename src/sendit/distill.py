"""Knowledge distillation: the teacher's logits computed once, cached on disk, mixed into the loss.

A distilled method is a study variant (a method entry with `distill:`, configs/distill_minilm.yaml):
planned, run, resumed and summarised like any other; `loss_for` gives a run its loss, and
`compare_with_teachers` sets the students beside their teacher (accuracy, size, inference speed).

A transfer set (`data.transfer`: texts from outside the student's sample) is where distillation
usually pays: a run with `transfer: teacher` also trains on those texts with the teacher's soft targets
alone, and its control, `transfer: labels`, on the same texts with their gold labels, without KD.

SEND-IT ran its teacher inside every training step; here the teacher labels the training set once
(bf16, length-sorted batches) and every student run reuses the cached logits. The cache key covers
the teacher's weights and config, the exact training texts and the teacher's tokenizer, so a change
of any of them computes fresh logits.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from sendit.artifacts import Predictor
from sendit.config import ConfigError, DataConfig, DistillConfig, RunConfig, StudyConfig, load_run
from sendit.io import atomic_write, atomic_write_csv
from sendit.methods import get_method
from sendit.models import cache_dir, count_parameters
from sendit.results import METRICS_FILE, collect, select, selection_scores


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float,
            alpha: float, unlabelled: torch.Tensor | None = None) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y) per example, T^2 * KL
    alone for an `unlabelled` one (a transfer text learnt from the teacher only), averaged over the batch.

    The T^2 keeps the soft term's gradients on the scale of the hard term's as T grows.
    """
    soft = F.kl_div(F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher / temperature, dim=-1),
                    reduction="none", log_target=True).sum(-1) * temperature**2
    per_example = alpha * soft + (1 - alpha) * F.cross_entropy(student, labels, reduction="none")
    if unlabelled is not None:
        per_example = torch.where(unlabelled, soft, per_example)
    return per_example.mean()


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


def distillation_loss(cfg: DistillConfig, logits_by_example: torch.Tensor, unlabelled: torch.Tensor | None = None):
    """The trainer's loss hook: KD against the cached teacher logits of the batch's examples; an example
    marked in `unlabelled` (by example) learns from them alone."""

    def loss(outputs, batch, index) -> torch.Tensor:
        rows = torch.as_tensor(index)
        teacher = logits_by_example[rows].to(outputs.logits.device)
        marked = unlabelled[rows].to(outputs.logits.device) if unlabelled is not None else None
        return kd_loss(outputs.logits.float(), teacher, batch["labels"], cfg.temperature, cfg.alpha, marked)

    return loss


def loss_for(cfg: RunConfig, splits):
    """`run.execute`'s make_loss for `cfg`: KD against the teacher's logits on the training texts
    (transfer texts included) when cfg.distill is set, else None (the model's own cross-entropy)."""
    if cfg.distill is None:
        return None

    def make_loss():
        soft_targets, _ = teacher_logits(cfg.distill, splits.train["text"].tolist(), cfg.train.eval_batch_size)
        unlabelled = (torch.tensor(splits.train["unlabelled"].to_numpy(dtype=bool))
                      if "unlabelled" in splits.train else None)
        return distillation_loss(cfg.distill, soft_targets, unlabelled)

    return make_loss


def measure_inference(run_dir: Path, texts: list[str], batch_size: int) -> dict:
    """Forward-pass examples/s of a saved run in bf16 on length-sorted batches (tokenising excluded),
    in its deployed form: a LoRA/DoRA/IA3 adapter folded into the weights (same function, no extra
    matmuls); parameters counted before folding."""
    predictor = Predictor.from_run(run_dir, as_trained=True)
    _, total = count_parameters(predictor.model)
    predictor = dataclasses.replace(predictor, model=get_method(predictor.cfg.method).for_inference(predictor.model))
    encoded = predictor.encode(texts)
    predictor.logits(encoded.subset(np.arange(min(len(texts), batch_size))), batch_size, "bf16")  # warm-up
    _, seconds = predictor.logits(encoded, batch_size, "bf16")
    return {"inference_examples_per_s_bf16": len(texts) / seconds, "params": total, "model": predictor.cfg.model.name}


def teacher_run(path: str | Path) -> Path:
    """A run directory as it is; a study directory: its best run on validation, by the study's selection
    metric (each method's selected configuration, then the best of those; test metrics are not consulted)."""
    path = Path(path)
    if (path / METRICS_FILE).is_file():
        return path
    if not (path / "runs").is_dir():
        raise ConfigError(f"{path}: neither a finished run (no {METRICS_FILE}) nor a study directory (no runs/)")
    chosen = select(collect(path))
    if chosen.empty:
        raise ConfigError(f"{path}: a study without finished runs, no teacher yet")
    return path / "runs" / chosen.loc[selection_scores(chosen).idxmax(), "run_id"]


def resolve_teachers(cfg: StudyConfig) -> StudyConfig:
    """`cfg` with each distilled method's teacher resolved to a run directory, checked to have been
    trained on the study's data: a teacher that saw other splits may have seen the student's test set."""
    methods = []
    for index, method in enumerate(cfg.methods):
        if method.distill is not None:
            where = f"methods[{index}] ({method.label or method.name}).distill.teacher"
            try:
                run = teacher_run(method.distill.teacher)
                theirs = load_run(run / "config.yaml").data
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
            differ = [f.name for f in dataclasses.fields(DataConfig) if f.name != "label_names"
                      and getattr(theirs, f.name) != getattr(cfg.data, f.name)]
            if differ:
                raise ConfigError(f"{where}: {run} was trained on other data ("
                                  + "; ".join(f"data.{k}: {getattr(cfg.data, k)!r} here, {getattr(theirs, k)!r} there"
                                              for k in differ)
                                  + "): give the study the teacher's data block")
            method = dataclasses.replace(method, distill=dataclasses.replace(method.distill, teacher=str(run)))
        methods.append(method)
    return dataclasses.replace(cfg, methods=methods)


def inference_speeds(run_dirs: list[Path], texts: list[str], batch_size: int, rounds: int = 2) -> dict[Path, dict]:
    """`measure_inference` of each run, the fastest of `rounds` interleaved rounds: the first model measured in a
    process pays one-off costs (444 vs 715 ex/s for the same teacher, which made every student look faster
    beside it), and a moment of load on a shared machine slows one round of one model, not its best."""
    fastest: dict[Path, dict] = {}
    for _ in range(rounds):
        for run_dir in run_dirs:
            measured = measure_inference(run_dir, texts, batch_size)
            speed = measured["inference_examples_per_s_bf16"]
            if run_dir not in fastest or speed > fastest[run_dir]["inference_examples_per_s_bf16"]:
                fastest[run_dir] = measured
    return fastest


def compare_with_teachers(directory: Path, cfg: StudyConfig) -> pd.DataFrame:
    """distill_summary.csv: each teacher, then each method's selected configuration as summary.csv has
    it (mean, std over seeds), with parameters, size and inference speed (`inference_speeds`, measured
    together at the study's end); speed-up over the first teacher."""
    teachers = list(dict.fromkeys(Path(m.distill.teacher) for m in cfg.methods if m.distill is not None))
    texts = pd.read_csv(teachers[0] / "predictions.csv", keep_default_na=False)["text"].tolist()  # the test set
    students = list(pd.read_csv(directory / "summary.csv").itertuples())
    speeds = inference_speeds(teachers + [directory / "runs" / s.best_run for s in students], texts,
                              cfg.train.eval_batch_size)

    def entry(run_dir: Path, name: str, **scores) -> dict:
        speed = speeds[run_dir]
        return {"model": f"{name} ({speed['model']})", **scores, "params": speed["params"],
                "inference_examples_per_s_bf16": speed["inference_examples_per_s_bf16"]}

    rows = []
    for teacher in teachers:
        metrics = json.loads((teacher / METRICS_FILE).read_text())
        row = metrics["row"]
        rows.append(entry(teacher, "teacher", train_size=metrics["data_stats"]["split_sizes"]["train"], seeds=1,
                          test_accuracy_mean=row["test_accuracy"], test_accuracy_std=0.0,
                          test_f1_macro_mean=row["test_f1_macro"], test_f1_macro_std=0.0, size_mb=row["adapter_mb"]))
    for student in students:
        rows.append(entry(directory / "runs" / student.best_run, student.method, train_size=student.train_size,
                          seeds=student.n_seeds, test_accuracy_mean=student.test_accuracy_mean,
                          test_accuracy_std=student.test_accuracy_std, test_f1_macro_mean=student.test_f1_macro_mean,
                          test_f1_macro_std=student.test_f1_macro_std, size_mb=student.adapter_mb_mean))
    summary = pd.DataFrame(rows)
    summary["speedup_vs_teacher"] = summary.inference_examples_per_s_bf16 / rows[0]["inference_examples_per_s_bf16"]
    atomic_write_csv(directory / "distill_summary.csv", summary)
    return summary
