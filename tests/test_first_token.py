"""Inference with the last encoder block on the first token only gives the whole model's logits, for
every method that changes the encoder and every tiny encoder; decoders run unchanged."""
import numpy as np
import pytest
import torch

from sendit.artifacts import build_model
from sendit.batching import collate
from sendit.config import DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from sendit.first_token import first_token_only, last_block

LABELS = ["negative", "positive"]
ENCODERS = ["tiny-bert", "tiny-distilbert", "tiny-roberta"]


def built(arch: str, method: str, attention=None):
    """A tiny model with `method` applied and its trainable weights moved off their initial values (LoRA's
    B starts at zero, which would hide the adapter from the comparison)."""
    cfg = RunConfig(data=DataConfig(label_names=LABELS), model=ModelConfig(name=arch, max_length=32, attention=attention),
                    method=MethodConfig(name=method), train=TrainConfig(bf16=False, seed=5))
    model, _, _ = build_model(cfg, LABELS)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return model.eval()


def padded_batch(encoded_tweets, rows: int = 24) -> dict:
    _, encoded, pad_id = encoded_tweets
    batch = collate(encoded["test"], np.arange(rows), pad_id)
    assert (batch["attention_mask"] == 0).any(), "the batch must be padded to test the mask"
    return {k: v for k, v in batch.items() if k != "labels"}


@pytest.mark.parametrize("arch", ENCODERS)
@pytest.mark.parametrize("method", ["full", "bitfit", "lora", "dora", "ia3", "prompt_tuning", "qlora", "vera"])
def test_first_token_only_gives_the_whole_models_logits(arch, method, encoded_tweets):
    model = built(arch, method)
    batch = padded_batch(encoded_tweets)
    block, _ = last_block(model)
    positions = []
    handle = block.register_forward_hook(lambda _module, _args, out: positions.append(out.shape[1]))
    with torch.no_grad():
        expected = model(**batch).logits
        with first_token_only(model):
            logits = model(**batch).logits
    handle.remove()
    assert positions[0] > 1 and positions[1] == 1, positions  # the whole block, then the first token only
    assert "forward" not in vars(block), "the block's own forward is not restored"
    # QLoRA's 4-bit layers compute in bf16, whose kernels round differently for one row than for all.
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-3 if method == "qlora" else 1e-5)
    assert torch.equal(logits.argmax(-1), expected.argmax(-1))


@pytest.mark.parametrize("arch", ENCODERS)
def test_first_token_only_with_eager_attention_and_nested(arch, encoded_tweets):
    model = built(arch, "full", attention="eager")
    batch = padded_batch(encoded_tweets)
    with torch.no_grad():
        expected = model(**batch).logits
        with first_token_only(model), first_token_only(model):  # the inner one leaves the outer in place
            pass
        with first_token_only(model):
            with first_token_only(model):
                inner = model(**batch).logits
            outer = model(**batch).logits
    torch.testing.assert_close(inner, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(outer, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["tiny-opt", "tiny-gpt2", "tiny-gpt-neo"])
def test_decoders_run_unchanged(arch):
    """A decoder's head reads the last real token: no block of it is recognised, so nothing is replaced."""
    assert last_block(built(arch, "lora")) is None
