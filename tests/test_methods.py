"""Every method x every tiny architecture: the promised parameters train, change, and reload exactly."""
import re
import warnings

import numpy as np
import pytest
import torch

from conftest import TEST_DEVICE, TINY_ARCHS
from sendit.artifacts import ADAPTER_FILE, build_model, load, save_trained
from sendit.batching import collate, encode
from sendit.config import ConfigError, DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig, save_yaml
from sendit.methods import METHODS, get_method
from sendit.models import PooledHead, load_model
from sendit.run import execute
from sendit.train import Batching, Trainer

ALL_METHODS = ["bitfit", "dora", "full", "head", "ia3", "lora", "prompt_tuning", "qlora", "two_phase", "vera",
               "zero_shot"]
FOUNDATION_METHODS = ["zero_shot", "head", "full", "bitfit", "lora"]
DECODERS = ["tiny-opt", "tiny-gpt2", "tiny-gpt-neo"]
LABELS = ["negative", "positive"]

# The head of each tiny architecture, as transformers names it (not read from sendit).
HEADS = {"tiny-bert": ["classifier"], "tiny-roberta": ["classifier"], "tiny-distilbert": ["pre_classifier", "classifier"],
         "tiny-opt": ["score"], "tiny-gpt2": ["score"], "tiny-gpt-neo": ["score"]}
# (IA)^3 rescales the attention keys and values and the input of the FFN down-projection (Liu et al.
# 2022), nothing else: not BERT's attention output projection, not GPT-2's attention c_proj.
IA3_MODULES = {
    "tiny-bert": r".*layer\.\d+\.(attention\.self\.(key|value)|output\.dense)",
    "tiny-roberta": r".*layer\.\d+\.(attention\.self\.(key|value)|output\.dense)",
    "tiny-distilbert": r".*layer\.\d+\.(attention\.(k_lin|v_lin)|ffn\.lin2)",
    "tiny-opt": r".*layers\.\d+\.(self_attn\.(k_proj|v_proj)|fc2)",
    "tiny-gpt2": r".*h\.\d+\.(attn\.c_attn|mlp\.c_proj)",
    "tiny-gpt-neo": r".*h\.\d+\.(attn\.attention\.(k_proj|v_proj)|mlp\.c_proj)",
}
IA3_FEEDFORWARD = r".*(\d+\.output\.dense|lin2|fc2|mlp\.c_proj)"


def promised_trainable(method: str, name: str, head: list[str], arch: str = "tiny-bert") -> bool:
    """What each method says trains, written independently of the methods' own code."""
    in_head = any(part in head for part in name.split(".")[:-1])
    peft_head = in_head and "original_module" not in name  # PEFT keeps a frozen copy of the original head
    lora = "lora_A" in name or "lora_B" in name
    module = name.rsplit(".", 2)[0]  # <module>.ia3_l.default -> <module>
    return {"zero_shot": False, "head": in_head, "full": True, "two_phase": True,
            "bitfit": in_head or name.endswith(".bias"),
            "lora": peft_head or lora, "qlora": peft_head or lora,
            "dora": peft_head or lora or "lora_magnitude_vector" in name,
            "ia3": peft_head or (".ia3_l." in name and re.fullmatch(IA3_MODULES[arch], module) is not None),
            "prompt_tuning": peft_head or name == "prompt_encoder.default.embedding.weight",
            "vera": peft_head or ".vera_lambda_b." in name or ".vera_lambda_d." in name}[method]


def test_registry_has_every_method():
    assert set(FOUNDATION_METHODS) <= set(METHODS)
    assert sorted(METHODS) == ALL_METHODS, "a new method needs its promise in promised_trainable"


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("method", ALL_METHODS)
def test_promised_parameters_train_change_and_reload_exactly(arch, method, encoded_tweets, tmp_path):
    """One build per case: exactly the promised parameters train; two steps change all of them and
    nothing else; the run saved as `execute` saves it and reloaded by `load` gives the same logits;
    LoRA/DoRA merge into the base without changing them."""
    _, encoded, pad_id = encoded_tweets
    cfg = RunConfig(data=DataConfig(label_names=LABELS), model=ModelConfig(name=arch, max_length=32),
                    method=MethodConfig(name=method, lr=1e-2),
                    train=TrainConfig(max_steps=2, batch_size=8, bf16=False, warmup_ratio=0.0, device=TEST_DEVICE))
    model, _, adapter = build_model(cfg, LABELS)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    promised = {n for n, _ in model.named_parameters() if promised_trainable(method, n, HEADS[arch], arch)}
    assert trainable == promised, (sorted(trainable - promised)[:4], sorted(promised - trainable)[:4])
    if method not in ("zero_shot", "full", "two_phase"):
        assert trainable, "nothing trains"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    trainer = Trainer(model, adapter, cfg.train, Batching(pad_id), LABELS, precision="fp32", device=cfg.train.device)
    fit = trainer.fit(encoded["train"], encoded["val"])
    assert all(np.isfinite(row["train_loss"]) for row in fit.epoch_log)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable, f"a frozen parameter changed: {sorted(changed - trainable)[:4]}"
    assert changed == trainable, f"did not change: {sorted(trainable - changed)[:4]}"
    assert fit.train_examples == 16 * len(adapter.phases(cfg.train))  # 2 steps of 8 per phase

    run = tmp_path / "run"
    run.mkdir()
    save_yaml(cfg, run / "config.yaml")
    save_trained(model, trainer.saved_names, run / ADAPTER_FILE)
    reloaded, _, _ = load(run, TEST_DEVICE)
    batch = collate(encoded["test"], np.arange(len(encoded["test"])), pad_id)
    batch = {k: v.to(TEST_DEVICE) for k, v in batch.items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
        logits = reloaded(**batch).logits
    # qlora too is bitwise: the reloaded base is quantised by the same deterministic code and both
    # run the same bf16 kernels on the same batch.
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    if method in ("lora", "dora"):
        with torch.no_grad():
            merged = reloaded.merge_and_unload()(**batch).logits
        torch.testing.assert_close(merged, logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_execute_writes_predictions_that_load_reproduces(method, encoded_tweets, tmp_path):
    """The whole run path once per method (on DistilBERT, whose head has two modules)."""
    import pandas as pd
    from safetensors.torch import load_file

    splits, _, _ = encoded_tweets
    cfg = RunConfig(model=ModelConfig(name="tiny-distilbert", max_length=32), method=MethodConfig(name=method),
                    train=TrainConfig(max_steps=2, batch_size=8, bf16=False))
    row = execute(cfg, tmp_path / "run", splits)
    model, tokenizer, saved_cfg = load(tmp_path / "run")
    assert saved_cfg.data.label_names == LABELS
    saved = load_file(str(tmp_path / "run" / ADAPTER_FILE))
    assert row["trainable_params"] == sum(t.numel() for t in saved.values()) > 0 or method == "zero_shot"
    encoded = encode(tokenizer, splits.test["text"].tolist(), splits.test["label"].to_numpy(), 32)
    batch = collate(encoded, np.arange(len(encoded)), tokenizer.pad_token_id)
    batch.pop("labels")
    with torch.no_grad():
        reloaded = model(**batch).logits.numpy()
    probs = (np.exp(reloaded) / np.exp(reloaded).sum(1, keepdims=True))[:, 1]
    saved = pd.read_csv(tmp_path / "run" / "predictions.csv")
    np.testing.assert_allclose(saved["prob_positive"].to_numpy(), probs, atol=1e-5)


@pytest.mark.parametrize("method, lr", [("full", 3e-3), ("two_phase", 3e-3), ("lora", 1e-2), ("dora", 1e-2)])
def test_methods_that_adapt_the_encoder_solve_a_separable_task(method, lr, separable_splits, tmp_path):
    """The label is the first word: two epochs must reach 90% test accuracy (the untrained model is at
    chance). Methods that freeze the encoder (head, bitfit, ia3, prompt_tuning) cannot: a tiny random
    encoder's pooled features barely vary with the input (std ~1e-3)."""
    cfg = RunConfig(model=ModelConfig(name="tiny-bert", max_length=32),
                    method=MethodConfig(name=method, lr=lr, options={"full_epochs": 2} if method == "two_phase" else {}),
                    train=TrainConfig(epochs=2, batch_size=16, bf16=False, seed=1))
    assert execute(cfg, tmp_path / "run", separable_splits)["test_accuracy"] >= 0.9


@pytest.mark.parametrize("method", ["none", "prompt_tuning"])
@pytest.mark.parametrize("arch", DECODERS)
def test_decoders_give_the_same_logits_left_or_right_padded(arch, method, encoded_tweets):
    """Left padding needs mask-derived position ids (GPT-2/GPT-Neo count positions along the row);
    prompt tuning must pool the last real token although PEFT hides the pads in inputs_embeds."""
    _, encoded, pad_id = encoded_tweets
    model, _ = load_model(arch, 2)
    if method != "none":
        model = get_method(MethodConfig(name=method)).apply(model)
    model.eval()
    index = np.argsort(encoded["test"].lengths)[[0, 5, 20, -1]]  # lengths differ
    assert len(set(encoded["test"].lengths[index])) == 4

    def logits(rows, left_pad):
        batch = collate(encoded["test"], rows, pad_id, left_pad=left_pad)
        batch.pop("labels")
        with torch.no_grad():
            return model(**batch).logits  # collate adds mask-derived position_ids when left-padding

    right = logits(index, left_pad=False)
    torch.testing.assert_close(logits(index, left_pad=True), right, rtol=0, atol=1e-5)
    alone = torch.cat([logits([i], left_pad=False) for i in index])
    torch.testing.assert_close(alone, right, rtol=0, atol=1e-5)


def test_ia3_rescales_the_ffn_input_and_names_the_option_for_unknown_models():
    model, _ = load_model("tiny-gpt2", 2)
    model = get_method(MethodConfig(name="ia3")).apply(model)
    modules = dict(model.named_modules())
    for name, param in model.named_parameters():
        if ".ia3_l." in name:
            layer = modules[name.rsplit(".", 2)[0]]
            width = layer.in_features if re.fullmatch(IA3_FEEDFORWARD, name.rsplit(".", 2)[0]) else layer.out_features
            assert param.numel() == width and layer.is_feedforward == (width == layer.in_features), name
    model, _ = load_model("tiny-bert", 2)
    model.config.model_type = "mystery"
    with pytest.raises(ConfigError, match="model type 'mystery'.*methods.ia3.options.target_modules"):
        get_method(MethodConfig(name="ia3")).apply(model)
    model = get_method(MethodConfig(name="ia3", options={"target_modules": ["value", "output.dense"],
                                                         "feedforward_modules": ["output.dense"]})).apply(model)
    assert sum(".ia3_l." in n for n, _ in model.named_parameters()) == 2 * 3  # value + both output.dense


@pytest.mark.parametrize("method", ["lora", "dora", "vera", "ia3"])
def test_adapters_declare_gpt2s_transposed_weights(method):
    """GPT-2's Conv1D layers keep weights as (in, out): the adapter's config says so, so PEFT does not have
    to correct it with a warning to every user."""
    model, _ = load_model("tiny-gpt2", 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_method(MethodConfig(name=method)).apply(model)
    assert not [w for w in caught if "fan_in_fan_out" in str(w.message)], [str(w.message) for w in caught]


@pytest.mark.parametrize("arch", ["tiny-bert", "tiny-gpt2"])
def test_qlora_quantises_every_base_linear_layer_and_not_the_head(arch):
    import bitsandbytes as bnb
    from transformers.pytorch_utils import Conv1D

    model, _ = load_model(arch, 2)
    fp32 = {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}
    model = get_method(MethodConfig(name="qlora")).apply(model)
    base = {n.removeprefix("base_model.model."): m for n, m in model.named_modules()}
    x = torch.randn(4, 7, 256)
    for name, original in fp32.items():
        if name.split(".")[0] in HEADS[arch]:
            assert isinstance(base[name].modules_to_save.default, torch.nn.Linear)
            continue
        layer = base[name].base_layer
        assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.quant_type == "nf4", name
        inputs = x[..., :layer.in_features]
        with torch.no_grad():  # Conv1D weights were transposed: outputs must still agree (NF4 error ~10%)
            error = (layer(inputs) - original(inputs)).norm() / original(inputs).norm()
        assert error < 0.15, (name, float(error))
    # eval without gradients, then a training step: bitsandbytes must not repack weights in between
    batch = {"input_ids": torch.tensor([[101, 2000, 102]]), "labels": torch.tensor([1])}
    model.eval()
    with torch.inference_mode():
        model(**batch)
    model.train()
    model(**batch).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_prompt_tuning_text_init_uses_the_embeddings_of_the_text():
    model, tokenizer = load_model("tiny-bert", 2)
    words = model.get_input_embeddings().weight.detach().clone()
    text = "the sentiment of this tweet is"
    model = get_method(MethodConfig(name="prompt_tuning", options={"init": "text", "init_text": text,
                                                                   "num_virtual_tokens": 4})).apply(model)
    ids = tokenizer(text)["input_ids"][:4]
    torch.testing.assert_close(model.prompt_encoder.default.embedding.weight.detach(), words[ids])


def test_two_phase_is_full_then_head_and_ignores_train_epochs():
    method = get_method(MethodConfig(name="two_phase", options={"full_epochs": 2, "head_lr": 1e-3}))
    phases = method.phases(TrainConfig(epochs=7))
    assert [(p.kind, p.epochs, p.lr, p.name) for p in phases] == [
        ("end_to_end", 2, 5e-5, "full"), ("head_features", 20, 1e-3, "head")]
    head_only = get_method(MethodConfig(name="two_phase", options={"full_epochs": 0}))
    assert [p.kind for p in head_only.phases(TrainConfig())] == ["head_features"]


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_pooled_head_on_cached_features_equals_the_full_model(arch, encoded_tweets):
    _, encoded, pad_id = encoded_tweets
    model, tokenizer = load_model(arch, 3)
    model.eval()
    batch = collate(encoded["test"], np.arange(16), pad_id)
    batch.pop("labels")
    head = PooledHead(model)
    with torch.no_grad():
        np.testing.assert_allclose(head.logits(head.extract(batch)).numpy(), model(**batch).logits.numpy(),
                                   atol=1e-5)


def test_unknown_method_and_option_are_named():
    with pytest.raises(ConfigError, match="unknown method 'lroa'"):
        get_method(MethodConfig(name="lroa"))
    with pytest.raises(ConfigError, match="methods.lora.options: unknown field"):
        get_method(MethodConfig(name="lora", options={"rank": 4}))
