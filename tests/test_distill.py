"""Distillation: the teacher-logit cache and its keys, shrunk students (the KD loss itself: test_trainer_behaviour)."""
import numpy as np
import pytest
import torch

from sendit.config import DistillConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from sendit.artifacts import load
from sendit.distill import loss_for, teacher_logits
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
    labels = torch.from_numpy(separable_splits.train["label"].to_numpy())
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


@pytest.mark.parametrize("method", ["lora", "ia3", "prompt_tuning"])
def test_merged_student_computes_the_same_function(tmp_path, method):
    """Inference speed is measured on the deployed form: the adapter folded into the weights."""
    from conftest import tiny_data, tiny_run

    from sendit.distill import merged

    run = tiny_run(tmp_path / method, tiny_data(tmp_path), method=method)
    model, tokenizer, _ = load(run)
    batch = tokenizer(["i love this", "so sad right now today"], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**batch).logits
        folded = merged(model)
        after = folded(**batch).logits
    assert (type(folded) is type(model)) == (method == "prompt_tuning")  # prompt tuning cannot fold
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
