"""The results of a study, read from its run directories only: `results.csv`, the SEND-IT notebook's
per-method files, the selection of each method's best configuration (validation only) and the
statistics that say how far to trust the comparison (bootstrap intervals, McNemar).

Each finished run leaves a `metrics.json`, written last; `results.csv` and the notebook's
per-method CSVs are rewritten atomically after each run.
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from sendit.config import SELECTION_METRICS, ConfigError, SelectionConfig
from sendit.io import atomic_write_csv, atomic_write_json
from sendit.stats import bootstrap_ci, discordant, mean_std, paired_test, verdict, with_seeds

# results.csv: one row per run, these columns first (DESIGN.md), then everything else a run reports.
RESULT_COLUMNS = ["run_id", "method", "lr", "batch_size", "epochs", "seed", "best_val_f1", "val_accuracy",
                  "test_accuracy", "test_f1_macro", "runtime_sec", "peak_memory_mb", "trainable_params",
                  "f1_per_m_params", "inference_time_sec", "adapter_mb", "config_id", "train_size"]
# The SEND-IT visualisation notebook reads these columns of <method>_results.csv.
NOTEBOOK_COLUMNS = ["lr", "batch_size", "best_val_f1", "val_accuracy", "runtime_sec", "memory_delta_mb", "seed"]
METRICS_FILE = "metrics.json"  # a run's metrics, written last (sendit.artifacts): its presence marks the run done
EXTRA_PREDICTIONS_FILE = "extra_predictions.csv"  # the source's extra evaluation sets, column `subset`
DEPLOY_FILE = "deploy.csv"  # each method's selected run measured as deployed (sendit.deploy_study)
SEED_PART = re.compile(r"-seed-?\d+(?=-|$)")  # the seed's part of a run id
TRIAL_PART = re.compile(r"-trial(\d+)(?=-|$)")  # a search trial's number in its run id
N_BOOT = 2000
ALPHA = 0.05
# 2: pairs tested over the seeds both sides ran; 3: intervals over seeds and test sample. A report rewrites older
# statistics.
STATISTICS_VERSION = 3
INTERVAL_METRICS = ["test_accuracy", "test_f1_macro", "test_recall_macro"]  # with 95% intervals in summary.csv
# Summarised per method and size over the seeds of the selected configuration (summary.csv: mean, std).
METRICS = ["test_accuracy", "test_f1_macro", "test_f1_weighted", "test_recall_macro", "best_val_f1",
           "best_val_score", "runtime_sec", "peak_memory_mb", "trainable_params", "f1_per_m_params",
           "inference_examples_per_s", "adapter_mb"]


def config_id(run_id: str) -> str:
    """The configuration of a run: its id without the seed, shared by the runs that differ only in seed."""
    return SEED_PART.sub("", run_id)


def trial_number(run_id: str) -> int | None:
    """The search trial a run is (or was re-seeded from); None for a grid run."""
    found = TRIAL_PART.search(run_id)
    return int(found.group(1)) if found else None



# -- selection: validation only -------------------------------------------------------------------

DEFAULT_METRIC = SelectionConfig().metric  # what results written before `selection_metric` were selected on


def selection_metric(results: pd.DataFrame) -> str:
    """The one metric the runs kept their checkpoints by: scores on different metrics do not rank together."""
    metrics = set(results["selection_metric"].fillna(DEFAULT_METRIC)) if "selection_metric" in results else set()
    if len(metrics) > 1:
        raise ConfigError(f"runs selected on different metrics ({', '.join(sorted(metrics))}) cannot be ranked "
                          "together: a study changing selection.metric needs another name or output_dir")
    return metrics.pop() if metrics else DEFAULT_METRIC


def selection_scores(results: pd.DataFrame) -> pd.Series:
    """Each run's score on the selection metric at its kept checkpoint. Macro-F1's is best_val_f1 (a run's
    best_val_score, where it has one): results written before that column rank exactly as they did."""
    if selection_metric(results) == "f1_macro":
        return results["best_val_f1"]
    return results["best_val_score"]


def select(results: pd.DataFrame) -> pd.DataFrame:
    """Per method and training-set size, the best configuration's best run; test columns are never read.

    Configurations are ranked by their mean validation score (`selection_scores`: the study's
    selection metric) over the seeds they all ran (the grid seeds, so the extra seeds of a re-run best
    do not tilt the ranking); within the winner, the run with the best validation score is the one the
    notebook files describe and McNemar compares. Ties: first listed.
    A pruned search trial stopped part-way: it is never chosen.
    """
    if "pruned" in results:
        results = results[~results["pruned"].fillna(False).astype(bool)]
    if results.empty:
        return results
    if "config_id" not in results:  # a bare table, e.g. `sendit train`'s row: each run its own configuration
        results = results.assign(config_id=results.index.astype(str), train_size=results.get("train_size"))
    scores = selection_scores(results)
    chosen = []
    for _, group in results.groupby(["method", "train_size"], sort=False, dropna=False):
        seeds = group.groupby("config_id", sort=False)["seed"].apply(set)
        shared = group[group["seed"].isin(set.intersection(*seeds) or set(group["seed"]))]
        score = scores[shared.index].groupby(shared["config_id"], sort=False).mean()
        best = group[group["config_id"] == score.idxmax()]
        chosen.append(best.loc[scores[best.index].idxmax()])
    return pd.DataFrame(chosen)


def best_per_method(results: pd.DataFrame) -> pd.DataFrame:
    """Each method's selected run on the largest training set every method reached (where they share none,
    its own largest), indexed by method in the table's order: a sizes study still running compares its
    methods on the same training data, as pairwise.csv's tests do."""
    chosen = select(results)
    reached = chosen.dropna(subset=["train_size"]).groupby("method", sort=False)["train_size"].apply(set)
    shared = set.intersection(*reached) if 0 < len(reached) == chosen["method"].nunique() else set()
    if shared:
        chosen = chosen[chosen["train_size"] == max(shared)]
    chosen = chosen.sort_values("train_size", kind="stable", na_position="first")
    best = chosen.drop_duplicates("method", keep="last").set_index("method")
    return best.loc[list(dict.fromkeys(results["method"]))]


# -- results --------------------------------------------------------------------------------------

def is_done(run_dir: Path) -> bool:
    return (run_dir / METRICS_FILE).is_file()


def finished_runs(directory: Path) -> list[str]:
    """The ids of the study directory's finished runs (those with a metrics.json), sorted."""
    return sorted(path.parent.name for path in (directory / "runs").glob(f"*/{METRICS_FILE}"))


def split_train_size(metrics: dict) -> int | None:
    """A run's training split as the study drew it (what `sizes` varies), the key its configurations are
    compared by: a run's transfer texts (`transfer: labels | teacher`), which its data_stats count in its train
    split, are its method's addition (counted in train_examples), so distillation's arms compare with each other."""
    stats = metrics.get("data_stats", {})
    size = stats.get("split_sizes", {}).get("train")
    if size is not None and stats.get("transfer", "none") != "none":
        size -= stats.get("transfer_size", 0)
    return size


def collect(directory: Path, run_ids: list[str] | None = None) -> pd.DataFrame:
    """The finished runs (all, or those of `run_ids` in that order) as one table, RESULT_COLUMNS first."""
    if run_ids is None:
        run_ids = finished_runs(directory)
    rows = []
    for name in run_ids:
        path = directory / "runs" / name / METRICS_FILE
        if path.is_file():
            metrics = json.loads(path.read_text())
            rows.append({"run_id": name, "config_id": config_id(name), "train_size": split_train_size(metrics),
                         "trial": trial_number(name), **metrics["row"]})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if frame["trial"].isna().all():  # no search in this study
        frame = frame.drop(columns="trial")
    rest = [c for c in frame.columns if c not in RESULT_COLUMNS]
    return frame[[c for c in RESULT_COLUMNS if c in frame.columns] + rest]


def write_results(directory: Path, run_ids: list[str] | None = None) -> pd.DataFrame:
    """Rewrite results.csv and the per-method notebook files from the finished runs."""
    results = collect(directory, run_ids)
    if results.empty:
        return results
    atomic_write_csv(directory / "results.csv", results)
    for method, best in best_per_method(results).iterrows():
        group = results[results["method"] == method]
        others = group[group["run_id"] != best["run_id"]]
        others = others.loc[selection_scores(others).sort_values(ascending=False, kind="stable").index]
        ranked = pd.concat([group[group["run_id"] == best["run_id"]], others])  # first row: the chosen run
        atomic_write_csv(directory / f"{method}_results.csv",
                         ranked[NOTEBOOK_COLUMNS + [c for c in ranked.columns if c not in NOTEBOOK_COLUMNS]])
        run_dir = directory / "runs" / best["run_id"]
        epoch_log = pd.read_csv(run_dir / "epoch_log.csv")
        atomic_write_csv(directory / f"{method}_epoch_logs.csv",
                         epoch_log[["epoch", "val_accuracy", "val_f1", "train_loss", "val_loss", "phase", "step"]])
        summary = pd.DataFrame([{"accuracy": best["test_accuracy"], "f1_macro": best["test_f1_macro"],
                                 "f1_weighted": best["test_f1_weighted"], "recall_macro": best["test_recall_macro"],
                                 "inference_time_sec": best["inference_time_sec"],
                                 "inference_examples_per_s": best["inference_examples_per_s"],
                                 "run_id": best["run_id"]}])
        atomic_write_csv(directory / f"{method}_inference_metrics_summary.csv", summary)
        atomic_write_csv(directory / f"{method}_inference_predictions.csv", pd.read_csv(run_dir / "predictions.csv"))
    return results


# -- statistics -----------------------------------------------------------------------------------

def write_statistics(directory: Path, results: pd.DataFrame) -> dict:
    """statistics.json, summary.csv (per method and size) and pairwise.csv (McNemar per method pair).

    statistics.json names the runs they cover, so a reader can tell when they are out of date.
    """
    configurations = []
    for config, runs in results.groupby("config_id", sort=False):
        entry = {"config_id": config, "method": runs["method"].iloc[0], "train_size": runs["train_size"].iloc[0],
                 "seeds": runs["seed"].tolist()}
        for column in ("best_val_f1", "test_accuracy", "test_f1_macro"):
            entry[f"{column}_mean"], entry[f"{column}_std"] = mean_std(runs[column])
        entry["best_val_score_mean"], entry["best_val_score_std"] = mean_std(selection_scores(runs))
        configurations.append(entry)

    summary = []
    chosen = select(results)
    for _, best in chosen.iterrows():
        runs = results[results["config_id"] == best["config_id"]]
        labels, predictions = _predictions(directory, runs["run_id"])
        row = {"method": best["method"], "train_size": best["train_size"], "config_id": best["config_id"],
               "lr": best["lr"], "batch_size": best["batch_size"], "epochs": best["epochs"],
               "seeds": " ".join(map(str, runs["seed"])), "n_seeds": len(runs), "best_run": best["run_id"]}
        for metric in [m for m in METRICS if m in runs]:
            measured = runs[metric].dropna()  # e.g. f1_per_m_params: none for a baseline that trains nothing
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std(measured) if len(measured) else (None, None)
        classes = _num_classes(directory, best["run_id"])
        for column in [c for c in INTERVAL_METRICS if c in runs]:  # recall: not in studies from before sendit had it
            ci = bootstrap_ci(labels, predictions, column.removeprefix("test_"), n_boot=N_BOOT, alpha=ALPHA,
                              num_classes=classes)
            row[f"{column}_ci_low"], row[f"{column}_ci_high"] = ci.low, ci.high
            wider = with_seeds(ci, runs[column], ALPHA)
            row[f"{column}_ci_seeds_low"], row[f"{column}_ci_seeds_high"] = wider.low, wider.high
        summary.append(row)

    pairs = pairwise(directory, chosen, results)
    metric = selection_metric(results)
    statistics = {
        "selection": f"per method and training-set size, the configuration with the best mean validation "
                     f"{SELECTION_METRICS[metric]} over the seeds every configuration ran; test metrics are never "
                     "consulted",
        "selection_metric": metric,
        "bootstrap": f"{N_BOOT} percentile resamples of the test examples, {1 - ALPHA:.0%} interval of the "
                     f"mean over the chosen configuration's seeds (every seed sees the same resample)",
        "seeds_interval": "*_ci_seeds_*: the bootstrap interval widened by the seeds' Student-t half-width of "
                          "their mean, added in quadrature to each side, clipped to [0, 1]; one seed: the bootstrap "
                          "interval",
        "mcnemar": "two-sided, between the selected configurations on the same test set and the seeds both ran "
                   "(only_a_correct, only_b_correct: summed over them). One seed: McNemar, exact binomial below 25 "
                   "discordant pairs (statistic: the smaller count), else chi-square with continuity correction. "
                   "Several: the sign-flip test of the seed-averaged accuracy, exact below 25 examples whose "
                   "seed counts differ (statistic: |only_a - only_b|), else (|only_a - only_b| - 1)^2 / sum d_i^2",
        "version": STATISTICS_VERSION, "alpha": ALPHA, "runs": sorted(results["run_id"]),
        "configurations": configurations, "methods": summary, "pairs": pairs.to_dict("records"),
    }
    atomic_write_json(directory / "statistics.json", statistics)
    atomic_write_csv(directory / "summary.csv", pd.DataFrame(summary))
    atomic_write_csv(directory / "pairwise.csv", pairs)
    return statistics


def pairwise(directory: Path, chosen: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """The paired test between every two methods' selected configurations trained on the same number of
    examples, on the seeds both ran (`paired_test`: McNemar with one seed), so its verdict is about the
    seed-averaged accuracies the summary shows. run_a and run_b name each side's selected run."""
    rows = []
    for size, group in chosen.groupby("train_size", sort=False, dropna=False):
        for (_, a), (_, b) in itertools.combinations(group.iterrows(), 2):
            runs_a, runs_b = (results[results["config_id"] == r["config_id"]].set_index("seed") for r in (a, b))
            seeds = [s for s in runs_a.index if s in runs_b.index] or None
            ids_a, ids_b = ([a["run_id"]], [b["run_id"]]) if seeds is None else (
                runs_a.loc[seeds, "run_id"], runs_b.loc[seeds, "run_id"])
            (labels_a, pred_a), (labels_b, pred_b) = _predictions(directory, ids_a), _predictions(directory, ids_b)
            if not np.array_equal(labels_a, labels_b):
                raise ValueError(f"{a['run_id']} and {b['run_id']} were tested on different test sets")
            correct_a, correct_b = pred_a == labels_a, pred_b == labels_b
            statistic, p = paired_test(correct_a, correct_b)
            only_a, only_b = discordant(correct_a, correct_b)  # (seeds, examples): summed over the seeds
            rows.append({"train_size": size, "method_a": a["method"], "method_b": b["method"],
                         "run_a": a["run_id"], "run_b": b["run_id"],
                         "seeds": " ".join(map(str, seeds)) if seeds else f"{a['seed']} vs {b['seed']}",
                         "accuracy_a": correct_a.mean(), "accuracy_b": correct_b.mean(), "only_a_correct": only_a,
                         "only_b_correct": only_b, "statistic": statistic, "p_value": p,
                         "verdict": verdict(a["method"], b["method"], only_a, only_b, p, ALPHA)})
    return pd.DataFrame(rows, columns=["train_size", "method_a", "method_b", "run_a", "run_b", "seeds", "accuracy_a",
                                       "accuracy_b", "only_a_correct", "only_b_correct", "statistic", "p_value",
                                       "verdict"])


def _predictions(directory: Path, run_ids) -> tuple[np.ndarray, np.ndarray]:
    """(test labels, predictions of each run as rows) from the runs' predictions.csv."""
    frames = [pd.read_csv(directory / "runs" / run_id / "predictions.csv", usecols=["label", "pred"])
              for run_id in run_ids]
    return frames[0]["label"].to_numpy(), np.array([f["pred"].to_numpy() for f in frames])


def _num_classes(directory: Path, run_id: str) -> int:
    return len(json.loads((directory / "runs" / run_id / METRICS_FILE).read_text())["label_names"])
