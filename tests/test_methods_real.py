"""Every method on the real minilm (slow): trains, saves, and reloads to the same predictions."""
import numpy as np
import pandas as pd
import pytest

from sendit.artifacts import Predictor
from sendit.config import MethodConfig, ModelConfig, RunConfig, TrainConfig
from sendit.methods import METHODS
from sendit.run import execute

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_on_minilm_trains_and_reloads(method, splits, tmp_path):
    cfg = RunConfig(model=ModelConfig(name="minilm", max_length=32), method=MethodConfig(name=method),
                    train=TrainConfig(max_steps=2, batch_size=16, bf16=False))
    row = execute(cfg, tmp_path / "run", splits)
    assert np.isfinite(row["test_accuracy"])
    from sendit.predict import predict_texts

    again = predict_texts(Predictor.from_run(tmp_path / "run"), splits.test["text"].tolist(), precision="fp32")
    stored = pd.read_csv(tmp_path / "run" / "predictions.csv")
    np.testing.assert_allclose([row["p_positive"] for row in again], stored["prob_positive"].to_numpy(), atol=1e-5)
