"""The trainer's decisions, pinned on the tiny BERT: which checkpoint it keeps, when it stops, what the
distillation loss adds, and the exact loss curve of a fixed-seed run."""
import itertools

import numpy as np
import pytest
import torch

from conftest import LABELS
from sendit import train as train_module
from sendit.config import DataConfig, DistillConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from sendit.distill import distillation_loss, kd_loss
from sendit.artifacts import build_model
from sendit.evaluate import classification_metrics
from sendit.run import seed_everything
from sendit.train import Batching, Trainer


def fit_tiny(encoded_tweets, method: str, loss=None, lr=1e-2, options=None, selection_metric="f1_macro", **train):
    """One fp32 tiny-bert fit on the synthetic tweets (seeded as `execute` seeds); (trainer, result)."""
    _, encoded, pad_id = encoded_tweets
    train_cfg = TrainConfig(**{"batch_size": 16, "bf16": False, "seed": 1, **train})
    cfg = RunConfig(data=DataConfig(label_names=LABELS), model=ModelConfig(name="tiny-bert", max_length=32),
                    method=MethodConfig(name=method, lr=lr, options=options or {}), train=train_cfg)
    seed_everything(train_cfg.seed)
    model, _, adapter = build_model(cfg, LABELS)
    trainer = Trainer(model, adapter, train_cfg, Batching(pad_id), LABELS, precision="fp32", loss=loss,
                      selection_metric=selection_metric)
    return trainer, trainer.fit(encoded["train"], encoded["val"])


def script_val_f1(monkeypatch, scores: list[float]) -> None:
    """Validations score `scores` in turn (then the last one again), whatever the model predicts."""
    calls = itertools.count()

    def scripted(labels, predictions, label_names):
        score = scores[min(next(calls), len(scores) - 1)]
        return {"accuracy": score, "f1_macro": score}

    monkeypatch.setattr(train_module, "classification_metrics", scripted)


def script_val_predictions(monkeypatch, predictions: list[np.ndarray]) -> None:
    """Validations predict `predictions` in turn (then the last again), scored by the real metrics."""
    calls = itertools.count()

    def scripted(kind):
        return np.eye(2, dtype=np.float32)[predictions[min(next(calls), len(predictions) - 1)]]

    for kind in train_module.PHASE_KINDS.values():
        monkeypatch.setattr(kind, "val_logits", scripted)


def accurate_and_balanced(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predictions where accuracy and macro-F1 disagree: the majority class everywhere (the more accurate),
    and the labels with as many examples of each class wrong (the higher macro-F1)."""
    counts = np.bincount(labels, minlength=2)
    balanced = labels.copy()
    wrong = np.concatenate([np.flatnonzero(labels == c)[:counts.min() // 2 + 1] for c in (0, 1)])
    balanced[wrong] = 1 - balanced[wrong]
    accurate = np.full_like(labels, counts.argmax())
    scores = [classification_metrics(labels, p, LABELS) for p in (accurate, balanced)]
    assert scores[0]["accuracy"] > scores[1]["accuracy"] and scores[0]["f1_macro"] < scores[1]["f1_macro"]
    return accurate, balanced


def trained_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if n in trainer.saved_names}


def weights_at_each_validation(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Filled, as the trainer validates, with its trained weights at each validation."""
    at_validation = []
    record = Trainer._record

    def snapshot_then_record(self, *args):
        at_validation.append(trained_weights(self))
        record(self, *args)

    monkeypatch.setattr(Trainer, "_record", snapshot_then_record)
    return at_validation


# -- best checkpoint ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["lora", "head"])  # an end-to-end phase, a head-features phase
def test_fit_ends_on_the_weights_of_the_best_validation(encoded_tweets, monkeypatch, method):
    """Scores 0.6, 0.8, 0.7: the second validation is kept, and its weights exactly, not the last ones."""
    script_val_f1(monkeypatch, [0.6, 0.8, 0.7])
    at_validation = weights_at_each_validation(monkeypatch)
    trainer, fit = fit_tiny(encoded_tweets, method, max_steps=3, eval_every_steps=1)
    assert [row["step"] for row in fit.epoch_log] == [1, 2, 3]
    assert fit.best is fit.epoch_log[1] and fit.best["val_f1"] == 0.8
    final = trained_weights(trainer)
    assert all(torch.equal(final[n], at_validation[1][n]) for n in final)
    assert not all(torch.equal(final[n], at_validation[2][n]) for n in final), "the third step changed nothing"


@pytest.mark.parametrize("metric, kept", [("f1_macro", 0), ("accuracy", 1)])
def test_the_kept_checkpoint_is_the_best_on_the_selection_metric(encoded_tweets, monkeypatch, metric, kept):
    """Validation 1 has the higher macro-F1, validation 2 the higher accuracy, validation 3 is all wrong."""
    labels = encoded_tweets[1]["val"].labels
    accurate, balanced = accurate_and_balanced(labels)
    script_val_predictions(monkeypatch, [balanced, accurate, 1 - labels])
    at_validation = weights_at_each_validation(monkeypatch)
    trainer, fit = fit_tiny(encoded_tweets, "lora", max_steps=3, eval_every_steps=1, selection_metric=metric)
    assert fit.best is fit.epoch_log[kept]
    final = trained_weights(trainer)
    assert all(torch.equal(final[n], at_validation[kept][n]) for n in final)
    for row, predictions in zip(fit.epoch_log, [balanced, accurate, 1 - labels]):  # every score, whatever ranks
        scores = classification_metrics(labels, predictions, LABELS)
        assert (row["val_accuracy"], row["val_f1"], row["val_recall_macro"]) == (
            scores["accuracy"], scores["f1_macro"], scores["recall_macro"])


def test_an_unknown_selection_metric_is_refused(encoded_tweets):
    with pytest.raises(ValueError, match="selection metric 'f1': one of accuracy, f1_macro, recall_macro"):
        fit_tiny(encoded_tweets, "head", max_steps=1, selection_metric="f1")


# -- early stopping ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["full", "head"])
@pytest.mark.parametrize("scores, patience, validations", [
    ([0.8, 0.7, 0.7], 2, 3),  # two validations in a row without a gain
    ([0.8, 0.7, 0.9, 0.7, 0.7], 2, 5),  # a gain resets the count
    ([0.8, 0.8], 1, 2),  # an equal score is no gain
    ([0.8, 0.7], None, 8),  # no patience: every scheduled validation
])
def test_early_stopping_after_patience_validations_without_a_gain(encoded_tweets, monkeypatch, method, scores,
                                                                   patience, validations):
    script_val_f1(monkeypatch, scores)
    _, fit = fit_tiny(encoded_tweets, method, max_steps=8, eval_every_steps=1, early_stopping_patience=patience)
    assert [row["step"] for row in fit.epoch_log] == list(range(1, validations + 1))
    assert fit.stopped_early == (patience is not None)


@pytest.mark.parametrize("metric, validations", [("accuracy", 2), ("f1_macro", 3)])
def test_early_stopping_counts_validations_without_a_gain_in_the_selection_metric(encoded_tweets, monkeypatch,
                                                                                 metric, validations):
    """The more accurate predictions, then the higher-macro-F1 ones again and again; patience 1 stops after
    the second validation on accuracy (no gain), after the third on macro-F1 (a gain, then an equal score)."""
    accurate, balanced = accurate_and_balanced(encoded_tweets[1]["val"].labels)
    script_val_predictions(monkeypatch, [accurate, balanced])
    _, fit = fit_tiny(encoded_tweets, "head", max_steps=6, eval_every_steps=1, early_stopping_patience=1,
                      selection_metric=metric)
    assert len(fit.epoch_log) == validations and fit.stopped_early
    assert fit.best is fit.epoch_log[0 if metric == "accuracy" else 1]


def test_early_stopping_counts_per_phase_and_the_best_spans_phases(encoded_tweets, monkeypatch):
    """two_phase: the full phase stops after 0.8, 0.7, 0.7; the head phase counts afresh (two more
    validations without beating 0.8), and the kept checkpoint is the full phase's first."""
    script_val_f1(monkeypatch, [0.8, 0.7, 0.7, 0.7, 0.7])
    _, fit = fit_tiny(encoded_tweets, "two_phase", options={"full_epochs": 1, "head_epochs": 1}, max_steps=4,
                      eval_every_steps=1, early_stopping_patience=2)
    assert [(row["phase"], row["step"]) for row in fit.epoch_log] == [
        ("full", 1), ("full", 2), ("full", 3), ("head", 1), ("head", 2)]
    assert fit.best is fit.epoch_log[0] and fit.stopped_early


def test_validation_at_the_last_step_is_not_an_early_stop(encoded_tweets, monkeypatch):
    """Patience runs out exactly at the last scheduled validation: nothing was skipped."""
    script_val_f1(monkeypatch, [0.8, 0.7, 0.7])
    _, fit = fit_tiny(encoded_tweets, "head", max_steps=3, eval_every_steps=1, early_stopping_patience=2)
    assert len(fit.epoch_log) == 3 and not fit.stopped_early


# -- distillation ------------------------------------------------------------------------------------

def test_kd_loss_weighs_soft_and_hard_terms_with_its_own_temperature_and_alpha():
    """T=3 and alpha=0.3 on random logits: swapping them, or the two terms' weights, changes the value."""
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 3, generator=generator), torch.randn(5, 3, generator=generator) * 2
    labels = torch.tensor([0, 2, 1, 1, 0])
    temperature, alpha = 3.0, 0.3
    p_teacher = torch.softmax(teacher / temperature, -1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / temperature, -1))).sum(-1).mean()
    ce = -torch.log_softmax(student, -1)[torch.arange(5), labels].mean()
    expected = kl * temperature**2 * alpha + (1 - alpha) * ce
    torch.testing.assert_close(kd_loss(student, teacher, labels, temperature, alpha), expected)
    assert not torch.isclose(kd_loss(student, teacher, labels, alpha, temperature), expected)


def test_distillation_hook_passes_the_batch_examples_teacher_logits_temperature_and_alpha():
    """The hook picks each example's teacher logits by its index in the training set."""
    from types import SimpleNamespace

    generator = torch.Generator().manual_seed(1)
    by_example = torch.randn(6, 2, generator=generator)
    student = torch.randn(3, 2, generator=generator)
    index, labels = np.array([4, 1, 3]), torch.tensor([1, 0, 0])
    hook = distillation_loss(DistillConfig(temperature=3.0, alpha=0.3), by_example)
    loss = hook(SimpleNamespace(logits=student), {"labels": labels}, index)
    torch.testing.assert_close(loss, kd_loss(student, by_example[index], labels, 3.0, 0.3), rtol=0, atol=0)


def test_distillation_at_alpha_zero_trains_exactly_like_plain_cross_entropy(encoded_tweets):
    _, encoded, _ = encoded_tweets
    teacher = torch.randn(len(encoded["train"]), 2, generator=torch.Generator().manual_seed(2)) * 5
    plain, _ = fit_tiny(encoded_tweets, "full", max_steps=4)
    distilled, _ = fit_tiny(encoded_tweets, "full", max_steps=4,
                            loss=distillation_loss(DistillConfig(temperature=3.0, alpha=0.0), teacher))
    plain_weights, distilled_weights = trained_weights(plain), trained_weights(distilled)
    assert all(torch.equal(distilled_weights[n], plain_weights[n]) for n in plain_weights)


# -- loss curves -------------------------------------------------------------------------------------

# Per-step training losses of fit_tiny(method, max_steps=8) with the seed and data above (1 thread,
# fp32), stable across repeated runs, with FastDropout (the default) and with torch's dropout (the curves of
# every run before FastDropout: `train.fast_dropout: false` must still give them). A change to batching, the
# loop, the loss or the optimizer that alters training changes them; a deliberate one updates them here.
LOSS_CURVES = {
    ("full", True): [0.692838, 0.697315, 0.620705, 0.785164, 0.679081, 0.65661, 0.943234, 0.72467],
    ("lora", True): [0.699069, 0.698441, 0.665676, 0.725816, 0.720925, 0.733838, 0.635569, 0.70665],
    ("full", False): [0.692912, 0.71885, 0.616909, 0.813603, 0.715674, 0.665104, 0.989096, 0.742978],
    ("lora", False): [0.694272, 0.689436, 0.660356, 0.73052, 0.719184, 0.749942, 0.628052, 0.696557],
}


@pytest.mark.parametrize("method, fast_dropout", sorted(LOSS_CURVES))
def test_loss_curve_of_a_fixed_seed_run_is_unchanged(encoded_tweets, method, fast_dropout):
    losses = []

    def recording(outputs, batch, index):
        losses.append(outputs.loss.item())
        return outputs.loss

    fit_tiny(encoded_tweets, method, loss=recording, max_steps=8, fast_dropout=fast_dropout)
    np.testing.assert_allclose(losses, LOSS_CURVES[(method, fast_dropout)], rtol=1e-4, atol=0)
