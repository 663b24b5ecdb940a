"""A study: methods x seeds on one dataset and model, resumable, ending in one results table.

The data is prepared and tokenised once and shared by every run. Each finished run leaves a
`metrics.json`; a re-run of the same study skips those runs and redoes any unfinished one.
`results.csv` and the SEND-IT notebook's per-method CSVs are rewritten atomically after each run.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from sendit.config import MethodConfig, RunConfig, StudyConfig, save_yaml
from sendit.io import atomic_write_csv

log = logging.getLogger(__name__)

# results.csv: one row per run, these columns first (DESIGN.md), then everything else a run reports.
RESULT_COLUMNS = ["run_id", "method", "lr", "batch_size", "epochs", "seed", "best_val_f1", "val_accuracy",
                  "test_accuracy", "test_f1_macro", "runtime_sec", "peak_memory_mb", "trainable_params",
                  "f1_per_m_params", "inference_time_sec", "adapter_mb"]
# The SEND-IT visualisation notebook reads these columns of <method>_results.csv.
NOTEBOOK_COLUMNS = ["lr", "batch_size", "best_val_f1", "val_accuracy", "runtime_sec", "memory_delta_mb", "seed"]


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    config: RunConfig


def run_id(method: MethodConfig, lr: float | None, cfg: StudyConfig, seed: int) -> str:
    label = method.label or method.name
    lr_part = f"-lr{lr:g}" if lr is not None else ""
    return f"{label}{lr_part}-bs{cfg.train.batch_size}-ep{cfg.train.epochs:g}-seed{seed}"


def plan(cfg: StudyConfig) -> list[PlannedRun]:
    """Expand the study into its runs, in execution order (cheapest methods first)."""
    from sendit.methods import get_method

    runs = []
    for method_cfg in cfg.methods:
        method = get_method(method_cfg)  # validates the name and options before anything runs
        for seed in cfg.seeds:
            run_cfg = RunConfig(data=cfg.data, model=cfg.model, method=method_cfg,
                                train=replace(cfg.train, seed=seed))
            runs.append(PlannedRun(run_id(method_cfg, method.lr, cfg, seed), run_cfg))
    ids = [r.run_id for r in runs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"study '{cfg.name}': runs {duplicates} appear twice; give variants a `label`")
    return runs


def is_done(run_dir: Path) -> bool:
    from sendit.run import METRICS_FILE

    return (run_dir / METRICS_FILE).is_file()


def run_study(cfg: StudyConfig, console=None) -> pd.DataFrame:
    """Run every planned run not yet done; return the results table."""
    from rich.console import Console

    from sendit.data import prepare
    from sendit.models import load_tokenizer
    from sendit.run import encode_splits, execute

    console = console or Console()
    directory = cfg.directory
    directory.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, directory / "config.yaml")
    runs = plan(cfg)
    todo = [r for r in runs if not is_done(directory / "runs" / r.run_id)]
    console.print(f"study [bold]{cfg.name}[/]: {len(runs)} runs, {len(runs) - len(todo)} already done -> {directory}")
    if todo:
        splits = prepare(cfg.data)
        console.print(_describe_data(splits))
        tokenizer = load_tokenizer(cfg.model.name)
        encoded = encode_splits(tokenizer, splits, cfg.model.max_length)  # once, shared by every run
        for number, planned in enumerate(todo, 1):
            with _run_progress(console, f"[{number}/{len(todo)}] {planned.run_id}",
                               _examples_to_train(planned.config, len(splits.train))) as advance:
                row = execute(planned.config, directory / "runs" / planned.run_id, splits, encoded, advance)
            console.print(f"  {planned.run_id}: test acc {row['test_accuracy']:.4f}, "
                          f"F1 {row['test_f1_macro']:.4f}, {row['runtime_sec']:.0f} s")
            write_results(directory)
    return write_results(directory)


def _describe_data(splits) -> str:
    stats = splits.stats
    return (f"data: train {len(splits.train):,} / val {len(splits.val):,} / test {len(splits.test):,}, "
            f"labels {splits.label_names}; " + ", ".join(f"{k} {v:,}" for k, v in stats.items()
                                                         if k.startswith(("dropped", "rows")) and isinstance(v, int)))


def _examples_to_train(cfg: RunConfig, n_train: int) -> int:
    from sendit.methods import get_method

    total = sum(phase.epochs for phase in get_method(cfg.method).phases(cfg.train)) * n_train
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps * cfg.train.batch_size * len(get_method(cfg.method).phases(cfg.train)))
    return int(total)


class _run_progress:
    """A rich progress bar for one run, advanced by examples trained."""

    def __init__(self, console, description: str, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("ex"), TimeElapsedColumn(), console=console, transient=True)
        self.task = self.progress.add_task(description, total=max(total, 1))

    def __enter__(self):
        self.progress.start()
        return lambda n: self.progress.advance(self.task, n)

    def __exit__(self, *exc):
        self.progress.stop()


def collect(directory: Path) -> pd.DataFrame:
    """All finished runs of a study as one table, in RESULT_COLUMNS order."""
    rows = []
    for metrics in sorted((directory / "runs").glob("*/metrics.json")):
        rows.append({"run_id": metrics.parent.name, **json.loads(metrics.read_text())["row"]})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    rest = [c for c in frame.columns if c not in RESULT_COLUMNS]
    return frame[[c for c in RESULT_COLUMNS if c in frame.columns] + rest]


def write_results(directory: Path) -> pd.DataFrame:
    """Rewrite results.csv and the per-method notebook files from the finished runs."""
    results = collect(directory)
    if results.empty:
        return results
    atomic_write_csv(directory / "results.csv", results)
    for method, group in results.groupby("method", sort=False):
        ranked = group.sort_values("best_val_f1", ascending=False, kind="stable")
        per_method = ranked[NOTEBOOK_COLUMNS + [c for c in ranked.columns if c not in NOTEBOOK_COLUMNS]]
        atomic_write_csv(directory / f"{method}_results.csv", per_method)
        best = directory / "runs" / ranked.iloc[0]["run_id"]  # chosen on validation only
        epoch_log = pd.read_csv(best / "epoch_log.csv")
        atomic_write_csv(directory / f"{method}_epoch_logs.csv",
                         epoch_log[["epoch", "val_accuracy", "val_f1", "train_loss", "val_loss", "phase", "step"]])
        best_row = ranked.iloc[0]
        summary = pd.DataFrame([{"accuracy": best_row["test_accuracy"], "f1_macro": best_row["test_f1_macro"],
                                 "f1_weighted": best_row["test_f1_weighted"],
                                 "recall_macro": best_row["test_recall_macro"],
                                 "inference_time_sec": best_row["inference_time_sec"],
                                 "inference_examples_per_s": best_row["inference_examples_per_s"],
                                 "run_id": best_row["run_id"]}])
        atomic_write_csv(directory / f"{method}_inference_metrics_summary.csv", summary)
        atomic_write_csv(directory / f"{method}_inference_predictions.csv", pd.read_csv(best / "predictions.csv"))
    return results


def best_per_method(results: pd.DataFrame) -> pd.DataFrame:
    """Each method's run with the highest validation macro-F1 (test metrics never consulted)."""
    order = results.sort_values("best_val_f1", ascending=False, kind="stable")
    return order.drop_duplicates("method").set_index("method").loc[list(dict.fromkeys(results["method"]))]
