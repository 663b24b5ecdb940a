"""A study: methods x grid x seeds x training-set sizes on one dataset and model, resumable, ending
in one results table and the statistics that say how far to trust the comparison. This module only
orchestrates: `sendit.plan` plans the runs and holds the shared data, `sendit.parallel` executes
them, `sendit.search` runs a hyperparameter search's trials, `sendit.results` writes the results and
statistics, `sendit.report` the report.

The order of work: run the grid; run the search's trials (methods with a `search` space, each to the
same budget); choose each method's best configuration (per size) on validation only, by
`selection.metric` (macro-F1 unless the config says otherwise); re-run it on the `reseed_best` seeds;
then summarise over seeds, with bootstrap intervals and McNemar verdicts (`statistics.json`,
`summary.csv`, `pairwise.csv`); with a `deploy:` block, measure each method's selected run as
deployed (`sendit.deploy_study`, `deploy.csv`). A method with a `distill:` teacher trains on its soft
targets too (`sendit.distill`); such a study also sets its students beside the teacher
(`distill_summary.csv`).

The data is prepared and tokenised once and shared by every run; a training-set size is a
stratified subset of it. Each finished run leaves a `metrics.json`, written last; a re-run of the
same study skips those runs, resumes an unfinished one from its checkpoint (`sendit.checkpoint`) and
deletes and redoes one that has none. `results.csv`
and the SEND-IT notebook's per-method CSVs are rewritten atomically after each run.
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pandas as pd

from sendit.checkpoint import CHECKPOINT_FILE
from sendit.config import ConfigError, StudyConfig, save_yaml
from sendit.plan import PlannedRun, StudyData, plan, reseed_plan
from sendit.pruning import import_optuna
from sendit.results import (collect, finished_runs, is_done, selection_metric, trial_number, write_results,
                            write_statistics)
from sendit.search import run_search


def run_study(cfg: StudyConfig, console=None, workers: int = 1, ray_address: str | None = None) -> pd.DataFrame:
    """Run every planned run not yet done (grid, then the best configurations' re-runs); return the results."""
    from rich.console import Console

    from sendit.distill import compare_with_teachers, resolve_teachers
    from sendit.parallel import import_ray

    if ray_address:
        import_ray()  # fail before any work if it is missing
    if cfg.search:
        import_optuna()  # the same
    cfg = resolve_teachers(cfg)  # before any work too: a missing teacher or one trained on other data
    grid = plan(cfg)
    _check_selection(cfg)
    console = console or Console()
    directory = cfg.directory
    directory.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, directory / "config.yaml")
    console.print(f"study [bold]{cfg.name}[/] -> {directory}")

    @functools.cache
    def data() -> StudyData:  # only when something is left to run
        shared = StudyData.build(cfg)
        console.print(shared.describe())
        return shared

    stage = functools.partial(_run_stage, directory=directory, data=data, console=console, workers=workers,
                              ray_address=ray_address)
    stage("grid", grid, listed=grid)
    runs = grid
    if cfg.search:
        console.print(f"search: {cfg.search.sampler} sampler, {cfg.search.pruner} pruner, per method "
                      f"{cfg.search.describe_budget()}")
        done = [r.run_id for r in grid]
        runs = grid + run_search(cfg, directory, data, console, workers, ray_address,
                                 on_finished=lambda: write_results(directory, done + _trial_runs(directory)))
    if cfg.reseed_best:
        reseed = reseed_plan(cfg, runs, write_results(directory, [r.run_id for r in runs]))
        runs = runs + reseed
        stage(f"best configurations on seeds {cfg.reseed_best}", reseed, listed=runs)
    results = write_results(directory, [r.run_id for r in runs])
    if not results.empty:
        from sendit.report import write_report

        write_statistics(directory, results)
        if any(method.distill for method in cfg.methods):
            compare_with_teachers(directory, cfg)
        if cfg.deploy is not None:
            from sendit.deploy_study import deploy_study

            deploy_study(directory, cfg.deploy, console)
        if cfg.report:
            console.print(f"report: {write_report(directory)}")
    return results


def _check_selection(cfg: StudyConfig) -> None:
    """Refuse, before any work, a study directory whose finished runs kept their checkpoints by another
    metric: they would be skipped as done and ranked with scores on a different scale."""
    finished = collect(cfg.directory)
    if not finished.empty and selection_metric(finished) != cfg.selection.metric:
        raise ConfigError(f"{cfg.directory}: its finished runs were selected on {selection_metric(finished)}, not "
                          f"selection.metric={cfg.selection.metric}: give this study another name or output_dir")


def _run_stage(stage: str, runs: list[PlannedRun], listed: list[PlannedRun], directory: Path, data, console,
               workers: int, ray_address: str | None) -> None:
    """Run what is not done of `runs`, rewriting results.csv (over the `listed` runs) after each."""
    from sendit.parallel import execute_runs

    todo = [r for r in runs if not is_done(directory / "runs" / r.run_id)]
    console.print(f"{stage}: {len(runs)} runs, {len(runs) - len(todo)} already done")
    for planned in todo:
        run_dir = directory / "runs" / planned.run_id
        if (run_dir / CHECKPOINT_FILE).is_file():  # the run checks that it is its own, and rewrites every file
            console.print(f"  {planned.run_id}: unfinished, resuming from its checkpoint")
        elif run_dir.exists():  # interrupted before its first checkpoint: its files cannot be trusted
            console.print(f"  {planned.run_id}: unfinished, starting it again")
            shutil.rmtree(run_dir)
    if not todo:
        return
    for planned, row in execute_runs(todo, directory / "runs", data(), console, workers, ray_address):
        console.print(f"  {planned.run_id}: test acc {row['test_accuracy']:.4f}, "
                      f"F1 {row['test_f1_macro']:.4f}, {row['runtime_sec']:.0f} s")
        write_results(directory, [r.run_id for r in listed])


def _trial_runs(directory: Path) -> list[str]:
    """The finished trial runs in the study directory, in trial order per method."""
    return [run_id for run_id in finished_runs(directory) if trial_number(run_id) is not None]
