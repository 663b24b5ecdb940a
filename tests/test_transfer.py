"""Transfer sets (`data.transfer`): extra training texts from outside the sample, learnt with their gold
labels (`transfer: labels`, a teacher or distillation's control arm) or from a teacher's soft targets alone
(`transfer: teacher`)."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import LABELS, synthetic_frame, tiny_run
from typer.testing import CliRunner

from sendit.cli import app
from sendit.config import (CleanConfig, ConfigError, DataConfig, DistillConfig, MethodConfig, ModelConfig, RunConfig,
                           StudyConfig, StudyMethodConfig, TrainConfig, build, to_dict)
from sendit.data import prepare
from sendit.data.errors import DataError
from sendit.distill import kd_loss, loss_for
from sendit.run import execute


@pytest.fixture
def tweets(tmp_path):
    path = tmp_path / "tweets.csv"
    synthetic_frame(400).to_csv(path, index=False)
    return path


def data(path, **fields) -> DataConfig:
    return DataConfig(dataset="csv", path=str(path), label_names=LABELS, sample=200, **fields)


def test_a_transfer_set_comes_from_outside_the_sample_and_leaves_the_splits_as_they_were(tweets):
    plain, with_transfer = prepare(data(tweets)), prepare(data(tweets, transfer=150))
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(getattr(plain, name), getattr(with_transfer, name))
    transfer = with_transfer.transfer
    assert len(transfer) == 150 and plain.transfer.empty
    sampled = set(pd.concat([plain.train, plain.val, plain.test]).text)
    assert not sampled & set(transfer.text) and transfer.text.is_unique
    pool = synthetic_frame(400).label.mean()
    assert transfer.label.mean() == pytest.approx(pool, abs=0.01)  # stratified
    pd.testing.assert_frame_equal(transfer, prepare(data(tweets, transfer=150)).transfer)  # deterministic
    assert with_transfer.stats["transfer_size"] == 150 and with_transfer.stats["transfer_pool"] == 200


def test_a_copy_of_a_test_text_stays_out_of_the_transfer_set_even_without_deduplication(tmp_path):
    path = tmp_path / "twice.csv"
    frame = synthetic_frame(200)
    pd.concat([frame, frame]).to_csv(path, index=False)  # every text twice
    splits = prepare(data(path, clean=CleanConfig(drop_duplicates=False), transfer=40))
    evaluated = pd.concat([splits.val, splits.test]).text
    sampled = pd.concat([splits.train, splits.val, splits.test]).text
    assert (~evaluated.isin(sampled[sampled.duplicated(keep=False)])).sum() > 0, "no copy left in the pool"
    assert len(splits.transfer) == 40 and not set(evaluated) & set(splits.transfer.text)


def test_with_transfer_appends_the_set_and_marks_it_unlabelled_only_for_a_teacher(tweets):
    splits = prepare(data(tweets, transfer=100))
    assert splits.with_transfer("none") is splits
    for mode, unlabelled in (("labels", False), ("teacher", True)):
        run = splits.with_transfer(mode)
        assert len(run.train) == len(splits.train) + 100 and run.transfer.empty
        assert run.train.unlabelled.tolist() == [False] * len(splits.train) + [unlabelled] * 100
        assert run.stats["split_sizes"]["train"] == len(run.train) and run.stats["transfer"] == mode


@pytest.mark.parametrize("fields, message", [
    ({"sample": None, "transfer": 10}, "data.transfer=10 draws from the train pool outside data.sample"),
    ({"transfer": 201}, "data.transfer=201 but only 200 examples are available"),
])
def test_a_transfer_set_that_cannot_be_drawn_is_refused_naming_the_field(tweets, fields, message):
    with pytest.raises(DataError, match=message):
        prepare(DataConfig(dataset="csv", path=str(tweets), label_names=LABELS, **{"sample": 200, **fields}))


@pytest.mark.parametrize("values, message", [
    ({"data": {"transfer": -1}}, "data.transfer=-1"),
    ({"transfer": "gold"}, "transfer='gold': one of none, labels, teacher"),
    ({"transfer": "teacher", "data": {"transfer": 10}}, "transfer=teacher .* needs a distill block"),
    ({"transfer": "labels"}, "transfer=labels: the data has no transfer set"),
])
def test_bad_transfer_settings_are_refused_before_any_work(values, message):
    with pytest.raises(ConfigError, match=message):
        build(RunConfig, values)


def test_a_study_method_asking_for_a_missing_transfer_set_is_named():
    with pytest.raises(ConfigError, match=r"methods\[1\] \(full\+transfer\)\.transfer=labels: the data has no"):
        build(StudyConfig, {"methods": [{"name": "full"}, {"name": "full", "label": "full+transfer",
                                                           "transfer": "labels"}]})
    assert build(StudyMethodConfig, {"transfer": "labels"}).transfer == "labels"


def test_kd_loss_learns_an_unlabelled_example_from_the_teacher_alone():
    generator = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator)
    labels, temperature, alpha = torch.tensor([0, 1, 2, 1]), 2.0, 0.3
    unlabelled = torch.tensor([False, True, False, True])
    soft = [kd_loss(student[[i]], teacher[[i]], labels[[i]], temperature, 1.0) for i in range(4)]
    mixed = [kd_loss(student[[i]], teacher[[i]], labels[[i]], temperature, alpha) for i in range(4)]
    expected = torch.stack([soft[i] if unlabelled[i] else mixed[i] for i in range(4)]).mean()
    torch.testing.assert_close(kd_loss(student, teacher, labels, temperature, alpha, unlabelled), expected)
    torch.testing.assert_close(kd_loss(student, teacher, labels, temperature, alpha, torch.zeros(4, dtype=bool)),
                               kd_loss(student, teacher, labels, temperature, alpha))


def test_a_teacher_arm_ignores_the_transfer_sets_gold_labels_and_a_labels_arm_learns_them(tweets, tmp_path,
                                                                                         monkeypatch):
    """Flip every gold label of the transfer set: `transfer: teacher` trains the same weights, `labels` others."""
    monkeypatch.setenv("SENDIT_CACHE", str(tmp_path / "cache"))
    cfg = data(tweets, transfer=100)
    teacher = tiny_run(tmp_path / "teacher", cfg, method="full", lr=1e-3)
    splits = prepare(cfg)
    flipped = replace(splits, transfer=splits.transfer.assign(label=lambda f: 1 - f.label))

    def train(mode, chosen, name):
        run = RunConfig(data=cfg, model=ModelConfig(name="tiny-bert", max_length=32),
                        method=MethodConfig(name="full", lr=1e-3), transfer=mode,
                        distill=DistillConfig(teacher=str(teacher)) if mode == "teacher" else None,
                        train=TrainConfig(epochs=1, batch_size=32, bf16=False, threads=1, seed=1))
        chosen = chosen.with_transfer(mode)
        row = execute(run, tmp_path / name, chosen, make_loss=loss_for(run, chosen))
        assert row["transfer"] == mode and row["train_examples"] == len(splits.train) + 100
        return pd.read_csv(tmp_path / name / "predictions.csv").filter(like="prob").to_numpy()

    np.testing.assert_array_equal(train("teacher", splits, "kd"), train("teacher", flipped, "kd-flipped"))
    assert not np.array_equal(train("labels", splits, "gold"), train("labels", flipped, "gold-flipped"))


def test_distill_with_a_transfer_teacher_runs_four_arms_and_the_control_trains_on_gold_labels(tweets, tmp_path,
                                                                                               monkeypatch):
    monkeypatch.setenv("SENDIT_CACHE", str(tmp_path / "cache"))
    cfg = data(tweets, transfer=100)
    out = CliRunner().invoke(app, ["train", "--dataset", "csv", "--data-path", str(tweets), "--sample", "200",
                                   "--model", "tiny-bert", "--method", "full", "--lr", "1e-3", "--max-length", "32",
                                   "--batch-size", "32", "--out", str(tmp_path / "teacher"), "-s", "data.transfer=100",
                                   "-s", f"data.label_names={LABELS}", "-s", "transfer=labels", "-s",
                                   "train.bf16=false", "-s", "train.threads=1", "-s", "train.max_steps=3"])
    assert out.exit_code == 0, out.output
    teacher_data = yaml.safe_load((tmp_path / "teacher" / "config.yaml").read_text())["data"]
    assert teacher_data == to_dict(cfg)
    result = CliRunner().invoke(app, ["distill", "--teacher", str(tmp_path / "teacher"), "--student", "tiny-bert",
                                      "--lr", "1e-3", "--batch-size", "32", "--seeds", "1", "--out",
                                      str(tmp_path / "kd"), "-s", "train.max_steps=2", "-s", "train.threads=1",
                                      "-s", "train.bf16=false"])
    assert result.exit_code == 0, result.output
    assert "transfer set 100" in result.output
    results = pd.read_csv(tmp_path / "kd" / "results.csv").set_index("method")
    assert results.transfer.to_dict() == {"full": "none", "full+kd": "none", "full+transfer": "labels",
                                          "full+kd+transfer": "teacher"}
    # The arms share the study's training split (the transfer texts are their addition): every two are compared
    # on the shared test set, and the report's recommendation weighs all four.
    assert results.train_size.nunique() == 1 and results.train_size.iloc[0] == len(prepare(cfg).train)
    assert len(pd.read_csv(tmp_path / "kd" / "pairwise.csv")) == 6
    assert (tmp_path / "kd" / "report.html").is_file()
    assert (pd.read_csv(tmp_path / "kd" / "summary.csv").method.tolist()
            == ["full", "full+kd", "full+transfer", "full+kd+transfer"])
