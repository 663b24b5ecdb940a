"""A tiny study end to end through the CLI: results, notebook files, resume, predict and eval; a grid
over sizes with re-seeded best configurations; selection on validation only; the statistics files."""
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import seed_interval, seeds_and_test_interval, synthetic_frame
from typer.testing import CliRunner

from sendit.cli import app
from sendit.config import ConfigError, StudyConfig, StudyMethodConfig, load_study
from sendit.plan import plan, reseed_plan
from sendit.results import (ALPHA, NOTEBOOK_COLUMNS, RESULT_COLUMNS, best_per_method, collect, select,
                            write_results, write_statistics)
from sendit.stats import paired_test

runner = CliRunner()
METHODS = ["zero_shot", "head", "bitfit", "lora", "full"]
DATA = {"dataset": "csv", "label_names": ["negative", "positive"]}


def run_study(root, config: dict):
    """Write `config` (output under `root`) and run it through the CLI; return (study dir, config path)."""
    config = {"output_dir": str(root / "runs"), "report": False, **config}  # test_report.py draws reports
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
        # 4 epochs: after 2 most seeds of full FT still predict one class, with torch's dropout as with FastDropout
        "train": {"epochs": 4, "batch_size": 16, "bf16": False, "evals_per_epoch": 2, "threads": 1},
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
    assert not (directory / "report.html").exists() and not (directory / "figures").exists()  # report: false


def test_per_method_files_read_the_way_the_notebook_reads_them(study):
    directory, _ = study
    results_all = pd.read_csv(directory / "results.csv")
    for method in METHODS:
        results = pd.read_csv(directory / f"{method}_results.csv")
        assert list(results.columns[:len(NOTEBOOK_COLUMNS)]) == NOTEBOOK_COLUMNS
        best_run = best_per_method(results_all).loc[method]
        assert results.loc[0, "run_id"] == best_run.run_id  # first row: the selected run
        assert results["best_val_f1"].iloc[1:].is_monotonic_decreasing
        epochs = pd.read_csv(directory / f"{method}_epoch_logs.csv")
        assert {"epoch", "val_accuracy", "val_f1", "train_loss", "val_loss"} <= set(epochs.columns)
        assert len(epochs) == (0 if method == "zero_shot" else 8)  # 4 epochs x 2 validations
        summary = pd.read_csv(directory / f"{method}_inference_metrics_summary.csv")
        assert summary.loc[0, "accuracy"] == pytest.approx(best_run.test_accuracy)
        assert {"accuracy", "f1_macro", "f1_weighted", "inference_time_sec"} <= set(summary.columns)
        predictions = pd.read_csv(directory / f"{method}_inference_predictions.csv")
        assert (predictions.pred == predictions.label).mean() == pytest.approx(best_run.test_accuracy)


def test_notebook_files_list_the_chosen_run_first_then_the_others_best_first(tmp_path):
    """Four lora configurations whose validation F1 is in no order by run id: the notebook's file
    starts with the selected run, then the rest by descending validation F1."""
    f1s = {"lora-lr0.001-bs16-ep1-seed1": 0.70, "lora-lr0.002-bs16-ep1-seed1": 0.90,
           "lora-lr0.003-bs16-ep1-seed1": 0.60, "lora-lr0.004-bs16-ep1-seed1": 0.80}
    for run_id, f1 in f1s.items():
        run_dir = tmp_path / "runs" / run_id
        run_dir.mkdir(parents=True)
        row = {"method": "lora", "lr": float(run_id[7:12]), "batch_size": 16, "epochs": 1.0, "seed": 1,
               "best_val_f1": f1, "val_accuracy": f1, "runtime_sec": 1.0, "memory_delta_mb": 1.0,
               **{f"test_{m}": 0.5 for m in ("accuracy", "f1_macro", "f1_weighted", "recall_macro")},
               "inference_time_sec": 1.0, "inference_examples_per_s": 1.0}
        (run_dir / "metrics.json").write_text(json.dumps({"row": row}))
        pd.DataFrame({"epoch": [1], "val_accuracy": [f1], "val_f1": [f1], "train_loss": [0.5], "val_loss": [0.5],
                      "phase": ["train"], "step": [10]}).to_csv(run_dir / "epoch_log.csv", index=False)
        pd.DataFrame({"label": [0, 1], "pred": [0, 0]}).to_csv(run_dir / "predictions.csv", index=False)
    write_results(tmp_path)
    listed = pd.read_csv(tmp_path / "lora_results.csv")
    assert listed.best_val_f1.tolist() == [0.90, 0.80, 0.70, 0.60]
    assert listed.run_id.tolist()[0] == "lora-lr0.002-bs16-ep1-seed1"


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


def test_rerun_with_another_selection_metric_is_refused_before_any_work(study_dir):
    directory, path = study_dir
    saved = (directory / "config.yaml").read_text()
    result = runner.invoke(app, ["study", str(path), "--set", "selection.metric=accuracy"])
    assert result.exit_code == 2
    assert "were selected on f1_macro, not selection.metric=accuracy" in " ".join(result.output.split())
    assert (directory / "config.yaml").read_text() == saved


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


def seed_correct(directory, results, run_id, seed) -> np.ndarray:
    """Which test examples the run of `run_id`'s configuration with `seed` gets right."""
    config = results.loc[results.run_id == run_id, "config_id"].item()
    run = results.loc[(results.config_id == config) & (results.seed == seed), "run_id"].item()
    predictions = pd.read_csv(directory / "runs" / run / "predictions.csv")
    return (predictions["pred"] == predictions["label"]).to_numpy()


def test_statistics_files_summarise_each_method_and_pair(grid_study):
    results = pd.read_csv(grid_study / "results.csv")
    summary = pd.read_csv(grid_study / "summary.csv")
    assert len(summary) == 4 and (summary.n_seeds == 2).all()  # 2 methods x 2 sizes, seeds 1 and 2
    assert summary.config_id.tolist() == select(results).config_id.tolist()
    for row in summary.itertuples():
        runs = results[results.config_id == row.config_id]
        assert row.test_accuracy_mean == pytest.approx(runs.test_accuracy.mean())
        assert row.test_accuracy_std == pytest.approx(runs.test_accuracy.std(ddof=1), nan_ok=True)
        for metric, column in (("accuracy", "test_accuracy"), ("f1_macro", "test_f1_macro")):
            expected = seed_interval(grid_study, runs.run_id, metric)
            assert [getattr(row, f"{column}_ci_low"), getattr(row, f"{column}_ci_high")] == pytest.approx(expected)
            wider = seeds_and_test_interval(grid_study, runs.run_id, metric, runs[column])
            assert [getattr(row, f"{column}_ci_seeds_low"), getattr(row, f"{column}_ci_seeds_high")] == pytest.approx(wider)
    pairs = pd.read_csv(grid_study / "pairwise.csv")
    assert len(pairs) == 2 and set(pairs.train_size) == {100, 200}
    for pair in pairs.itertuples():  # both seeds of each side's selected configuration, seed by seed
        assert pair.seeds == "1 2"
        correct_a, correct_b = (np.stack([seed_correct(grid_study, results, run_id, seed) for seed in (1, 2)])
                                for run_id in (pair.run_a, pair.run_b))
        only_a, only_b = int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum())
        assert (pair.only_a_correct, pair.only_b_correct) == (only_a, only_b)
        assert (pair.accuracy_a, pair.accuracy_b) == pytest.approx((correct_a.mean(), correct_b.mean()))
        assert (pair.statistic, pair.p_value) == pytest.approx(paired_test(correct_a, correct_b))
        winner, loser = (pair.method_a, pair.method_b) if only_a > only_b else (pair.method_b, pair.method_a)
        assert pair.verdict.startswith(f"{winner} > {loser}, p" if pair.p_value < ALPHA
                                       else f"{pair.method_a} vs {pair.method_b}: no significant difference")
    statistics = json.loads((grid_study / "statistics.json").read_text())
    assert len(statistics["configurations"]) == 6 and len(statistics["methods"]) == 4
    pd.testing.assert_frame_equal(pd.DataFrame(statistics["pairs"]), pairs, check_dtype=False)


def run_table(rows) -> pd.DataFrame:
    """results.csv rows from (method, train_size, config_id, seed, best_val_f1, test_accuracy)."""
    return pd.DataFrame([{"run_id": f"{config}-seed{seed}", "method": method, "train_size": size, "config_id": config,
                          "seed": seed, "best_val_f1": val, "test_accuracy": test, "test_f1_macro": test}
                         for method, size, config, seed, val, test in rows])


# Per (method, size), where the mean validation F1 over seeds and the best seed disagree, and the
# test scores favour the configuration validation rejects.
SELECTION = run_table([
    ("lora", 100, "lora-n100-A", 1, 0.80, 0.99), ("lora", 100, "lora-n100-A", 2, 0.70, 0.99),  # mean 0.75
    ("lora", 100, "lora-n100-B", 1, 0.76, 0.50), ("lora", 100, "lora-n100-B", 2, 0.77, 0.50),  # mean 0.765
    ("lora", 200, "lora-n200-A", 1, 0.82, 0.50), ("lora", 200, "lora-n200-A", 2, 0.80, 0.50),  # mean 0.81
    ("lora", 200, "lora-n200-B", 1, 0.79, 0.99), ("lora", 200, "lora-n200-B", 2, 0.79, 0.99),
    ("bitfit", 100, "bitfit-n100-C", 1, 0.60, 0.50), ("bitfit", 100, "bitfit-n100-C", 2, 0.62, 0.50),
    ("bitfit", 100, "bitfit-n100-D", 1, 0.90, 0.99), ("bitfit", 100, "bitfit-n100-D", 2, 0.20, 0.99),
])


def test_selection_ranks_configurations_by_mean_validation_f1_not_their_best_seed():
    """lora at 100: A's best seed (0.80) beats all of B's, but B's mean (0.765) beats A's (0.75); the
    chosen run is then the winner's best seed. Each method and size is decided apart."""
    assert select(SELECTION).run_id.tolist() == ["lora-n100-B-seed2", "lora-n200-A-seed1", "bitfit-n100-C-seed2"]


def validated(metric: str | None) -> pd.DataFrame:
    """Two configurations, two seeds: A is the more accurate on validation, B has the higher macro-F1.
    Written with `metric` as each run's selection metric (None: results from before there was one)."""
    rows = [("A", 1, 0.70, 0.86), ("A", 2, 0.72, 0.84), ("B", 1, 0.80, 0.80), ("B", 2, 0.79, 0.81)]
    table = pd.DataFrame([{"run_id": f"{config}-seed{seed}", "method": "lora", "train_size": 100,
                           "config_id": config, "seed": seed, "best_val_f1": f1, "val_accuracy": accuracy,
                           "test_accuracy": 0.5} for config, seed, f1, accuracy in rows])
    if metric is None:
        return table
    return table.assign(selection_metric=metric, best_val_score=table["val_accuracy" if metric == "accuracy"
                                                                      else "best_val_f1"])


def test_selection_ranks_on_the_metric_the_runs_were_selected_on():
    assert select(validated("f1_macro")).run_id.tolist() == ["B-seed1"]
    assert select(validated("accuracy")).run_id.tolist() == ["A-seed1"]
    assert select(validated(None)).run_id.tolist() == ["B-seed1"]  # saved before the choice: macro-F1
    resumed = pd.concat([validated(None)[:2], validated("f1_macro")[2:]])  # an old study run on by new code
    assert select(resumed).run_id.tolist() == ["B-seed1"]
    with pytest.raises(ConfigError, match=r"different metrics \(accuracy, f1_macro\).*selection.metric"):
        select(pd.concat([validated("accuracy")[:2], validated(None)[2:]]))


def test_best_per_method_is_the_selection_on_the_largest_training_set_every_method_reached():
    """bitfit has not reached 200 (a sizes study still running): both compare at 100, as pairwise.csv pairs."""
    best = best_per_method(SELECTION)
    assert best.index.tolist() == ["lora", "bitfit"]  # the table's order
    assert best.run_id.tolist() == ["lora-n100-B-seed2", "bitfit-n100-C-seed2"]
    finished = pd.concat([SELECTION, run_table([("bitfit", 200, "bitfit-n200-C", 1, 0.6, 0.5)])], ignore_index=True)
    assert best_per_method(finished).run_id.tolist() == ["lora-n200-A-seed1", "bitfit-n200-C-seed1"]
    apart = pd.concat([SELECTION[SELECTION["train_size"] == 200], SELECTION[SELECTION["method"] == "bitfit"]])
    assert best_per_method(apart).run_id.tolist() == ["lora-n200-A-seed1", "bitfit-n100-C-seed2"]  # none shared


def test_reseed_plan_reruns_the_mean_best_configuration_per_size_on_the_missing_seeds():
    cfg = StudyConfig(methods=[StudyMethodConfig(name="lora", grid={"lr": [1e-3, 2e-3]})], sizes=[100, 200],
                      seeds=[1, 2], reseed_best=[2, 3, 4])
    grid = plan(cfg)
    validation = {"lora-n100-lr0.001-bs32-ep1": [0.80, 0.70], "lora-n100-lr0.002-bs32-ep1": [0.76, 0.77],
                  "lora-n200-lr0.001-bs32-ep1": [0.82, 0.80], "lora-n200-lr0.002-bs32-ep1": [0.79, 0.79]}
    assert [r.config_id for r in grid[::2]] == list(validation)
    results = run_table([("lora", r.size, r.config_id, r.config.train.seed,
                          validation[r.config_id][r.config.train.seed - 1], 0.5) for r in grid])
    assert [r.run_id for r in reseed_plan(cfg, grid, results)] == [
        "lora-n100-lr0.002-bs32-ep1-seed3", "lora-n100-lr0.002-bs32-ep1-seed4",
        "lora-n200-lr0.001-bs32-ep1-seed3", "lora-n200-lr0.001-bs32-ep1-seed4"]


def write_hand_study(directory, correct: dict[str, list[np.ndarray]]):
    """Run directories with predictions.csv and metrics.json for `correct[method][seed - 1]`, one
    configuration per method, seed 1 its best on validation; returns results.csv's table."""
    labels = np.arange(len(next(iter(correct.values()))[0])) % 2
    rows = []
    for method, seeds in correct.items():
        for seed, right in enumerate(seeds, 1):
            run_id = f"{method}-lr0.01-bs16-ep1-seed{seed}"
            (directory / "runs" / run_id).mkdir(parents=True)
            pd.DataFrame({"label": labels, "pred": np.where(right, labels, 1 - labels)}).to_csv(
                directory / "runs" / run_id / "predictions.csv", index=False)
            (directory / "runs" / run_id / "metrics.json").write_text(json.dumps({"label_names": ["neg", "pos"]}))
            rows.append({"run_id": run_id, "config_id": f"{method}-lr0.01-bs16-ep1", "method": method,
                         "train_size": 320, "seed": seed, "lr": 0.01, "batch_size": 16, "epochs": 1.0,
                         "best_val_f1": 0.9 - 0.1 * seed, "test_accuracy": right.mean(),
                         "test_f1_macro": right.mean()})
    return pd.DataFrame(rows)


def test_statistics_by_hand(tmp_path):
    """100 test examples. bitfit: 60 then 70 right; lora: 90 then 80 right. Seed 1: 35 examples only LoRA
    gets right, 5 only BitFit; seed 2: 10 and 0. Seeds right per example, BitFit - LoRA: -1 on 25
    examples, -2 on 10, +1 on 5: sum -40, sum of squares 70, statistic (40 - 1)^2 / 70."""
    def right(*counts):  # alternating runs of right and wrong answers
        return np.concatenate([np.full(n, i % 2 == 0) for i, n in enumerate(counts)])

    correct = {"bitfit": [right(55, 35, 5, 5), right(70, 30)], "lora": [right(90, 10), right(80, 20)]}
    results = write_hand_study(tmp_path, correct)
    statistics = write_statistics(tmp_path, results)

    summary = pd.read_csv(tmp_path / "summary.csv").set_index("method")
    assert summary.loc["bitfit", "test_accuracy_mean"] == pytest.approx(0.65)
    assert summary.loc["bitfit", "test_accuracy_std"] == pytest.approx(math.sqrt(0.005))  # ddof 1: (0.05^2 * 2) / 1
    assert summary.loc["lora", "test_accuracy_mean"] == pytest.approx(0.85)
    assert summary.loc["lora", "best_run"] == "lora-lr0.01-bs16-ep1-seed1"
    assert summary.loc["lora", "seeds"] == "1 2" and summary.loc["lora", "n_seeds"] == 2
    lora_runs = results[results.method == "lora"].run_id
    for metric in ("accuracy", "f1_macro"):  # the interval of the mean of both seeds, not of the best run
        interval = summary.loc["lora", [f"test_{metric}_ci_low", f"test_{metric}_ci_high"]].tolist()
        assert interval == pytest.approx(seed_interval(tmp_path, lora_runs, metric))
        assert interval != pytest.approx(seed_interval(tmp_path, lora_runs[:1], metric))
        # Over seeds too: 0.9 and 0.8, t(0.975, 1 df) = 12.71 x 0.0707 / sqrt(2) = 0.635: 0.85 + that passes 1.
        low, high = summary.loc["lora", [f"test_{metric}_ci_seeds_low", f"test_{metric}_ci_seeds_high"]]
        assert high == 1.0 and low == pytest.approx(0.85 - math.hypot(0.85 - interval[0], 0.6353), abs=1e-3)

    pair = pd.read_csv(tmp_path / "pairwise.csv").iloc[0]
    assert (pair.method_a, pair.method_b, pair.only_a_correct, pair.only_b_correct) == ("bitfit", "lora", 5, 45)
    assert (pair.seeds, pair.accuracy_a, pair.accuracy_b) == ("1 2", pytest.approx(0.65), pytest.approx(0.85))
    assert pair.statistic == pytest.approx(39 ** 2 / 70)
    assert pair.p_value == pytest.approx(math.erfc(math.sqrt(39 ** 2 / 70 / 2)))  # chi-square(1) tail, 3e-6
    assert pair.verdict == "lora > bitfit, p < 0.001"
    configurations = {c["config_id"]: c for c in statistics["configurations"]}
    assert configurations["lora-lr0.01-bs16-ep1"]["test_accuracy_mean"] == pytest.approx(0.85)
    assert configurations["lora-lr0.01-bs16-ep1"]["test_accuracy_std"] == pytest.approx(math.sqrt(0.005))


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


def test_a_study_on_macro_recall_keeps_selects_and_reports_by_it(tmp_path, tweets):
    directory, _ = run_study(tmp_path, {
        "name": "recall", "data": {**DATA, "path": str(tweets)}, "model": {"name": "tiny-bert", "max_length": 32},
        "train": {"epochs": 1, "batch_size": 16, "bf16": False, "evals_per_epoch": 3, "threads": 1},
        "methods": [{"name": "full", "grid": {"lr": [3e-3, 1e-3]}}], "seeds": [1],
        "selection": {"metric": "recall_macro"}, "report": True})
    results = pd.read_csv(directory / "results.csv")
    assert (results.selection_metric == "recall_macro").all() and len(results) == 2
    for run in results.itertuples():
        log = pd.read_csv(directory / "runs" / run.run_id / "epoch_log.csv")
        kept = log.loc[log.val_recall_macro.idxmax()]  # the first best
        assert (run.best_val_score, run.best_val_f1, run.val_accuracy, run.best_epoch) == (
            kept.val_recall_macro, kept.val_f1, kept.val_accuracy, kept.epoch)
        saved = yaml.safe_load((directory / "runs" / run.run_id / "config.yaml").read_text())
        assert saved["selection"] == {"metric": "recall_macro"}
    assert select(results).run_id.tolist() == [results.loc[results.best_val_score.idxmax(), "run_id"]]
    statistics = json.loads((directory / "statistics.json").read_text())
    assert statistics["selection_metric"] == "recall_macro"
    assert "the best mean validation macro-recall over the seeds" in statistics["selection"]
    page = (directory / "report.html").read_text()
    assert "selected on validation macro-recall (val macro-recall), on the largest training set" in page
    assert "<th class=num>val macro-recall %</th>" in page
    assert "validation macro-recall (the selection metric)" in (directory / "report.md").read_text()
