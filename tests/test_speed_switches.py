"""The switches `make bench-ablation` turns off change the speed, not the result: fused vs looped AdamW
and SDPA vs eager attention train a tiny model to the same predictions (fp32); bf16 and fp32 runs
share one process."""
import numpy as np
import pandas as pd
import pytest

from safetensors.torch import load_file

from sendit.artifacts import ADAPTER_FILE, load
from sendit.methods import get_method
from sendit.models import load_model
from sendit.config import DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from sendit.run import execute


def train(tmp_path, splits, name: str, attention=None, fused=True, lr=1e-2, fast_dropout=True):
    cfg = RunConfig(data=DataConfig(dataset="csv", path="unused", label_names=["negative", "positive"]),
                    model=ModelConfig(name="tiny-bert", max_length=32, attention=attention),
                    method=MethodConfig(name="full", lr=lr),
                    train=TrainConfig(max_steps=10, batch_size=16, bf16=False, threads=1, seed=3,
                                      fused_optimizer=fused, fast_dropout=fast_dropout))
    execute(cfg, tmp_path / name, splits)
    return pd.read_csv(tmp_path / name / "predictions.csv")


def probabilities(frame: pd.DataFrame) -> np.ndarray:
    return frame[["prob_negative", "prob_positive"]].to_numpy()


# Eager attention drops attention probabilities with torch's dropout (FastDropout reaches SDPA's only), so
# both sides of that comparison train with torch's: the same masks from the same seed.
@pytest.mark.parametrize("common, variant", [({}, {"fused": False}),
                                             ({"fast_dropout": False}, {"attention": "eager"})])
def test_switch_keeps_the_result(tmp_path, splits, common, variant):
    default = train(tmp_path, splits, "default", **common)
    other = train(tmp_path, splits, "variant", **common, **variant)
    # Ten steps of AdamW at lr 1e-2 from the same seed: only float rounding differs (measured ~1.5e-7,
    # while the training moved probabilities by ~0.08).
    np.testing.assert_allclose(probabilities(other), probabilities(default), rtol=0, atol=1e-4)
    untrained = train(tmp_path, splits, "untrained", lr=0.0)
    assert np.abs(probabilities(default) - probabilities(untrained)).max() > 1e-2  # training moved the model


def test_attention_choice_is_saved_and_reloaded(tmp_path, splits):
    train(tmp_path, splits, "eager", attention="eager")
    model, _, cfg = load(tmp_path / "eager")
    assert cfg.model.attention == "eager" and model.config._attn_implementation == "eager"


def test_bf16_and_fp32_runs_in_one_process(tmp_path, splits):
    """accelerate keeps one precision per process; a study may alternate (here bf16, fp32, bf16): each
    run computes in its own precision, and the second bf16 run repeats the first exactly."""
    def run(index: int, bf16: bool) -> np.ndarray:
        cfg = RunConfig(data=DataConfig(dataset="csv", path="unused", label_names=["negative", "positive"]),
                        model=ModelConfig(name="tiny-bert", max_length=32), method=MethodConfig(name="lora"),
                        train=TrainConfig(max_steps=2, batch_size=16, bf16=bf16, threads=1))
        execute(cfg, tmp_path / str(index), splits)
        return probabilities(pd.read_csv(tmp_path / str(index) / "predictions.csv"))

    first_bf16, fp32, second_bf16 = run(0, True), run(1, False), run(2, True)
    np.testing.assert_array_equal(second_bf16, first_bf16)
    assert np.abs(fp32 - first_bf16).max() > 1e-5, "the fp32 run computed in bf16, or the reverse"


@pytest.mark.parametrize("kind", ["bert", "opt"])
def test_bf16_weights_for_inference_match_autocast_and_are_restored(splits, kind):
    """Over several batches, inference casts the weights to bf16 once instead of autocasting every
    forward pass; the predictions stay those of autocast and the float32 weights come back untouched."""
    import torch

    from sendit.batching import encode
    from sendit.evaluate import predict_logits
    from sendit.models import load_model
    from sendit.artifacts import batching_for

    model, tokenizer = load_model(f"tiny-{kind}", 2, seed=5)
    encoded = encode(tokenizer, splits.test.text.tolist(), splits.test.label.to_numpy(), 32)
    batching = vars(batching_for(tokenizer, model))
    before = {name: (p.data_ptr(), p.detach().clone()) for name, p in model.named_parameters()}
    seen = []
    cast, _ = predict_logits(model, encoded, 8, "bf16", **batching,
                             on_batch=lambda n: seen.append(model.classifier.weight.dtype if kind == "bert"
                                                            else model.score.weight.dtype))
    autocast_only, _ = predict_logits(model, encoded, len(encoded), "bf16", **batching)  # one batch: autocast
    fp32, _ = predict_logits(model, encoded, 8, "fp32", **batching)
    assert len(seen) > 1 and set(seen) == {torch.bfloat16}
    assert np.abs(cast - fp32).max() > 0  # bf16 really ran
    np.testing.assert_allclose(cast, autocast_only, atol=2e-2)
    np.testing.assert_allclose(cast, fp32, atol=2e-2)
    for name, p in model.named_parameters():
        pointer, values = before[name]
        assert p.dtype == torch.float32 and p.data_ptr() == pointer and torch.equal(p.detach(), values), name


def test_bf16_validation_inside_training_leaves_training_in_float32(tmp_path, splits):
    """Validation between epochs casts the weights to bf16 for its batches (eval_batch_size 8: several
    batches); the second epoch trains the restored float32 weights exactly as after a validation that
    only autocasts (one batch), and they are saved as float32."""
    import torch
    from safetensors.torch import load_file

    def epoch_log(eval_batch_size: int) -> pd.DataFrame:
        cfg = RunConfig(data=DataConfig(dataset="csv", path="unused", label_names=["negative", "positive"]),
                        model=ModelConfig(name="tiny-bert", max_length=32), method=MethodConfig(name="full", lr=1e-2),
                        train=TrainConfig(epochs=2, batch_size=16, bf16=True, threads=1, eval_batch_size=eval_batch_size))
        execute(cfg, tmp_path / str(eval_batch_size), splits)
        return pd.read_csv(tmp_path / str(eval_batch_size) / "epoch_log.csv")

    cast, autocast_only = epoch_log(8), epoch_log(128)
    assert list(cast.epoch) == [1.0, 2.0] and len(splits.val) > 8
    assert cast.train_loss.tolist() == autocast_only.train_loss.tolist()
    saved = load_file(str(tmp_path / "8" / "adapter.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.float32}


def test_token_budget_batches_drive_training(tmp_path, splits):
    """With train.batch_tokens the trainer steps through budgeted batches: as many steps as the
    budget cuts, not len(train) / batch_size."""
    import math

    from sendit.batching import length_bucketed_batches
    from sendit.models import load_tokenizer
    from sendit.run import encode_splits

    cfg = RunConfig(data=DataConfig(dataset="csv", path="unused", label_names=["negative", "positive"]),
                    model=ModelConfig(name="tiny-bert", max_length=32), method=MethodConfig(name="full", lr=1e-2),
                    train=TrainConfig(epochs=1, batch_size=16, batch_tokens=96, bf16=False, threads=1, seed=4))
    execute(cfg, tmp_path / "run", splits)
    train = encode_splits(load_tokenizer("tiny-bert"), splits, cfg.data, 32)["train"]
    budgeted = length_bucketed_batches(train.lengths, 16, np.random.default_rng(4), max_tokens=96)
    assert len(budgeted) != math.ceil(len(train) / 16)
    assert pd.read_csv(tmp_path / "run" / "epoch_log.csv").step.tolist() == [len(budgeted)]


@pytest.mark.parametrize("kind, field", [("bert", "attention_probs_dropout_prob"), ("distilbert", "attention_dropout"),
                                         ("opt", "attention_dropout"), ("gpt2", "attn_pdrop")])
def test_attention_dropout_is_set_on_every_architecture(kind, field):
    from sendit.models import load_model

    default, _ = load_model(f"tiny-{kind}", 2)
    changed, _ = load_model(f"tiny-{kind}", 2, attention_dropout=0.25)
    assert getattr(default.config, field) != 0.25 and getattr(changed.config, field) == 0.25


@pytest.mark.parametrize("method", ["lora", "bitfit", "ia3", "prompt_tuning"])
def test_frozen_weights_stored_in_bf16_give_autocasts_results(tmp_path, splits, method):
    """bf16 training keeps frozen linear weights in bf16: the values autocast casts them to anyway,
    so the trained weights are those of a run that keeps them in float32. (Not its predictions: a run
    whose base stays float32 tests with its adapter folded in, `Method.for_inference`.)"""
    def trained(stored_in_bf16: bool) -> dict:
        cfg = RunConfig(data=DataConfig(dataset="csv", path="unused", label_names=["negative", "positive"]),
                        model=ModelConfig(name="tiny-bert", max_length=32), method=MethodConfig(name=method, lr=1e-2),
                        train=TrainConfig(max_steps=4, batch_size=16, bf16=True, threads=1, seed=3,
                                          bf16_frozen_weights=stored_in_bf16))
        execute(cfg, tmp_path / str(stored_in_bf16), splits)
        return load_file(str(tmp_path / str(stored_in_bf16) / ADAPTER_FILE))

    in_bf16, in_float32 = trained(True), trained(False)
    assert in_bf16.keys() == in_float32.keys()
    for name, tensor in in_float32.items():
        np.testing.assert_allclose(in_bf16[name].numpy(), tensor.numpy(), rtol=0, atol=1e-6, err_msg=name)
    untrained = get_method(MethodConfig(name=method)).apply(load_model("tiny-bert", 2, seed=3)[0])
    initial = dict(untrained.named_parameters())
    assert any(not np.allclose(initial[name].detach().numpy(), tensor.numpy(), atol=1e-3)
               for name, tensor in in_float32.items() if name in initial), "training changed nothing"


def test_only_frozen_float32_linear_weights_are_cast():
    import torch

    from sendit.config import MethodConfig
    from sendit.methods import get_method
    from sendit.models import load_model
    from sendit.train import frozen_linear_weights_to_bf16

    model, _ = load_model("tiny-bert", 2)
    model = get_method(MethodConfig(name="lora")).apply(model)
    frozen_linear = sum(p.numel() for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                        for p in m.parameters(recurse=False) if not p.requires_grad)
    assert frozen_linear_weights_to_bf16(model) == frozen_linear > 0
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert all(dtypes[n] == torch.float32 for n, p in model.named_parameters() if p.requires_grad)  # LoRA, head
    assert dtypes["base_model.model.bert.embeddings.word_embeddings.weight"] == torch.float32
    assert dtypes["base_model.model.bert.encoder.layer.0.attention.self.query.base_layer.weight"] == torch.bfloat16
