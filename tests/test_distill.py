"""Distillation: the teacher-logit cache and its keys, shrunk students, distillation as a study
(the KD loss itself: test_trainer_behaviour)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import tiny_data, tiny_run
from typer.testing import CliRunner

from sendit.cli import app
from sendit.config import DistillConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig, load_run, to_dict
from sendit.artifacts import load
from sendit import distill
from sendit.distill import inference_speeds, loss_for, teacher_logits
from sendit.run import execute


@pytest.fixture
def teacher_run(splits, tmp_path, monkeypatch):
    monkeypatch.setenv("SENDIT_CACHE", str(tmp_path / "cache"))
    cfg = RunConfig(model=ModelConfig(name="tiny-bert", max_length=32), method=MethodConfig(name="full", lr=1e-3),
                    train=TrainConfig(max_steps=4, batch_size=16, bf16=False))
    execute(cfg, tmp_path / "teacher", splits)
    return tmp_path / "teacher"


def test_cached_teacher_logits_equal_fresh_ones_and_keys_miss_on_change(teacher_run, splits, tmp_path):
    texts = splits.train["text"].tolist()
    cfg = DistillConfig(teacher=str(teacher_run))
    fresh, cached_before = teacher_logits(cfg, texts)
    again, cached_after = teacher_logits(cfg, texts)
    assert (cached_before, cached_after) == (False, True)
    torch.testing.assert_close(fresh, again)
    model, tokenizer, run_cfg = load(teacher_run)
    from sendit.batching import collate, encode

    encoded = encode(tokenizer, texts[:8], np.zeros(8, dtype=int), run_cfg.model.max_length)
    batch = collate(encoded, np.arange(8), tokenizer.pad_token_id)
    batch.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(fresh[:8], model(**batch).logits, atol=1e-5, rtol=1e-5)

    assert teacher_logits(cfg, texts[:-1])[1] is False, "other data must miss the cache"
    (teacher_run / "config.yaml").write_text((teacher_run / "config.yaml").read_text()
                                             .replace("max_length: 32", "max_length: 24"))
    assert teacher_logits(cfg, texts)[1] is False, "another tokenizer setting must miss the cache"
    from safetensors.torch import load_file, save_file

    weights = load_file(str(teacher_run / "adapter.safetensors"))
    name = next(iter(weights))
    weights[name] = weights[name] + 1
    save_file(weights, str(teacher_run / "adapter.safetensors"))
    assert teacher_logits(cfg, texts)[1] is False, "another teacher must miss the cache"


def test_tokenizer_change_misses_the_cache(teacher_run, splits, monkeypatch):
    from sendit import distill

    texts = splits.train["text"].tolist()
    key = distill.cache_key(teacher_run, texts, load(teacher_run)[1], 32)
    tokenizer = load(teacher_run)[1]
    tokenizer.add_tokens(["brandnewtoken"])
    assert distill.cache_key(teacher_run, texts, tokenizer, 32) != key


def test_shrunk_student_follows_its_teacher_even_against_the_labels(separable_splits, tmp_path, monkeypatch):
    """alpha=1: the loss is the teacher's alone. A teacher that inverts every training label makes the
    student predict the opposite of the test labels; with the KD term ignored, misweighted or fed another
    example's teacher logits, the student would learn the labels or nothing."""
    from sendit import distill
    from sendit.models import count_parameters, load_model, shrink

    small = shrink(str(_save_tiny(tmp_path)), [0], tmp_path / "student")
    model, _ = load_model(str(small), 2)
    assert model.config.num_hidden_layers == 1
    labels = torch.tensor(separable_splits.train["label"].to_numpy())
    inverted = torch.nn.functional.one_hot(1 - labels, 2).float() * 6 - 3
    monkeypatch.setattr(distill, "teacher_logits", lambda cfg, texts, batch_size: (inverted, True))

    def test_accuracy(kd: DistillConfig | None, name: str) -> float:
        cfg = RunConfig(model=ModelConfig(name=str(small), max_length=32), method=MethodConfig(name="full", lr=3e-3),
                        train=TrainConfig(epochs=2, batch_size=16, bf16=False, seed=1), distill=kd)
        row = execute(cfg, tmp_path / name, separable_splits, make_loss=loss_for(cfg, separable_splits))
        assert row["trainable_params"] == count_parameters(model)[1]
        return row["test_accuracy"]

    assert test_accuracy(None, "plain") >= 0.9
    assert test_accuracy(DistillConfig(teacher="inverting-teacher", alpha=1.0), "kd") <= 0.1
    assert load(tmp_path / "kd")[2].distill.teacher == "inverting-teacher"


def _save_tiny(tmp_path):
    from sendit.models import load_model

    model, tokenizer = load_model("tiny-bert", 2)
    model.base_model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


@pytest.fixture
def tiny_teacher(tmp_path, monkeypatch):
    """A full fine-tuning teacher on 400 synthetic tweets, and that data."""
    monkeypatch.setenv("SENDIT_CACHE", str(tmp_path / "cache"))
    data = tiny_data(tmp_path)
    return data, tiny_run(tmp_path / "teacher", data, method="full", lr=1e-3)


def distillation_yaml(tmp_path, data, teacher):
    """configs/distill_minilm.yaml in small: one method with and without KD, two seeds."""
    arm = {"name": "full", "lr": 1e-3}
    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump({
        "name": "kd", "output_dir": str(tmp_path / "runs"), "data": to_dict(data),
        "model": {"name": "tiny-bert", "max_length": 32},
        "train": {"max_steps": 3, "batch_size": 16, "bf16": False, "threads": 1},
        "methods": [arm, {**arm, "label": "full+kd", "distill": {"teacher": str(teacher), "alpha": 0.5}}],
        "seeds": [1, 2]}))
    return path


def test_a_distillation_study_runs_resumes_and_compares_its_arms(tiny_teacher, tmp_path):
    data, teacher = tiny_teacher
    config = distillation_yaml(tmp_path, data, teacher)
    first = CliRunner().invoke(app, ["study", str(config)])
    assert first.exit_code == 0, first.output
    directory = tmp_path / "runs" / "kd"
    results = pd.read_csv(directory / "results.csv")
    assert results.groupby("method").seed.apply(sorted).to_dict() == {"full": [1, 2], "full+kd": [1, 2]}
    summary = pd.read_csv(directory / "summary.csv")
    assert summary.method.tolist() == ["full", "full+kd"] and (summary.n_seeds == 2).all()
    assert pd.read_csv(directory / "pairwise.csv")[["method_a", "method_b"]].values.tolist() == [["full", "full+kd"]]
    for seed in (1, 2):  # the same seed and data, another loss: KD reached the study's runs
        plain, kd = (directory / "runs" / f"{arm}-lr0.001-bs16-ep1-seed{seed}" for arm in ("full", "full+kd"))
        assert load_run(plain / "config.yaml").distill is None
        assert load_run(kd / "config.yaml").distill == DistillConfig(teacher=str(teacher), alpha=0.5)
        losses = [pd.read_csv(run / "epoch_log.csv").train_loss.iloc[0] for run in (plain, kd)]
        assert losses[0] != pytest.approx(losses[1])
    beside = pd.read_csv(directory / "distill_summary.csv")
    assert beside.model.tolist() == ["teacher (tiny-bert)", "full (tiny-bert)", "full+kd (tiny-bert)"]
    assert beside.test_accuracy_mean[0] == json.loads((teacher / "metrics.json").read_text())["row"]["test_accuracy"]
    assert beside.test_accuracy_mean[1:].tolist() == pytest.approx(summary.test_accuracy_mean.tolist())

    finished = {path: path.stat().st_mtime_ns for path in directory.glob("runs/*/metrics.json")}
    again = CliRunner().invoke(app, ["study", str(config)])
    assert again.exit_code == 0 and "4 runs, 4 already done" in again.output, again.output
    assert {path: path.stat().st_mtime_ns for path in directory.glob("runs/*/metrics.json")} == finished


def test_a_teacher_trained_on_other_data_or_missing_is_refused_before_any_work(tiny_teacher, tmp_path):
    data, teacher = tiny_teacher
    config = distillation_yaml(tmp_path, data, teacher)
    out = CliRunner().invoke(app, ["study", str(config), "-s", "data.sample=300"])
    message = " ".join(out.output.split())  # rich wraps long paths
    assert out.exit_code == 2
    assert "methods[1] (full+kd).distill.teacher" in message and "data.sample: 300 here, None there" in message
    out = CliRunner().invoke(app, ["study", str(distillation_yaml(tmp_path, data, tmp_path / "none"))])
    assert out.exit_code == 2 and "neither a finished run" in " ".join(out.output.split())
    assert not (tmp_path / "runs" / "kd" / "runs").exists()


def test_a_study_as_teacher_means_its_best_run_on_validation(tmp_path):
    """Selection as for a study's report: validation F1 only (here test accuracy would pick `full`)."""
    from sendit import distill

    for run_id, method, val, test in (("lora-seed1", "lora", 0.90, 0.70), ("full-seed1", "full", 0.80, 0.95)):
        (tmp_path / "runs" / run_id).mkdir(parents=True)
        row = {"method": method, "seed": 1, "best_val_f1": val, "test_accuracy": test, "test_f1_macro": test}
        (tmp_path / "runs" / run_id / "metrics.json").write_text(json.dumps({"row": row}))
    assert distill.teacher_run(tmp_path) == tmp_path / "runs" / "lora-seed1"
    assert distill.teacher_run(tmp_path / "runs" / "full-seed1") == tmp_path / "runs" / "full-seed1"


def test_distill_command_is_a_study_with_and_without_kd(tiny_teacher, tmp_path):
    _, teacher = tiny_teacher
    out = tmp_path / "distilled"
    result = CliRunner().invoke(app, ["distill", "--teacher", str(teacher), "--student", "tiny-bert", "--lr", "1e-3",
                                      "--batch-size", "16", "--seeds", "3", "--out", str(out), "-s",
                                      "train.max_steps=2", "-s", "train.threads=1", "-s", "train.bf16=false",
                                      "-s", "report=false"])
    assert result.exit_code == 0, result.output
    study = yaml.safe_load((out / "config.yaml").read_text())
    assert study["data"] == to_dict(load_run(teacher / "config.yaml").data)  # the teacher's data and splits
    assert [(m["label"], m["distill"] and m["distill"]["teacher"]) for m in study["methods"]] == [
        ("full", None), ("full+kd", str(teacher))]
    assert pd.read_csv(out / "results.csv").run_id.tolist() == ["full-lr0.001-bs16-ep1-seed3",
                                                                "full+kd-lr0.001-bs16-ep1-seed3"]
    assert "distillation: test set" in result.output and (out / "distill_summary.csv").is_file()


def test_inference_speeds_are_the_fastest_of_interleaved_rounds(monkeypatch, tmp_path):
    """The teacher measured first in a process pays one-off costs: measured alone, once, it looked slower than
    it is and every student's speed-up larger. Rounds interleave the models and keep each one's fastest."""
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    slow_first = iter([400.0, 900.0, 700.0, 880.0])  # teacher, student, teacher, student
    calls = []

    def measure(run_dir, texts, batch_size):
        calls.append(run_dir)
        return {"inference_examples_per_s_bf16": next(slow_first), "params": 1, "model": run_dir.name}

    monkeypatch.setattr(distill, "measure_inference", measure)
    speeds = inference_speeds([teacher, student], ["a text"], 8)
    assert calls == [teacher, student, teacher, student]
    assert {run: m["inference_examples_per_s_bf16"] for run, m in speeds.items()} == {teacher: 700.0, student: 900.0}
