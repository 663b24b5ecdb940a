"""FastDropout draws the masks torch's dropout would, in distribution: each element kept with probability
1 - p (p rounded to 1/65536), independently, scaled to stay unbiased, the same mask forward and backward,
reproducible from the seed; FAST_ATTENTION computes transformers' SDPA attention, with FastDropout's masks on
the probabilities when training; a training run on a CPU uses both unless `train.fast_dropout: false`."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from sendit.config import DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from sendit.dropout import (FAST_ATTENTION, LEVELS, PLAIN_TRAINING_MAX_KEYS, FastDropout, attention_with_fast_dropout,
                            scaled_keep_mask, use_fast_dropout)
from sendit.methods import get_method
from sendit.models import TINY_KINDS, load_model
from sendit.run import execute

ELEMENTS = 1_000_000


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_each_element_is_kept_with_probability_one_minus_p_and_scaled_to_stay_unbiased(p):
    torch.manual_seed(0)
    out = FastDropout(p).train()(torch.ones(ELEMENTS))
    kept = out != 0
    rounded = round(p * LEVELS) / LEVELS
    assert abs(rounded - p) < 1 / LEVELS
    # binomial standard error at most 5e-4 over a million elements: 4e-3 is 8 of them
    assert abs(kept.float().mean().item() - (1 - p)) < 4e-3
    assert torch.allclose(out[kept], torch.tensor(1 / (1 - rounded)))
    assert abs(out.mean().item() - 1) < 4e-3 / (1 - p)


def test_the_four_uniforms_of_a_draw_are_independent():
    """Each 64-bit draw gives four masks' elements: every one of the four positions keeps 1 - p of its
    elements, and neighbours (from one draw or two) are uncorrelated."""
    torch.manual_seed(1)
    kept = (FastDropout(0.3).train()(torch.ones(ELEMENTS)) != 0).float()
    for position in range(4):
        assert abs(kept[position::4].mean().item() - 0.7) < 6e-3, position
    for shift in (1, 2, 3, 4):
        correlation = np.corrcoef(kept[:-shift].numpy(), kept[shift:].numpy())[0, 1]
        assert abs(correlation) < 6e-3, shift


def test_forward_and_backward_apply_one_mask_in_the_inputs_dtype():
    for dtype in (torch.float32, torch.bfloat16):
        ones = torch.ones(8, 33, 17, dtype=dtype, requires_grad=True)
        x = torch.rand(8, 33, 17, dtype=dtype).add_(0.5).requires_grad_()
        torch.manual_seed(2)
        mask = FastDropout(0.25).train()(ones)
        mask.sum().backward()
        torch.manual_seed(2)
        out = FastDropout(0.25).train()(x)
        out.backward(torch.full_like(out, 3.0))
        assert out.dtype == dtype and out.shape == x.shape
        assert torch.equal(ones.grad, mask.detach()) and torch.equal(out, x.detach() * mask.detach())
        assert torch.equal(x.grad, 3.0 * mask.detach()) and (mask == 0).any() and (mask != 0).any()


def test_masks_follow_the_seed_and_evaluation_passes_the_input_through():
    x = torch.ones(1000)
    masks = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        masks.append(FastDropout(0.1).train()(x))
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    assert FastDropout(0.1).eval()(x) is x and FastDropout(0.0).train()(x) is x
    assert torch.equal(FastDropout(1.0).train()(x), torch.zeros_like(x))


def test_every_dropout_layer_of_a_model_and_its_adapter_is_replaced_and_evaluation_is_unchanged():
    model = get_method(MethodConfig(name="lora")).apply(load_model("tiny-bert", 2, seed=0)[0])
    before = {name: module.p for name, module in model.named_modules() if isinstance(module, nn.Dropout)}
    batch = {"input_ids": torch.randint(5, 100, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    assert use_fast_dropout(model) == len(before)
    after = {name: module for name, module in model.named_modules() if isinstance(module, nn.Dropout)}
    assert after.keys() == before.keys() and any("lora_dropout" in name for name in after)
    assert all(type(module) is FastDropout and module.p == before[name] for name, module in after.items())
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, expected)
    assert use_fast_dropout(model) == 0  # a second call (a method's second phase) finds nothing left to replace


class Attention(nn.Module):
    def __init__(self, is_causal: bool):
        super().__init__()
        self.is_causal = is_causal


def attention_inputs(batch=3, heads=2, length=7, dim=8):
    torch.manual_seed(4)
    return [torch.randn(batch, heads, length, dim) for _ in range(3)]


def padding_mask(batch=3, length=7) -> torch.Tensor:
    """Bool (batch, 1, query, key): True where a key is attended; the rows end in 0, 2 and 4 padded keys."""
    keep = torch.ones(batch, length, dtype=torch.bool)
    keep[1, -2:], keep[2, -4:] = False, False
    return keep[:, None, None, :].expand(batch, 1, length, length)


@pytest.mark.parametrize("case", ["no mask", "padding", "causal", "causal and padding", "additive"])
def test_fast_attention_computes_transformers_sdpa_attention(case):
    """With a drop probability that rounds to 0 the plain path runs and drops nothing: it must give
    transformers' own SDPA attention (dropout 0) for every kind of mask it may be handed."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    query, key, value = attention_inputs()
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    mask = {"no mask": None, "padding": padding_mask(), "causal": None, "causal and padding": padding_mask() & causal,
            "additive": torch.where(padding_mask(), 0.0, torch.finfo(torch.float32).min)}[case]
    module = Attention(is_causal=case.startswith("causal"))
    ours, _ = attention_with_fast_dropout(module, query, key, value, mask, dropout=1e-7, scaling=0.3)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, dropout=0.0, scaling=0.3)
    assert ours.shape == theirs.shape == (3, 7, 2, 8)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_fast_attention_drops_probabilities_with_fastdropouts_mask():
    query, key, value = attention_inputs()
    torch.manual_seed(9)
    ours, _ = attention_with_fast_dropout(Attention(False), query, key, value, padding_mask(), dropout=0.5, scaling=0.3)
    torch.manual_seed(9)
    keep = scaled_keep_mask(torch.Size((3, 2, 7, 7)), 0.5, torch.float32, torch.device("cpu"))
    scores = (query @ key.transpose(-1, -2) * 0.3).masked_fill(~padding_mask(), float("-inf"))
    expected = ((torch.softmax(scores, -1) * keep) @ value).transpose(1, 2)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    assert (keep == 0).any()


@pytest.mark.parametrize("training, keys, plain", [(True, 7, True), (True, PLAIN_TRAINING_MAX_KEYS, True),
                                                    (True, PLAIN_TRAINING_MAX_KEYS + 1, False), (False, 7, False)])
def test_without_dropout_only_training_on_short_sequences_takes_the_plain_path(monkeypatch, training, keys, plain):
    """Training without attention dropout on up to PLAIN_TRAINING_MAX_KEYS keys runs the plain path (faster there
    than torch's fused kernel) and computes what SDPA does; evaluation and longer sequences keep SDPA."""
    import transformers.integrations.sdpa_attention as sdpa

    original, calls = sdpa.sdpa_attention_forward, []
    monkeypatch.setattr(sdpa, "sdpa_attention_forward", lambda *args, **kw: calls.append(1) or original(*args, **kw))
    query, key, value = attention_inputs(length=keys)
    module = Attention(is_causal=False).train(training)
    ours, _ = attention_with_fast_dropout(module, query, key, value, padding_mask(length=keys), dropout=0.0, scaling=0.3)
    assert not calls if plain else calls == [1]
    theirs, _ = original(module, query, key, value, padding_mask(length=keys), dropout=0.0, scaling=0.3)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def attention_training(model: nn.Module, training: bool) -> nn.Module:
    """The model in evaluation but for its attention modules, which then hand their drop probability to the
    attention function (the rest of the model's dropout, layers or functions, stays off)."""
    model.eval()
    for module in model.modules():
        if training and type(module).__name__.endswith("Attention"):
            module.train()
    return model


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_every_architecture_computes_as_before_after_the_switch(kind):
    """In evaluation (transformers' SDPA function) and with attention training at a drop probability that
    rounds to 0 (the plain path, FastDropout's mask keeping everything), under every architecture's masks."""
    model = load_model(f"tiny-{kind}", 2, seed=0, attention_dropout=1e-7)[0]
    for module in model.modules():
        if isinstance(module, nn.Dropout) and module.p:
            module.p = 1e-7
    ids = torch.randint(5, 100, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, :3] = 0  # a left-padded row (decoders) or a row with holes (encoders): masks of every kind
    with torch.no_grad():
        expected = {training: attention_training(model, training)(input_ids=ids, attention_mask=mask).logits
                    for training in (False, True)}
    was_sdpa = model.config._attn_implementation == "sdpa"
    use_fast_dropout(model)
    assert (model.config._attn_implementation == FAST_ATTENTION) == was_sdpa
    with torch.no_grad():
        for training in (False, True):
            logits = attention_training(model, training)(input_ids=ids, attention_mask=mask).logits
            torch.testing.assert_close(logits, expected[training], rtol=1e-5, atol=1e-5 if training else 1e-6)


@pytest.mark.parametrize("model, fast", [("tiny-bert", True), ("tiny-gpt2", True), ("tiny-bert", False)])
def test_a_cpu_training_run_uses_fast_dropout_unless_switched_off(tmp_path, splits, monkeypatch, model, fast):
    import sendit.train

    swapped = []
    monkeypatch.setattr(sendit.train, "use_fast_dropout", lambda model: swapped.append(use_fast_dropout(model)))
    cfg = RunConfig(data=DataConfig(dataset="csv", path="unused", label_names=["negative", "positive"]),
                    model=ModelConfig(name=model, max_length=32), method=MethodConfig(name="lora", lr=1e-2),
                    train=TrainConfig(max_steps=3, batch_size=16, threads=1, fast_dropout=fast, device="cpu"))
    execute(cfg, tmp_path / "run", splits)
    assert (swapped[0] > 0) if fast else not swapped
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert len(predictions) == len(splits.test) and predictions[["prob_negative", "prob_positive"]].notna().all().all()
