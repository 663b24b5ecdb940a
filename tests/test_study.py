"""A tiny study end to end through the CLI: results, notebook files, resume, predict and eval; a grid
over sizes with re-seeded best configurations; selection on validation only; the statistics files."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import synthetic_frame
from typer.testing import CliRunner

from sendit.cli import app
from sendit.config import ConfigError, load_study
from sendit.plan import plan
from sendit.results import NOTEBOOK_COLUMNS, RESULT_COLUMNS, collect, select

runner = CliRunner()
METHODS = ["zero_shot", "head", "bitfit", "lora", "full"]
DATA = {"dataset": "csv", "label_names": ["negative", "positive"]}


def run_study(root, config: dict):
    """Write `config` (output under `root`) and run it through the CLI; return (study dir, config path)."""
    config = {"output_dir": str(root / "runs"), **config}
    path = root / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["study", str(path)])
    assert result.exit_code == 0, result.output
    return root / "runs" / config["name"], path


@pytest.fixture(scope="module")
def tweets(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tweets.csv"
    synthetic_frame(400).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory, tweets):
    """Five methods x two seeds, run once for the module; tests that change it work on a copy."""
    return run_study(tmp_path_factory.mktemp("study"), {
        "name": "tiny", "data": {**DATA, "path": str(tweets)},
        "model": {"name": "tiny-bert", "max_length": 32},
        "train": {"epochs": 2, "batch_size": 16, "bf16": False, "evals_per_epoch": 2, "threads": 1},
        "methods": [{"name": m, "lr": 1e-2 if m != "full" else 3e-3} for m in METHODS],
        "seeds": [1, 2],
    })


@pytest.fixture
def study_dir(study, tmp_path):
    """A private copy of the module's study, its config pointing at the copy."""
    directory, config = study
    copy = tmp_path / "runs" / directory.name
    shutil.copytree(directory, copy)
    values = yaml.safe_load(config.read_text())
    path = tmp_path / config.name
    path.write_text(yaml.safe_dump({**values, "output_dir": str(tmp_path / "runs")}))
    return copy, path


@pytest.fixture(scope="module")
def grid_study(tmp_path_factory, tweets):
    """Two sizes; LoRA over two learning rates, BitFit fixed; the best of each re-run on seed 2."""
    return run_study(tmp_path_factory.mktemp("grid"), {
        "name": "grid", "data": {**DATA, "path": str(tweets)},
        "model": {"name": "tiny-bert", "max_length": 32},
        "train": {"epochs": 1, "batch_size": 16, "bf16": False, "threads": 1},
        "methods": [{"name": "bitfit", "lr": 1e-2}, {"name": "lora", "grid": {"lr": [1e-2, 3e-3]}}],
        "sizes": [100, 200], "seeds": [1], "reseed_best": [1, 2],
    })[0]


def test_results_table_has_every_run_and_column(study):
    directory, _ = study
    results = pd.read_csv(directory / "results.csv")
    assert len(results) == len(METHODS) * 2
    assert set(RESULT_COLUMNS) <= set(results.columns)
    assert {"test_f1_weighted", "test_recall_macro", "memory_delta_mb", "trainable_share",
            "inference_examples_per_s", "precision_negative", "recall_positive", "f1_positive",
            "support_negative", "confusion_matrix"} <= set(results.columns)
    assert (results.support_negative + results.support_positive == results.test_examples).all()
    zero = results[results.method == "zero_shot"]
    assert (zero.trainable_params == 0).all() and zero.f1_per_m_params.isna().all()
    trained = results[results.method != "zero_shot"]
    assert (trained.trainable_params > 0).all() and trained.f1_per_m_params.notna().all()
    assert (results.peak_memory_mb > 0).all() and (results.adapter_mb > 0).all()
    saved = yaml.safe_load((directory / "config.yaml").read_text())
    assert saved["model"]["name"] == "tiny-bert" and saved["seeds"] == [1, 2]


def test_per_method_files_read_the_way_the_notebook_reads_them(study):
    directory, _ = study
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


def test_trained_methods_learn_the_easy_task(study):
    """Random tiny models: full fine-tuning must solve the task; the rest must at least lower the loss."""
    directory, _ = study
    results = pd.read_csv(directory / "results.csv")
    assert results[results.method == "full"].test_accuracy.max() >= 0.9
    for method in ("bitfit", "lora"):  # a head on random features may not learn at all
        log = pd.read_csv(directory / f"{method}_epoch_logs.csv")
        assert log.train_loss.iloc[-1] < log.train_loss.iloc[0], method


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


def test_predict_and_eval_agree_with_the_run(study):
    directory, _ = study
    run = next((directory / "runs").glob("full-*seed1"))
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
    assert out.exit_code == 2 and "not a sendit run" in " ".join(out.output.split())  # rich wraps long paths
    run = next((directory / "runs").glob("lora-*seed1"))
    (run / "adapter.safetensors").write_bytes(b"\x80\x04 pickled? no")
    out = runner.invoke(app, ["predict", str(run), "hi"])
    assert out.exit_code == 2 and "not a valid safetensors file" in " ".join(out.output.split())


def test_dry_run_lists_runs_without_running(tmp_path, tweets_csv):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "d", "output_dir": str(tmp_path / "r"),
                                    "methods": [{"name": "lora"}, {"name": "full"}], "seeds": [1, 2, 3]}))
    out = runner.invoke(app, ["study", str(path), "--dry-run"])
    assert out.exit_code == 0 and "6 runs" in out.output and not (tmp_path / "r" / "d" / "runs").exists()


def test_grid_over_sizes_reruns_each_best_configuration_on_more_seeds(grid_study):
    results = pd.read_csv(grid_study / "results.csv")
    # bitfit: 2 sizes; lora: 2 sizes x 2 lr; then each (method, size) best on seed 2 as well.
    assert len(results) == 2 + 4 + 4 and results.run_id.is_unique
    assert sorted(results.train_size.unique()) == [100, 200]
    assert (results.test_examples == 40).all()  # the same val and test sets for every size
    labels = {tuple(pd.read_csv(grid_study / "runs" / r / "predictions.csv").label) for r in results.run_id}
    assert len(labels) == 1
    reseeded = results[results.seed == 2]
    assert sorted(reseeded.config_id) == sorted(select(results[results.seed == 1]).config_id)
    assert set(results.config_id) >= {"lora-n100-lr0.01-bs16-ep1", "lora-n200-lr0.003-bs16-ep1"}
    assert (results.config_id + "-seed" + results.seed.astype(str) == results.run_id).all()


def test_statistics_files_summarise_each_method_and_pair(grid_study):
    results = pd.read_csv(grid_study / "results.csv")
    summary = pd.read_csv(grid_study / "summary.csv")
    assert len(summary) == 4 and (summary.n_seeds == 2).all()  # 2 methods x 2 sizes, seeds 1 and 2
    for row in summary.itertuples():
        runs = results[results.config_id == row.config_id]
        assert row.test_accuracy_mean == pytest.approx(runs.test_accuracy.mean())
        assert row.test_accuracy_std == pytest.approx(runs.test_accuracy.std(ddof=1), nan_ok=True)
        assert row.test_accuracy_ci_low <= row.test_accuracy_mean <= row.test_accuracy_ci_high
        assert row.test_f1_macro_ci_low <= row.test_f1_macro_mean <= row.test_f1_macro_ci_high
    pairs = pd.read_csv(grid_study / "pairwise.csv")
    assert len(pairs) == 2 and set(pairs.train_size) == {100, 200}
    assert pairs.verdict.str.match(r"\w+ vs \w+: no significant difference \(p|\w+ > \w+, p").all()
    assert (0 <= pairs.p_value).all() and (pairs.p_value <= 1).all()
    statistics = json.loads((grid_study / "statistics.json").read_text())
    assert len(statistics["configurations"]) == 6 and len(statistics["methods"]) == 4
    assert "never" in statistics["selection"] and len(statistics["pairs"]) == 2


def test_selection_never_looks_at_test_metrics(grid_study):
    results = collect(grid_study)
    chosen = select(results).run_id.tolist()
    rng = np.random.default_rng(0)
    for _ in range(20):  # any test scores, even a loser made perfect on test: the same choice
        perturbed = results.copy()
        for column in [c for c in results.columns if c.startswith("test_")]:
            perturbed[column] = rng.random(len(results))
        perturbed.loc[~perturbed.run_id.isin(chosen), ["test_accuracy", "test_f1_macro"]] = 1.0
        assert select(perturbed).run_id.tolist() == chosen
    flipped = results.copy()
    loser = flipped[~flipped.run_id.isin(chosen) & (flipped.method == "lora")].iloc[0]
    flipped.loc[flipped.config_id == loser.config_id, "best_val_f1"] = 2.0  # validation does decide
    assert loser.run_id in select(flipped).run_id.tolist()


def test_selection_compares_configurations_on_their_shared_seeds():
    results = pd.DataFrame({
        "run_id": ["a-seed1", "a-seed2", "a-seed3", "b-seed1", "b-seed2"], "method": "lora", "train_size": 100,
        "config_id": ["a", "a", "a", "b", "b"], "seed": [1, 2, 3, 1, 2],
        "best_val_f1": [0.80, 0.80, 0.50, 0.79, 0.79]})
    # a's extra seed 3 (a re-run of the best) must not demote it: seeds 1-2 decide, a wins 0.80 to 0.79.
    assert select(results).run_id.tolist() == ["a-seed1"]


def test_grid_keys_are_checked_and_run_ids_encode_every_varied_value(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "sizes": [50, 100], "seeds": [1, 2], "methods": [
        {"name": "lora", "grid": {"lr": ["1e-3", 2e-3], "r": [4, 8], "epochs": 2}}, {"name": "zero_shot"}]}))
    runs = plan(load_study(path))
    assert len(runs) == 2 * (2 * 2 + 1) * 2 and len({r.run_id for r in runs}) == len(runs)
    assert runs[0].run_id == "lora-n50-lr0.001-bs32-ep2-r4-seed1"
    assert runs[0].config.method.options["r"] == 4 and runs[0].config.train.epochs == 2.0
    assert runs[0].config.method.lr == 1e-3  # "1e-3" is a string in YAML 1.1: coerced like any field
    assert [r.run_id for r in plan(load_study(path))] == [r.run_id for r in runs]  # stable
    for grid, message in (({"rank": [1]}, "unknown key 'rank'.*option of lora .*alpha"),
                          ({"seed": [1]}, "seeds are the study's `seeds`"), ({"lr": []}, "empty list")):
        with pytest.raises(ConfigError, match=message):
            plan(load_study(path, [f"methods=[{{name: lora, grid: {json.dumps(grid)}}}]"]))


def test_grid_varies_attention_dropout_but_not_tokenisation(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "methods": [
        {"name": "full", "grid": {"attention_dropout": [0.0, 0.1]}}]}))
    runs = plan(load_study(path))
    assert [r.run_id for r in runs] == ["full-lr5e-05-bs32-ep1-attention_dropout0-seed42",
                                        "full-lr5e-05-bs32-ep1-attention_dropout0.1-seed42"]
    assert [r.config.model.attention_dropout for r in runs] == [0.0, 0.1]
    with pytest.raises(ConfigError, match="unknown key 'max_length'.*model field \\(attention, attention_dropout\\)"):
        plan(load_study(path, ["methods=[{name: full, grid: {max_length: [32]}}]"]))
