"""Every method x every tiny architecture: the promised parameters train, change, and reload exactly."""
import numpy as np
import pytest
import torch

from conftest import TINY_ARCHS
from sendit.batching import collate, encode
from sendit.config import MethodConfig, ModelConfig, RunConfig, TrainConfig
from sendit.methods import METHODS, get_method
from sendit.models import PooledHead, head_module_names, load_model
from sendit.run import execute, load
from sendit.train import Batching, Trainer

FOUNDATION_METHODS = ["zero_shot", "head", "full", "bitfit", "lora"]


def promised_trainable(method: str, name: str, head: list[str]) -> bool:
    """What each method says trains, written independently of the methods' own code."""
    in_head = any(part in head for part in name.split(".")[:-1])
    return {"zero_shot": False, "head": in_head, "full": True,
            "bitfit": in_head or name.endswith(".bias"),
            "lora": (in_head and "original_module" not in name) or "lora_A" in name or "lora_B" in name}[method]


def test_registry_has_the_foundation_methods():
    assert set(FOUNDATION_METHODS) <= set(METHODS)


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("method", FOUNDATION_METHODS)
def test_exactly_the_promised_parameters_train_and_change(arch, method, splits):
    model, tokenizer = load_model(arch, 2)
    head = head_module_names(model)
    model = get_method(MethodConfig(name=method)).apply(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    promised = {n for n, p in model.named_parameters() if promised_trainable(method, n, head)}
    assert trainable == promised
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    data = {k: encode(tokenizer, f["text"].tolist(), f["label"].to_numpy(), 32)
            for k, f in (("train", splits.train), ("val", splits.val))}
    cfg = TrainConfig(max_steps=2, batch_size=8, bf16=False, warmup_ratio=0.0)
    trainer = Trainer(model, get_method(MethodConfig(name=method, lr=1e-2)), cfg,
                      Batching(tokenizer.pad_token_id), ["negative", "positive"], bf16=False)
    fit = trainer.fit(data["train"], data["val"])
    assert all(np.isfinite(row["train_loss"]) for row in fit.epoch_log)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable, "a frozen parameter changed"
    if method == "zero_shot":
        assert not fit.epoch_log and not changed
    else:
        assert fit.train_examples == 16
        assert changed == trainable, sorted(trainable - changed)[:5]


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("method", FOUNDATION_METHODS)
def test_save_load_gives_identical_logits(arch, method, splits, tmp_path):
    cfg = RunConfig(model=ModelConfig(name=arch, max_length=32), method=MethodConfig(name=method),
                    train=TrainConfig(max_steps=3, batch_size=8, bf16=False))
    execute(cfg, tmp_path / "run", splits)
    model, tokenizer, saved_cfg = load(tmp_path / "run")
    assert saved_cfg.data.label_names == ["negative", "positive"]
    encoded = encode(tokenizer, splits.test["text"].tolist(), splits.test["label"].to_numpy(), 32)
    batch = collate(encoded, np.arange(len(encoded)), tokenizer.pad_token_id)
    batch.pop("labels")
    with torch.no_grad():
        reloaded = model(**batch).logits.numpy()
    probs = (np.exp(reloaded) / np.exp(reloaded).sum(1, keepdims=True))[:, 1]
    import pandas as pd

    saved = pd.read_csv(tmp_path / "run" / "predictions.csv")
    np.testing.assert_allclose(saved["prob_positive"].to_numpy(), probs, atol=1e-5)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_pooled_head_on_cached_features_equals_the_full_model(arch, splits):
    model, tokenizer = load_model(arch, 3)
    model.eval()
    encoded = encode(tokenizer, splits.test["text"].tolist()[:16], np.zeros(16, dtype=int), 32)
    batch = collate(encoded, np.arange(16), tokenizer.pad_token_id)
    batch.pop("labels")
    head = PooledHead(model)
    with torch.no_grad():
        np.testing.assert_allclose(head.logits(head.extract(batch)).numpy(), model(**batch).logits.numpy(),
                                   atol=1e-5)


def test_unknown_method_and_option_are_named():
    from sendit.config import ConfigError

    with pytest.raises(ConfigError, match="unknown method 'lroa'"):
        get_method(MethodConfig(name="lroa"))
    with pytest.raises(ConfigError, match="methods.lora.options: unknown field"):
        get_method(MethodConfig(name="lora", options={"rank": 4}))
