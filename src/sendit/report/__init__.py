"""The report of a study: `figures/` (PNG + SVG), a self-contained `report.html` and `report.md`.

It is made from the study directory's saved files only (results.csv, summary.csv, pairwise.csv, each
run's metrics.json, epoch_log.csv, predictions.csv), so it can be re-made at any time and never renames them.
`track` replays the same files into TensorBoard or MLflow for users who live in those tools.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from sendit.io import atomic_write_text
from sendit.report.analysis import Report, ReportError, analyse, load_study

__all__ = ["Report", "ReportError", "TRACKERS", "analyse", "load_study", "track", "write", "write_report"]


def write(report: Report) -> Path:
    """Draw the figures and write both pages; return the HTML page's path."""
    from sendit.report.figures import draw_all
    from sendit.report.html import render_html, render_markdown

    directory = report.study.directory
    figures = draw_all(report, directory / "figures")
    atomic_write_text(directory / "report.md", render_markdown(report, figures))
    atomic_write_text(directory / "report.html", render_html(report, figures))
    return directory / "report.html"


def write_report(study_dir: str | Path) -> Path:
    """Re-make the whole report of a study directory; return the path of report.html."""
    return write(analyse(load_study(study_dir)))


CURVES = ["epoch", "train_loss", "val_loss", "val_accuracy", "val_f1"]  # logged per validation, step = its number


def _numbers(row: pd.Series) -> dict[str, float]:
    """The numeric fields of a results row (numpy integers included, flags and text left out)."""
    return {k: float(v) for k, v in row.items()
            if pd.api.types.is_number(v) and not pd.api.types.is_bool(v) and pd.notna(v)}


def _track_tensorboard(report: Report) -> Path:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ReportError("--track tensorboard needs TensorBoard: pip install 'sendit[track]'") from None
    root = report.study.directory / "tensorboard"
    for _, row in report.study.results.iterrows():
        run_dir = root / row["run_id"]
        shutil.rmtree(run_dir, ignore_errors=True)  # replayed from the CSVs: a re-run must not double the curves
        with SummaryWriter(str(run_dir)) as writer:
            log = report.study.run_epoch_log(row["run_id"])
            for step, epoch in enumerate(log.itertuples(), 1):
                for key in CURVES:
                    writer.add_scalar(f"validation/{key}", getattr(epoch, key), step)
            for key, value in _numbers(row).items():
                writer.add_scalar(f"final/{key}", value, max(len(log), 1))
    return root


def _track_mlflow(report: Report) -> str:
    try:
        import mlflow
    except ImportError:
        raise ReportError("--track mlflow needs MLflow: pip install 'sendit[mlflow]'") from None
    directory, name = report.study.directory.resolve(), report.study.name
    if not os.environ.get("MLFLOW_TRACKING_URI"):  # a user's own server wins; else a database beside the study
        mlflow.set_tracking_uri(f"sqlite:///{directory / 'mlflow.db'}")  # MLflow 3 refuses new file stores
        if mlflow.get_experiment_by_name(name) is None:
            mlflow.create_experiment(name, artifact_location=(directory / "mlartifacts").as_uri())
    mlflow.set_experiment(name)
    logged = {run.data.tags.get("sendit.run_id") for run in mlflow.search_runs(experiment_names=[name],
                                                                                output_format="list")}
    params = ["method", "base_method", "config_id", "lr", "batch_size", "epochs", "seed", "train_size"]
    for _, row in report.study.results.iterrows():
        if row["run_id"] in logged:  # replaying twice must not duplicate runs
            continue
        with mlflow.start_run(run_name=row["run_id"], tags={"sendit.run_id": row["run_id"]}):
            mlflow.log_params({k: row[k] for k in params if k in row and pd.notna(row[k])})
            for step, epoch in enumerate(report.study.run_epoch_log(row["run_id"]).itertuples(), 1):
                mlflow.log_metrics({k: float(getattr(epoch, k)) for k in CURVES}, step=step)
            mlflow.log_metrics({f"final_{k}": v for k, v in _numbers(row).items() if k not in params})
    return mlflow.get_tracking_uri()


TRACKERS = {"tensorboard": _track_tensorboard, "mlflow": _track_mlflow}


def track(report: Report, backend: str) -> Path | str:
    """Log every run's curves and final metrics to `backend`; return where they went."""
    if backend not in TRACKERS:
        raise ReportError(f"--track {backend}: choose from {', '.join(TRACKERS)}")
    return TRACKERS[backend](report)
