"""The switches `make bench-ablation` turns off change the speed, not the result: fused vs looped AdamW
and SDPA vs eager attention train a tiny model to the same predictions (fp32); bf16 and fp32 runs
share one process."""
import numpy as np
import pandas as pd
import pytest

from sendit.config import DataConfig, MethodConfig, ModelConfig, RunConfig, TrainConfig
from sendit.run import execute, load


def train(tmp_path, splits, name: str, attention=None, fused=True, lr=1e-2):
    cfg = RunConfig(data=DataConfig(dataset="csv", path="unused", label_names=["negative", "positive"]),
                    model=ModelConfig(name="tiny-bert", max_length=32, attention=attention),
                    method=MethodConfig(name="full", lr=lr),
                    train=TrainConfig(max_steps=10, batch_size=16, bf16=False, threads=1, seed=3,
                                      fused_optimizer=fused))
    execute(cfg, tmp_path / name, splits)
    return pd.read_csv(tmp_path / name / "predictions.csv")


def probabilities(frame: pd.DataFrame) -> np.ndarray:
    return frame[["prob_negative", "prob_positive"]].to_numpy()


@pytest.mark.parametrize("variant", [{"fused": False}, {"attention": "eager"}])
def test_switch_keeps_the_result(tmp_path, splits, variant):
    default = train(tmp_path, splits, "default")
    other = train(tmp_path, splits, "variant", **variant)
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
    """accelerate keeps one precision per process; a study may alternate (here bf16, fp32, bf16)."""
    import json

    for index, bf16 in enumerate((True, False, True)):
        cfg = RunConfig(data=DataConfig(dataset="csv", path="unused", label_names=["negative", "positive"]),
                        model=ModelConfig(name="tiny-bert", max_length=32), method=MethodConfig(name="lora"),
                        train=TrainConfig(max_steps=2, batch_size=16, bf16=bf16, threads=1))
        execute(cfg, tmp_path / str(index), splits)
        assert json.loads((tmp_path / str(index) / "metrics.json").read_text())["row"]["bf16"] is bf16
