"""A study: methods x grid x seeds x training-set sizes on one dataset and model, resumable, ending
in one results table and the statistics that say how far to trust the comparison.

The order of work: run the grid; choose each method's best configuration (per size) on validation
macro-F1 only; re-run it on the `reseed_best` seeds; then summarise over seeds, with bootstrap
intervals and McNemar verdicts (`statistics.json`, `summary.csv`, `pairwise.csv`).

The data is prepared and tokenised once and shared by every run; a training-set size is a
stratified subset of it. Each finished run leaves a `metrics.json`, written last; a re-run of the
same study skips those runs and deletes and redoes any run directory without one. `results.csv`
and the SEND-IT notebook's per-method CSVs are rewritten atomically after each run.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sendit.config import (ConfigError, MethodConfig, ModelConfig, RunConfig, StudyConfig, StudyMethodConfig,
                           TrainConfig, build, save_yaml, to_dict)
from sendit.io import atomic_write_csv, atomic_write_text

if TYPE_CHECKING:
    from sendit.data import Splits

# results.csv: one row per run, these columns first (DESIGN.md), then everything else a run reports.
RESULT_COLUMNS = ["run_id", "method", "lr", "batch_size", "epochs", "seed", "best_val_f1", "val_accuracy",
                  "test_accuracy", "test_f1_macro", "runtime_sec", "peak_memory_mb", "trainable_params",
                  "f1_per_m_params", "inference_time_sec", "adapter_mb", "config_id", "train_size"]
# The SEND-IT visualisation notebook reads these columns of <method>_results.csv.
NOTEBOOK_COLUMNS = ["lr", "batch_size", "best_val_f1", "val_accuracy", "runtime_sec", "memory_delta_mb", "seed"]
SEED_PART = re.compile(r"-seed-?\d+(?=-|$)")  # the seed's part of a run id
N_BOOT = 2000
ALPHA = 0.05


# -- planning -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedRun:
    config_id: str  # every value the study varies except the seed, e.g. lora-n5000-lr0.0005-bs16-ep3-r16
    config: RunConfig
    size: int | None = None  # training examples; None: the whole train split

    @property
    def run_id(self) -> str:
        return f"{self.config_id}-seed{self.config.train.seed}"

    def with_seed(self, seed: int) -> "PlannedRun":
        return replace(self, config=replace(self.config, train=replace(self.config.train, seed=seed)))


def config_id(run_id: str) -> str:
    """The configuration of a run: its id without the seed, shared by the runs that differ only in seed."""
    return SEED_PART.sub("", run_id)


def plan(cfg: StudyConfig) -> list[PlannedRun]:
    """The grid runs of the study in execution order: methods (cheapest first, as listed) x sizes x grid x seeds.

    The re-runs of the best configurations (`reseed_plan`) can only be planned once the grid is done.
    """
    runs = [configuration.with_seed(seed) for configuration in configurations(cfg) for seed in cfg.seeds]
    ids = [r.run_id for r in runs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"study '{cfg.name}': runs {duplicates} appear twice; give variants a `label`")
    return runs


def configurations(cfg: StudyConfig) -> list[PlannedRun]:
    """One planned run (on the study's train seed) per method x size x grid point."""
    from sendit.methods import get_method

    planned = []
    for index, study_method in enumerate(cfg.methods):
        method = MethodConfig(**{f.name: getattr(study_method, f.name) for f in dataclasses.fields(MethodConfig)})
        get_method(method)  # validates the name and options before anything runs
        where = f"methods[{index}] ({method.label or method.name}).grid"
        points = [(point, *apply_grid_point(method, cfg.train, cfg.model, point, where))
                  for point in grid_points(study_method, where)]
        for size in cfg.sizes or [None]:
            for point, method_cfg, train_cfg, model_cfg in points:
                name = name_configuration(method_cfg, get_method(method_cfg).lr, train_cfg, model_cfg, size, point)
                planned.append(PlannedRun(name, RunConfig(data=cfg.data, model=model_cfg, method=method_cfg,
                                                          train=train_cfg), size))
    return planned


def grid_points(method: StudyMethodConfig, where: str) -> list[dict]:
    """Every combination of the grid's values ([{}] without a grid), in the order the config lists them."""
    values = {key: value if isinstance(value, list) else [value] for key, value in method.grid.items()}
    empty = [key for key, value in values.items() if not value]
    if empty:
        raise ConfigError(f"{where}.{empty[0]}: an empty list of values")
    return [dict(zip(values, combination)) for combination in itertools.product(*values.values())]


# Model fields a grid may vary: those that leave tokenisation alone (a study tokenises once).
GRID_MODEL_FIELDS = {"attention", "attention_dropout"}


def apply_grid_point(method: MethodConfig, train: TrainConfig, model: ModelConfig, point: dict,
                     where: str) -> tuple[MethodConfig, TrainConfig, ModelConfig]:
    """The method, train and model configs of one grid point; a key that is neither lr, a train
    field, an option of the method nor one of GRID_MODEL_FIELDS is an error naming it."""
    from sendit.methods import METHODS

    options = {f.name for f in dataclasses.fields(METHODS[method.name].Options)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"seed"}  # seeds come from `seeds`
    unknown = sorted(set(point) - options - train_fields - GRID_MODEL_FIELDS - {"lr"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; use lr, a train field "
                          f"({', '.join(sorted(train_fields))}), a model field ({', '.join(sorted(GRID_MODEL_FIELDS))}) "
                          f"or an option of {method.name} ({', '.join(sorted(options)) or 'it has none'})"
                          + ("; seeds are the study's `seeds`" if unknown[0] == "seed" else ""))
    method_cfg = build(MethodConfig, {**to_dict(method), "lr": point.get("lr", method.lr),
                                      "options": {**method.options, **{k: point[k] for k in options & set(point)}}},
                       where)
    train_cfg = build(TrainConfig, {**to_dict(train), **{k: point[k] for k in train_fields & set(point)}}, where)
    model_cfg = build(ModelConfig, {**to_dict(model), **{k: point[k] for k in GRID_MODEL_FIELDS & set(point)}}, where)
    return method_cfg, train_cfg, model_cfg


def name_configuration(method: MethodConfig, lr: float | None, train: TrainConfig, model: ModelConfig,
                       size: int | None, point: dict) -> str:
    """A configuration id encoding every value the study varies: stable across re-runs, readable."""
    parts = [method.label or method.name]
    if size is not None:
        parts.append(f"n{size}")
    if lr is not None:
        parts.append(f"lr{lr:g}")
    parts += [f"bs{train.batch_size}", f"ep{train.epochs:g}"]
    current = {**to_dict(train), **to_dict(model), **method.options}
    parts += [f"{key}{_slug(current[key])}" for key in point if key not in ("lr", "batch_size", "epochs")]
    return "-".join(parts)


def _slug(value) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(_slug(v) for v in value)
    text = f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9.+_]", "_", text)


def reseed_plan(cfg: StudyConfig, grid: list[PlannedRun], results: pd.DataFrame) -> list[PlannedRun]:
    """Each method's best grid configuration (per size) on the `reseed_best` seeds it has not run on.

    `results` are the grid's runs only: a re-run from an earlier invocation must not sway the choice.
    """
    chosen = set(select(results).get("config_id", []))
    in_grid = {r.run_id for r in grid}
    best = {r.config_id: r for r in grid if r.config_id in chosen}
    return [run for configuration in best.values() for run in map(configuration.with_seed, cfg.reseed_best)
            if run.run_id not in in_grid]


# -- selection: validation only -------------------------------------------------------------------

def select(results: pd.DataFrame) -> pd.DataFrame:
    """Per method and training-set size, the best configuration's best run; test columns are never read.

    Configurations are ranked by mean best_val_f1 over the seeds they all ran (the grid seeds, so the
    extra seeds of a re-run best do not tilt the ranking); within the winner, the run with the best
    validation F1 is the one the notebook files describe and McNemar compares. Ties: first listed.
    """
    if results.empty:
        return results
    if "config_id" not in results:  # a bare table, e.g. `sendit train`'s row: each run its own configuration
        results = results.assign(config_id=results.index.astype(str), train_size=results.get("train_size"))
    chosen = []
    for _, group in results.groupby(["method", "train_size"], sort=False, dropna=False):
        seeds = group.groupby("config_id", sort=False)["seed"].apply(set)
        shared = set.intersection(*seeds) or set(group["seed"])
        score = group[group["seed"].isin(shared)].groupby("config_id", sort=False)["best_val_f1"].mean()
        best = group[group["config_id"] == score.idxmax()]
        chosen.append(best.loc[best["best_val_f1"].idxmax()])
    return pd.DataFrame(chosen)


def best_per_method(results: pd.DataFrame) -> pd.DataFrame:
    """Each method's selected run on its largest training set, indexed by method in the table's order."""
    chosen = select(results).sort_values("train_size", kind="stable", na_position="first")
    best = chosen.drop_duplicates("method", keep="last").set_index("method")
    return best.loc[list(dict.fromkeys(results["method"]))]


# -- data shared by every run ---------------------------------------------------------------------

@dataclass
class StudyData:
    """The splits and their token ids, built once per study and shared by every run and worker."""

    splits: Splits
    encoded: dict  # split name -> Encoded
    subsets: dict[int, np.ndarray]  # training-set size -> rows of the train split

    @classmethod
    def build(cls, cfg: StudyConfig) -> "StudyData":
        from sendit.data import prepare
        from sendit.models import load_tokenizer
        from sendit.run import encode_splits

        splits = prepare(cfg.data)
        encoded = encode_splits(load_tokenizer(cfg.model.name), splits, cfg.data, cfg.model.max_length)
        return cls(splits, encoded, {size: subset_rows(splits.train, size, cfg.data.seed) for size in cfg.sizes or []})

    def for_size(self, size: int | None):
        """(splits, encoded) of a run on `size` training examples: val and test are always the full splits."""
        if size is None:
            return self.splits, self.encoded
        from sendit.data.prepare import label_counts

        rows = self.subsets[size]
        train = self.splits.train.iloc[rows].reset_index(drop=True)
        stats = self.splits.stats
        stats = {**stats, "train_pool": len(self.splits.train),
                 "split_sizes": {**stats["split_sizes"], "train": len(train)},
                 "label_counts": {**stats["label_counts"], "train": label_counts(train, self.splits.label_names)}}
        return replace(self.splits, train=train, stats=stats), {**self.encoded,
                                                                 "train": self.encoded["train"].subset(rows)}

    def describe(self) -> str:
        splits = self.splits
        dropped = ", ".join(f"{k} {v:,}" for k, v in splits.stats.items()
                            if k.startswith(("dropped", "rows")) and isinstance(v, int))
        sizes = f"; training-set sizes {', '.join(f'{s:,}' for s in self.subsets)}" if self.subsets else ""
        return (f"data: train {len(splits.train):,} / val {len(splits.val):,} / test {len(splits.test):,}, "
                f"labels {splits.label_names}; {dropped}{sizes}")


def subset_rows(train: pd.DataFrame, size: int, seed: int) -> np.ndarray:
    """Rows of a stratified subset of the train split (the same seed: the same subset for every run)."""
    from sendit.data.split import stratified_sample

    if size > len(train):
        raise ConfigError(f"sizes: {size:,} training examples asked, but the train split has {len(train):,}")
    return np.sort(stratified_sample(train.assign(row=np.arange(len(train))), size, seed)["row"].to_numpy())


# -- running --------------------------------------------------------------------------------------

def is_done(run_dir: Path) -> bool:
    from sendit.artifacts import METRICS_FILE

    return (run_dir / METRICS_FILE).is_file()


def run_study(cfg: StudyConfig, console=None, workers: int = 1, ray_address: str | None = None) -> pd.DataFrame:
    """Run every planned run not yet done (grid, then the best configurations' re-runs); return the results."""
    from rich.console import Console

    from sendit.parallel import import_ray

    if ray_address:
        import_ray()  # fail before any work if it is missing
    grid = plan(cfg)
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
    if cfg.reseed_best:
        reseed = reseed_plan(cfg, grid, write_results(directory, [r.run_id for r in grid]))
        runs = grid + reseed
        stage(f"best configurations on seeds {cfg.reseed_best}", reseed, listed=runs)
    results = write_results(directory, [r.run_id for r in runs])
    if not results.empty:
        from sendit.report import write_report

        write_statistics(directory, results)
        console.print(f"report: {write_report(directory)}")
    return results


def _run_stage(stage: str, runs: list[PlannedRun], listed: list[PlannedRun], directory: Path, data, console,
               workers: int, ray_address: str | None) -> None:
    """Run what is not done of `runs`, rewriting results.csv (over the `listed` runs) after each."""
    from sendit.parallel import execute_runs

    todo = [r for r in runs if not is_done(directory / "runs" / r.run_id)]
    console.print(f"{stage}: {len(runs)} runs, {len(runs) - len(todo)} already done")
    for planned in todo:
        if (directory / "runs" / planned.run_id).exists():  # interrupted: its files cannot be trusted
            console.print(f"  {planned.run_id}: unfinished, starting it again")
            shutil.rmtree(directory / "runs" / planned.run_id)
    if not todo:
        return
    for planned, row in execute_runs(todo, directory / "runs", data(), console, workers, ray_address):
        console.print(f"  {planned.run_id}: test acc {row['test_accuracy']:.4f}, "
                      f"F1 {row['test_f1_macro']:.4f}, {row['runtime_sec']:.0f} s")
        write_results(directory, [r.run_id for r in listed])


# -- results --------------------------------------------------------------------------------------

def collect(directory: Path, run_ids: list[str] | None = None) -> pd.DataFrame:
    """The finished runs (all, or those of `run_ids` in that order) as one table, RESULT_COLUMNS first."""
    if run_ids is None:
        run_ids = sorted(path.parent.name for path in (directory / "runs").glob("*/metrics.json"))
    rows = []
    for name in run_ids:
        path = directory / "runs" / name / "metrics.json"
        if path.is_file():
            metrics = json.loads(path.read_text())
            train_size = metrics.get("data_stats", {}).get("split_sizes", {}).get("train")
            rows.append({"run_id": name, "config_id": config_id(name), "train_size": train_size, **metrics["row"]})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
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
        others = group[group["run_id"] != best["run_id"]].sort_values("best_val_f1", ascending=False, kind="stable")
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
    """statistics.json, summary.csv (per method and size) and pairwise.csv (McNemar per method pair)."""
    from sendit.stats import bootstrap_ci, mean_std

    configurations = []
    for config, runs in results.groupby("config_id", sort=False):
        entry = {"config_id": config, "method": runs["method"].iloc[0], "train_size": runs["train_size"].iloc[0],
                 "seeds": runs["seed"].tolist()}
        for column in ("best_val_f1", "test_accuracy", "test_f1_macro"):
            entry[f"{column}_mean"], entry[f"{column}_std"] = mean_std(runs[column])
        configurations.append(entry)

    summary = []
    chosen = select(results)
    for _, best in chosen.iterrows():
        runs = results[results["config_id"] == best["config_id"]]
        labels, predictions = _predictions(directory, runs["run_id"])
        row = {"method": best["method"], "train_size": best["train_size"], "config_id": best["config_id"],
               "lr": best["lr"], "batch_size": best["batch_size"], "epochs": best["epochs"],
               "seeds": " ".join(map(str, runs["seed"])), "n_seeds": len(runs), "best_run": best["run_id"],
               "best_val_f1_mean": runs["best_val_f1"].mean()}
        for metric, column in (("accuracy", "test_accuracy"), ("f1_macro", "test_f1_macro")):
            row[f"{column}_mean"], row[f"{column}_std"] = mean_std(runs[column])
            ci = bootstrap_ci(labels, predictions, metric, n_boot=N_BOOT, alpha=ALPHA,
                              num_classes=_num_classes(directory, best["run_id"]))
            row[f"{column}_ci_low"], row[f"{column}_ci_high"] = ci.low, ci.high
        summary.append(row)

    pairs = pairwise(directory, chosen)
    statistics = {
        "selection": "per method and training-set size, the configuration with the best mean validation "
                     "macro-F1 over the seeds every configuration ran; test metrics are never consulted",
        "bootstrap": f"{N_BOOT} percentile resamples of the test examples, {1 - ALPHA:.0%} interval of the "
                     f"mean over the chosen configuration's seeds (every seed sees the same resample)",
        "mcnemar": "two-sided; exact binomial below 25 discordant pairs (statistic: the smaller count), else "
                   "chi-square with continuity correction; between the best runs, on the same test set",
        "alpha": ALPHA, "configurations": configurations, "methods": summary, "pairs": pairs.to_dict("records"),
    }
    atomic_write_text(directory / "statistics.json", json.dumps(statistics, indent=1, default=_json_value))
    atomic_write_csv(directory / "summary.csv", pd.DataFrame(summary))
    atomic_write_csv(directory / "pairwise.csv", pairs)
    return statistics


def pairwise(directory: Path, chosen: pd.DataFrame) -> pd.DataFrame:
    """McNemar between the best runs of every pair of methods trained on the same number of examples."""
    from sendit.stats import discordant, mcnemar, verdict

    rows = []
    for size, group in chosen.groupby("train_size", sort=False, dropna=False):
        for (_, a), (_, b) in itertools.combinations(group.iterrows(), 2):
            (labels_a, (pred_a,)), (labels_b, (pred_b,)) = (_predictions(directory, [r["run_id"]]) for r in (a, b))
            if not np.array_equal(labels_a, labels_b):
                raise ValueError(f"{a['run_id']} and {b['run_id']} were tested on different test sets")
            correct_a, correct_b = pred_a == labels_a, pred_b == labels_b
            statistic, p = mcnemar(correct_a, correct_b)
            only_a, only_b = discordant(correct_a, correct_b)
            rows.append({"train_size": size, "method_a": a["method"], "method_b": b["method"],
                         "run_a": a["run_id"], "run_b": b["run_id"], "accuracy_a": correct_a.mean(),
                         "accuracy_b": correct_b.mean(), "only_a_correct": only_a, "only_b_correct": only_b,
                         "statistic": statistic, "p_value": p,
                         "verdict": verdict(a["method"], b["method"], correct_a, correct_b, ALPHA)})
    return pd.DataFrame(rows, columns=["train_size", "method_a", "method_b", "run_a", "run_b", "accuracy_a",
                                       "accuracy_b", "only_a_correct", "only_b_correct", "statistic", "p_value",
                                       "verdict"])


def _predictions(directory: Path, run_ids) -> tuple[np.ndarray, np.ndarray]:
    """(test labels, predictions of each run as rows) from the runs' predictions.csv."""
    frames = [pd.read_csv(directory / "runs" / run_id / "predictions.csv", usecols=["label", "pred"])
              for run_id in run_ids]
    return frames[0]["label"].to_numpy(), np.array([f["pred"].to_numpy() for f in frames])


def _num_classes(directory: Path, run_id: str) -> int:
    return len(json.loads((directory / "runs" / run_id / "metrics.json").read_text())["label_names"])


def _json_value(value):
    if isinstance(value, (np.integer, np.floating)):
        return None if np.isnan(value) else value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
