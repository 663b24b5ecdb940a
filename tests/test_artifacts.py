"""The saved-run format is versioned: runs record the version, older runs still load, newer ones are refused."""
import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from conftest import eval_probabilities, tiny_data, tiny_run
from sendit.artifacts import FORMAT_VERSION, Predictor, RunError, load
from sendit.calibration import softmax
from sendit.results import METRICS_FILE


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    return tiny_run(root / "run", tiny_data(root))


def with_version(run, tmp_path, version):
    """A copy of `run` whose metrics.json says `version` (None: written before the format had one)."""
    copy = shutil.copytree(run, tmp_path / "copy")
    metrics = json.loads((copy / METRICS_FILE).read_text())
    metrics.pop("format_version")
    if version is not None:
        metrics["format_version"] = version
    (copy / METRICS_FILE).write_text(json.dumps(metrics))
    return copy


def test_a_run_records_the_format_version(run):
    assert json.loads((run / METRICS_FILE).read_text())["format_version"] == FORMAT_VERSION == 1


def test_a_run_saved_before_versioning_loads_the_same_model(run, tmp_path):
    old = with_version(run, tmp_path, None)
    expected, loaded = load(run)[0], load(old)[0]
    for (name, a), (_, b) in zip(expected.named_parameters(), loaded.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_a_run_in_a_newer_format_is_refused_by_name(run, tmp_path):
    newer = with_version(run, tmp_path, FORMAT_VERSION + 1)
    with pytest.raises(RunError, match=rf"{METRICS_FILE}: saved-run format {FORMAT_VERSION + 1}, newer than"):
        load(newer)


def test_a_run_saved_with_the_old_patience_zero_loads_as_patience_one(run, tmp_path):
    """Before patience counted validations without a gain, 0 meant what 1 means now: such runs still load."""
    old = with_version(run, tmp_path, None)
    config = yaml.safe_load((old / "config.yaml").read_text())
    config["train"]["early_stopping_patience"] = 0
    (old / "config.yaml").write_text(yaml.safe_dump(config))
    assert load(old)[2].train.early_stopping_patience == 1


@pytest.mark.parametrize("method, folds", [("lora", True), ("dora", True), ("ia3", True), ("prompt_tuning", False),
                                           ("qlora", False), ("full", False)])
def test_a_loaded_run_infers_folded_and_computes_the_same_function(tmp_path, method, folds):
    """`eval`, `predict` and `serve` run an adapter folded into the weights (no adapter matmuls), except
    where it cannot fold (prompt tuning) or folding would undo the method's point (QLoRA's 4-bit base)."""
    run = tiny_run(tmp_path / method, tiny_data(tmp_path), method=method)
    as_trained, deployed = Predictor.from_run(run, as_trained=True), Predictor.from_run(run)
    texts = ["i love this", "so sad right now today", "ok"]
    peft = [hasattr(p.model, "peft_config") for p in (as_trained, deployed)]
    assert peft == [method != "full", method != "full" and not folds]
    np.testing.assert_allclose(deployed.predict(texts), as_trained.predict(texts), rtol=0, atol=1e-5)


def test_a_run_tests_its_model_as_saved_even_after_training_its_frozen_base_in_bf16(tmp_path):
    """bf16 training keeps a LoRA's frozen base in bf16 (train.bf16_frozen_weights); the saved run's base is
    the float32 one, folded with the adapter. The run's own test predictions are that model's, as `eval`'s."""
    run = tiny_run(tmp_path / "run", tiny_data(tmp_path), precision="bf16", bf16_frozen_weights=True)
    row = json.loads((run / METRICS_FILE).read_text())["row"]
    assert row["precision"] == "bf16" and row["inference_precision"] == "fp32"
    frame, probs = eval_probabilities(run)
    loaded = Predictor.from_run(run)
    assert not hasattr(loaded.model, "peft_config")  # folded
    np.testing.assert_allclose(probs, softmax(loaded.predict(frame["text"].tolist())), rtol=0, atol=1e-6)
