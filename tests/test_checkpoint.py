"""Checkpoints inside a run, on the tiny BERT: a fit that dies right after a checkpoint and is started
again ends exactly as an uninterrupted fit (epoch log, kept weights), whatever the phase kind and the
place in the epoch; a checkpoint it cannot use is ignored with a warning. (The same through `sendit
train` killed with SIGKILL, and through a study: tests/test_resume.py.)"""
import functools
import logging

import pytest
import torch

from conftest import LABELS, dying_after_save
from sendit.artifacts import build_model
from sendit.checkpoint import CHECKPOINT_FILE, Checkpoints
from sendit.config import ConfigError, DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from sendit.run import seed_everything
from sendit.train import Batching, Trainer


def fit(encoded_tweets, checkpoints, method, options=None, precision="fp32", eval_precision=None, **train):
    """A fresh process's tiny-bert fit (seeded as `execute` seeds): 320 examples in batches of 16, two
    epochs, two validations an epoch; (trained weights, result)."""
    _, encoded, pad_id = encoded_tweets
    train_cfg = TrainConfig(**{"batch_size": 16, "bf16": False, "seed": 1, "epochs": 2, "evals_per_epoch": 2,
                               **train})
    cfg = RunConfig(data=DataConfig(label_names=LABELS), model=ModelConfig(name="tiny-bert", max_length=32),
                    method=MethodConfig(name=method, lr=3e-3, options=options or {}), train=train_cfg)
    seed_everything(train_cfg.seed)
    model, _, adapter = build_model(cfg, LABELS)
    trainer = Trainer(model, adapter, train_cfg, Batching(pad_id), LABELS, precision=precision,
                      eval_precision=eval_precision, checkpoints=checkpoints)
    result = trainer.fit(encoded["train"], encoded["val"])
    return {n: p.detach().clone() for n, p in model.named_parameters() if n in trainer.saved_names}, result


def assert_same_fit(got, expected) -> None:
    (weights, result), (expected_weights, expected_result) = got, expected
    assert result.epoch_log == expected_result.epoch_log  # every loss and score, exactly
    assert (result.best, result.train_examples, result.stopped_early) == (
        expected_result.best, expected_result.train_examples, expected_result.stopped_early)
    assert weights.keys() == expected_weights.keys()
    assert all(torch.equal(weights[n], expected_weights[n]) for n in weights)


TWO_PHASES = {"method": "two_phase", "options": {"full_epochs": 1, "head_epochs": 2, "head_lr": 1e-2}}
CASES = {  # name: (the fit, the checkpoint it dies after)
    "mid-epoch, train loss of 3 steps summed": ({"method": "lora"}, lambda s: s["step"] == 13),
    "at an epoch's end, next order not drawn": ({"method": "full"}, lambda s: s["step"] == 20),
    "patience counting": ({"method": "full", "eval_every_steps": 3, "early_stopping_patience": 3},
                          lambda s: s["evals_since_best"] == 2),
    "token budgets, fp16 loss scale": ({"method": "lora", "precision": "fp16", "batch_tokens": 200},
                                       lambda s: s["step"] == 9),
    "two-phase, in the end-to-end phase": (TWO_PHASES, lambda s: s["phase"] == 0 and s["step"] == 7),
    "two-phase, in the head-features phase": (TWO_PHASES, lambda s: s["phase"] == 1 and s["step"] == 25),
    # The head phase pools its features through the forward that accelerate wrapped in bf16 autocast.
    "two-phase trained in bf16, validated in fp32, in the head-features phase": (
        {**TWO_PHASES, "precision": "bf16", "eval_precision": "fp32"}, lambda s: s["phase"] == 1 and s["step"] == 5),
}


@pytest.mark.parametrize("case", CASES)
def test_a_fit_resumed_from_its_checkpoint_ends_as_an_uninterrupted_one(encoded_tweets, tmp_path, monkeypatch,
                                                                       caplog, case):
    # fp16: the loss scale grows after every step (not every 2,000), so a tiny fit's checkpoint holds one that
    # matters (grown, then halved at each overflow).
    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, growth_interval=1))
    run, when = CASES[case]
    uninterrupted = fit(encoded_tweets, None, **run)
    with dying_after_save(when):
        fit(encoded_tweets, Checkpoints(tmp_path, "run", 0), **run)
    caplog.set_level(logging.INFO, logger="sendit")
    resumed = fit(encoded_tweets, Checkpoints(tmp_path, "run", 0), **run)
    assert "resuming at step" in caplog.text
    assert_same_fit(resumed, uninterrupted)


def spoil_with_garbage(path, encoded_tweets) -> None:
    path.write_bytes(b"not a checkpoint")
    (path.parent / f".{CHECKPOINT_FILE}.x1.tmp").write_bytes(b"a save the kill interrupted")


def spoil_with_another_runs(path, encoded_tweets) -> None:
    with dying_after_save(lambda s: s["step"] == 5):
        fit(encoded_tweets, Checkpoints(path.parent, "another run", 0), "lora", max_steps=8)


@pytest.mark.parametrize("spoil, why", [(spoil_with_garbage, "cannot be read"),
                                        (spoil_with_another_runs, "another config")])
def test_a_checkpoint_the_run_cannot_use_is_ignored_with_a_warning(encoded_tweets, tmp_path, caplog, spoil, why):
    spoil(tmp_path / CHECKPOINT_FILE, encoded_tweets)
    uninterrupted = fit(encoded_tweets, None, "lora", max_steps=8)
    got = fit(encoded_tweets, Checkpoints(tmp_path, "run", 0), "lora", max_steps=8)
    assert why in caplog.text and "starts from its beginning" in caplog.text
    assert_same_fit(got, uninterrupted)
    assert [path.name for path in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # its own now; no partial save left


def test_a_checkpoint_is_saved_only_when_due(encoded_tweets, tmp_path):
    fit(encoded_tweets, Checkpoints(tmp_path, "run", 10), "lora", max_steps=8)  # seconds, not ten minutes
    assert not (tmp_path / CHECKPOINT_FILE).exists()


def test_negative_checkpoint_minutes_are_refused():
    with pytest.raises(ConfigError, match="train.checkpoint_minutes=-1"):
        TrainConfig(checkpoint_minutes=-1)
