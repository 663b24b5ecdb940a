"""A tiny study end to end through the CLI: results, notebook files, resume, predict and eval."""
import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sendit.cli import app
from sendit.study import NOTEBOOK_COLUMNS, RESULT_COLUMNS

runner = CliRunner()
METHODS = ["zero_shot", "head", "bitfit", "lora", "full"]


@pytest.fixture
def study_dir(tmp_path, tweets_csv):
    config = {
        "name": "tiny", "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": "csv", "path": str(tweets_csv), "label_names": ["negative", "positive"]},
        "model": {"name": "tiny-bert", "max_length": 32},
        "train": {"epochs": 2, "batch_size": 16, "bf16": False, "evals_per_epoch": 2},
        "methods": [{"name": m, "lr": 1e-2 if m != "full" else 1e-3} for m in METHODS],
        "seeds": [1, 2],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["study", str(path)])
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "tiny", path


def test_results_table_has_every_run_and_column(study_dir):
    directory, _ = study_dir
    results = pd.read_csv(directory / "results.csv")
    assert len(results) == len(METHODS) * 2
    assert set(RESULT_COLUMNS) <= set(results.columns)
    assert {"test_f1_weighted", "test_recall_macro", "memory_delta_mb", "trainable_share",
            "inference_examples_per_s"} <= set(results.columns)
    zero = results[results.method == "zero_shot"]
    assert (zero.trainable_params == 0).all() and zero.f1_per_m_params.isna().all()
    trained = results[results.method != "zero_shot"]
    assert (trained.trainable_params > 0).all() and trained.f1_per_m_params.notna().all()
    assert (results.peak_memory_mb > 0).all() and (results.adapter_mb > 0).all()
    saved = yaml.safe_load((directory / "config.yaml").read_text())
    assert saved["model"]["name"] == "tiny-bert" and saved["seeds"] == [1, 2]


def test_per_method_files_read_the_way_the_notebook_reads_them(study_dir):
    directory, _ = study_dir
    results_all = pd.read_csv(directory / "results.csv")
    for method in METHODS:
        results = pd.read_csv(directory / f"{method}_results.csv")
        assert list(results.columns[:len(NOTEBOOK_COLUMNS)]) == NOTEBOOK_COLUMNS
        assert results["best_val_f1"].max() == results.loc[0, "best_val_f1"]  # first row = best config
        epochs = pd.read_csv(directory / f"{method}_epoch_logs.csv")
        assert {"epoch", "val_accuracy", "val_f1", "train_loss", "val_loss"} <= set(epochs.columns)
        assert len(epochs) == (0 if method == "zero_shot" else 4)  # 2 epochs x 2 validations
        summary = pd.read_csv(directory / f"{method}_inference_metrics_summary.csv")
        best_run = results_all.loc[results_all[results_all.method == method].best_val_f1.idxmax()]
        assert summary.loc[0, "accuracy"] == pytest.approx(best_run.test_accuracy)
        assert {"accuracy", "f1_macro", "f1_weighted", "inference_time_sec"} <= set(summary.columns)
        predictions = pd.read_csv(directory / f"{method}_inference_predictions.csv")
        assert (predictions.pred == predictions.label).mean() == pytest.approx(best_run.test_accuracy)


def test_trained_methods_learn_the_easy_task(study_dir):
    directory, _ = study_dir
    results = pd.read_csv(directory / "results.csv")
    best = results.groupby("method").test_accuracy.max()
    assert best["full"] >= 0.9 and best["lora"] >= 0.75 and best["bitfit"] >= 0.75, best.to_dict()


def test_rerun_skips_finished_runs_and_redoes_an_unfinished_one(study_dir):
    directory, config = study_dir
    runs = sorted((directory / "runs").iterdir())
    stamps = {r.name: (r / "metrics.json").stat().st_mtime_ns for r in runs}
    unfinished = runs[3]
    (unfinished / "metrics.json").unlink()  # as if the study was killed during this run
    result = runner.invoke(app, ["study", str(config)])
    assert result.exit_code == 0, result.output
    assert f"{len(runs) - 1} already done" in result.output
    for run in runs:
        now = (run / "metrics.json").stat().st_mtime_ns
        assert (now != stamps[run.name]) == (run == unfinished), run.name
    assert len(pd.read_csv(directory / "results.csv")) == len(runs)


def test_predict_and_eval_agree_with_the_run(study_dir):
    directory, _ = study_dir
    run = next((directory / "runs").glob("lora-*seed1"))
    out = runner.invoke(app, ["predict", str(run), "i love this", "i hate this", "-o", "jsonl"], input="")
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.strip().splitlines()]
    assert [r["label"] for r in rows] == ["positive", "negative"]
    assert all(abs(r["p_negative"] + r["p_positive"] - 1) < 1e-5 for r in rows)
    stdin = runner.invoke(app, ["predict", str(run), "-", "-o", "csv"], input="what a great day\nso sad right now\n")
    assert stdin.exit_code == 0 and pd.read_csv(__import__("io").StringIO(stdin.output)).label.tolist() == \
        ["positive", "negative"]
    evaluated = runner.invoke(app, ["eval", str(run)])
    assert evaluated.exit_code == 0, evaluated.output
    accuracy = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    assert f"accuracy      {accuracy:.4f}" in evaluated.output


def test_bad_run_directory_is_refused_with_its_path(tmp_path, study_dir):
    directory, _ = study_dir
    out = runner.invoke(app, ["predict", str(tmp_path), "hi"])
    assert out.exit_code == 2 and "not a sendit run" in out.output
    run = next((directory / "runs").glob("lora-*seed1"))
    (run / "adapter.safetensors").write_bytes(b"\x80\x04 pickled? no")
    out = runner.invoke(app, ["predict", str(run), "hi"])
    assert out.exit_code == 2 and "not a valid safetensors file" in out.output


def test_dry_run_lists_runs_without_running(tmp_path, tweets_csv):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "d", "output_dir": str(tmp_path / "r"),
                                    "methods": [{"name": "lora"}, {"name": "full"}], "seeds": [1, 2, 3]}))
    out = runner.invoke(app, ["study", str(path), "--dry-run"])
    assert out.exit_code == 0 and "6 runs" in out.output and not (tmp_path / "r" / "d" / "runs").exists()
