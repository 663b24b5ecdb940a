"""A study's hyperparameter search (Optuna): trials are runs, a bad learning rate is pruned, a killed
search resumes without repeating finished trials, the same seed finds the same best trial, every
method gets the same budget, the report shows the tuning figures, and bad spaces fail before training."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from conftest import separable_frame
from typer.testing import CliRunner

from sendit.cli import app
from sendit.config import ConfigError, load_study
from sendit.plan import plan

optuna = pytest.importorskip("optuna")
runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
GOOD, BAD = 3e-3, 1e-9  # full fine-tuning of tiny-bert on separable texts: learns / stays at chance


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "texts.csv"
    separable_frame(300).to_csv(path, index=False)
    return path


def config(root: Path, texts: Path, name: str, **changes) -> dict:
    """A search over full fine-tuning's learning rate: two good starting points, then a bad one."""
    values = {
        "name": name, "output_dir": str(root / "runs"), "report": False,
        "data": {"dataset": "csv", "path": str(texts), "label_names": ["negative", "positive"]},
        "model": {"name": "tiny-bert", "max_length": 16},
        "train": {"epochs": 3, "batch_size": 16, "precision": "fp32", "eval_precision": "fp32", "threads": 1},
        "methods": [{"name": "full", "search": {"lr": {"low": 1e-9, "high": 1e-2, "log": True}},
                     "search_start": [{"lr": GOOD}, {"lr": 2e-3}, {"lr": BAD}]}],
        "seeds": [1],
        "search": {"trials": 3, "pruner": "median", "startup_trials": 2},
    }
    for key, value in changes.items():
        values[key] = value
    return values


def write(root: Path, values: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{values['name']}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def run(root: Path, values: dict) -> Path:
    result = runner.invoke(app, ["study", str(write(root, values))])
    assert result.exit_code == 0, result.output
    return root / "runs" / values["name"]


def trials_of(directory: Path) -> list:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(directory / "search.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).trials


@pytest.fixture(scope="module")
def searched(tmp_path_factory, texts):
    root = tmp_path_factory.mktemp("search")
    return run(root, config(root, texts, "searched", reseed_best=[1, 2]))


def test_trials_are_runs_and_a_bad_learning_rate_is_pruned(searched):
    results = pd.read_csv(searched / "results.csv")
    trials = results[results["trial"].notna()].drop_duplicates("config_id")
    assert trials["trial"].tolist() == [0, 1, 2]
    assert trials["lr"].tolist() == pytest.approx([GOOD, 2e-3, BAD])
    assert trials["pruned"].tolist() == [False, False, True]
    logs = [pd.read_csv(searched / "runs" / run_id / "epoch_log.csv") for run_id in trials["run_id"]]
    assert [len(log) for log in logs] == [3, 3, 1]  # the bad one stopped at its first validation
    states = [t.state for t in trials_of(searched)]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]


def test_the_best_trial_is_chosen_on_validation_and_reseeded(searched):
    results = pd.read_csv(searched / "results.csv")
    summary = pd.read_csv(searched / "summary.csv")
    finished = results[results["trial"].notna() & ~results["pruned"].astype(bool)].drop_duplicates("config_id")
    best = finished.loc[finished["best_val_f1"].idxmax(), "config_id"]
    assert summary["config_id"].tolist() == [best]
    assert sorted(results.loc[results["config_id"] == best, "seed"]) == [1, 2]  # re-run on seed 2 too
    assert summary["n_seeds"].tolist() == [2]


def test_the_report_shows_the_tuning_section(searched):
    from sendit.report import write_report

    html = write_report(searched).read_text()
    assert "Tuning sensitivity" in html and "Search progress" in html and 'id="tuning"' in html
    assert (searched / "figures" / "tuning_sensitivity.png").stat().st_size > 0
    assert "trials" in (searched / "report.md").read_text()


def test_same_seed_finds_the_same_trials(tmp_path, texts):
    """Run sequentially, a seeded TPE search samples the same learning rates and picks the same best."""
    values = {"search": {"trials": 3, "pruner": "none", "startup_trials": 2, "seed": 7}}
    space = [{"name": "full", "search": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}}]
    first = run(tmp_path / "a", config(tmp_path / "a", texts, "same", methods=space, **values))
    second = run(tmp_path / "b", config(tmp_path / "b", texts, "same", methods=space, **values))
    params = [[t.params for t in trials_of(d)] for d in (first, second)]
    assert params[0] == params[1] and len(params[0]) == 3
    best = [pd.read_csv(d / "summary.csv")["config_id"].item() for d in (first, second)]
    assert best[0] == best[1]


def test_every_method_gets_the_same_budget(tmp_path, texts):
    """A budget in training examples: each method trains until it has spent it, and no further trial starts."""
    budget = 1000
    methods = [{"name": m, "search": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}} for m in ("bitfit", "full")]
    directory = run(tmp_path, config(tmp_path, texts, "budget", methods=methods,
                                     train={"epochs": 1, "batch_size": 16, "precision": "fp32", "threads": 1},
                                     search={"examples": budget, "pruner": "none"}))
    results = pd.read_csv(directory / "results.csv")
    for method, runs in results.groupby("method"):
        spent = runs["train_examples"].cumsum()
        assert spent.iloc[-1] >= budget and (len(runs) == 1 or spent.iloc[-2] < budget), method
    assert results.groupby("method")["train_examples"].sum().nunique() == 1  # equal per-trial cost here


class FakeRuns:
    """Stands in for `parallel.execute_runs`: each trial "trains" 240 examples at once, writes its
    metrics.json and scores 0.5; records the size of every batch of trials started together."""

    EXAMPLES = 240

    def __init__(self):
        self.batches = []

    def __call__(self, batch, runs_dir, data, console, workers, ray_address):
        self.batches.append(len(batch))
        for planned in batch:
            row = {"train_examples": self.EXAMPLES, "runtime_sec": 1.0, "pruned": False, "best_val_score": 0.5}
            (runs_dir / planned.run_id).mkdir(parents=True)
            (runs_dir / planned.run_id / "metrics.json").write_text(json.dumps({"row": row}))
            yield planned, row


def method_search(tmp_path, texts, monkeypatch, **search):
    """The search of full FT's learning rate (one epoch per trial), with `FakeRuns` for training."""
    from rich.console import Console

    from sendit import search as searching
    from sendit.pruning import journal_storage

    values = config(tmp_path, texts, "fake", search={"pruner": "none", **search},
                    train={"epochs": 1, "batch_size": 16, "precision": "fp32", "threads": 1})
    cfg = load_study(write(tmp_path, values))
    fake = FakeRuns()
    monkeypatch.setattr(searching, "execute_runs", fake)
    data = SimpleNamespace(for_run=lambda planned: (SimpleNamespace(train=range(FakeRuns.EXAMPLES)), None))
    (index, space), = searching.search_spaces(cfg).items()

    def new_search():  # as a new `sendit study` process opens it
        return searching.MethodSearch(cfg, index, space, journal_storage(tmp_path / "search.journal"), tmp_path)

    def run_it(workers: int = 1):
        return new_search().run(lambda: data, Console(quiet=True), workers, None, on_finished=lambda: None)

    return new_search, run_it, fake


def test_trials_in_parallel_overrun_an_examples_budget_no_more_than_one_by_one(tmp_path, texts, monkeypatch):
    """With an examples budget and 2 workers, a second trial starts beside the first only while both,
    run in full, would leave some budget: the search spends what it spends one trial at a time."""
    _, run_it, fake = method_search(tmp_path, texts, monkeypatch, examples=1000)
    trials = run_it(workers=2)
    assert fake.batches == [2, 2, 1]  # 480, 960 spent; 960 + 240 would reach 1,000: one more trial alone
    assert len(trials) == 5  # 1,200 examples, as one by one (4 x 240 < 1,000, then a fifth)


def test_a_trial_whose_run_finished_before_the_kill_is_told_its_score_not_rerun(tmp_path, texts, monkeypatch):
    """Killed between a trial's run writing metrics.json and Optuna hearing of it: the next search
    reads the run's score from its directory and trains it no more."""
    new_search, run_it, fake = method_search(tmp_path, texts, monkeypatch, trials=3)
    killed = new_search()
    orphan = killed._ask()
    next(fake([orphan], tmp_path / "runs", None, None, 1, None))  # its run finished; then the kill
    run_it()
    assert fake.batches == [1, 1, 1]  # trial 0 trained once; trials 1 and 2 after the resume
    trials = new_search().study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert trials[0].value == 0.5 and trials[0].user_attrs["train_examples"] == FakeRuns.EXAMPLES


def test_a_killed_search_resumes_without_repeating_finished_trials(tmp_path, texts):
    values = config(tmp_path, texts, "killed", search={"trials": 3, "pruner": "none"},
                    train={"epochs": 12, "batch_size": 16, "precision": "fp32", "threads": 1})
    values["methods"][0]["search_start"] = [{"lr": GOOD}, {"lr": 2e-3}, {"lr": 1e-3}]
    path = write(tmp_path, values)
    directory = tmp_path / "runs" / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen([sys.executable, "-m", "sendit.cli", "study", str(path)], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not list(directory.glob("runs/*trial001*")) and time.time() < deadline:  # made as trial 1 starts
            time.sleep(0.1)
        time.sleep(1.0)  # inside trial 1's training
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (first,) = list(directory.glob("runs/*trial000*/metrics.json"))
    stamp = first.stat().st_mtime_ns
    assert not list(directory.glob("runs/*trial001*/metrics.json")), "trial 1 finished before the kill"

    run(tmp_path, values)
    assert first.stat().st_mtime_ns == stamp  # trial 0 was not repeated
    trials = trials_of(directory)
    states = [t.state for t in trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and states.count(optuna.trial.TrialState.COMPLETE) == 3
    failed = next(t for t in trials if t.state == optuna.trial.TrialState.FAIL)
    later = [t.params for t in trials if t.number > failed.number and t.state == optuna.trial.TrialState.COMPLETE]
    assert failed.params in later  # the interrupted trial, re-run with its parameters
    assert len(pd.read_csv(directory / "results.csv")) == 3


@pytest.mark.parametrize("change, field", [
    ({"search": {"lr": {"low": 1e-2, "high": 1e-4}}}, "methods[0] (full).search.lr: an empty or inverted range"),
    ({"search": {"lr": {"low": 1e-3, "high": 1e-3}}}, "methods[0] (full).search.lr: an empty or inverted range"),
    ({"search": {"lr": []}}, "methods[0] (full).search.lr: an empty list of choices"),
    ({"search": {"r": [8, 16]}}, "methods[0] (full).search.r: unknown key 'r'"),
    ({"search": {"lr": {"low": 0, "high": 1e-2, "log": True}}}, "methods[0] (full).search.lr: a log range"),
    ({"search": {"lr": [1e-3]}, "grid": {"lr": [1e-3]}}, "methods[0] (full).search: give a method a grid or a search"),
])
def test_a_bad_space_is_refused_before_training(tmp_path, texts, change, field):
    values = config(tmp_path, texts, "bad")
    values["methods"] = [{"name": "full", **change}]
    result = runner.invoke(app, ["study", str(write(tmp_path, values))])
    assert result.exit_code == 2
    assert field in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


@pytest.mark.parametrize("search, field", [
    ({"trials": 0}, "search.trials=0: a budget must be positive"),
    ({"examples": 0}, "search.examples=0: a budget must be positive"),
    ({}, "search: give exactly one budget"),
    ({"trials": 3, "minutes": 5}, "search: give exactly one budget"),
    ({"trials": 3, "pruner": "asha"}, "search.pruner='asha'"),
])
def test_a_bad_budget_is_refused_before_training(tmp_path, texts, search, field):
    result = runner.invoke(app, ["study", str(write(tmp_path, config(tmp_path, texts, "bad", search=search)))])
    assert result.exit_code == 2
    assert field in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()


def test_a_space_without_a_search_block_or_with_several_seeds_is_refused(tmp_path, texts):
    values = config(tmp_path, texts, "bad")
    del values["search"]
    with pytest.raises(ConfigError, match="needs the study's `search:` block"):
        plan(load_study(write(tmp_path, values)))
    with pytest.raises(ConfigError, match="one seed"):
        plan(load_study(write(tmp_path, config(tmp_path, texts, "bad", seeds=[1, 2]))))


def test_dry_run_names_the_search(tmp_path, texts):
    result = runner.invoke(app, ["study", str(write(tmp_path, config(tmp_path, texts, "dry"))), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "then a search (tpe, median pruning) of full, each to the same budget of 3 trials" in \
           " ".join(result.output.split())
