"""The numbers a report shows: a study read back from disk, per-method summaries over seeds, the
Pareto sets, McNemar verdicts, the recommendation they add up to (with the variant to deploy, where
the study was measured deployed: deploy.csv), and the error analysis.

Everything is read from the study directory's files (the statistics from summary.csv and
pairwise.csv), so a report can be re-made at any time without the models.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd
import yaml

from sendit.config import ConfigError
from sendit.methods.base import display_name, is_baseline
from sendit.stats import format_p
from sendit.results import (ALPHA, DEPLOY_FILE, EXTRA_PREDICTIONS_FILE, INTERVAL_METRICS, METRICS, METRICS_FILE,
                            STATISTICS_VERSION, best_per_method, collect, selection_metric, selection_scores,
                            write_statistics)

# Negation cues in cleaned text: apostrophes may be gone ("dont", "cant") or turned into a space.
NEGATION = re.compile(r"\b(?:not|no|never|none|nobody|nothing|neither|nor|nowhere|cannot|\w+n['’]t"
                      r"|(?:do|does|did|is|are|was|were|has|have|had|would|should|could|must|need|might"
                      r"|ca|wo|ai)n ?t)\b")


class ReportError(ValueError):
    """A directory that is not a finished study (the message names the missing file)."""


def pretty(method: str) -> str:
    return display_name(method)


@dataclass
class Study:
    """A study directory read back: its results table and, per method, its selected run's files."""

    directory: Path
    name: str
    results: pd.DataFrame  # results.csv, one row per run
    methods: list[str]  # in the study config's order (cheapest first), not alphabetical
    label_names: list[str]
    info: dict  # dataset, model, data_stats
    selection: str  # the metric runs kept their checkpoints by and the study selected on (results.csv)

    @cached_property
    def best(self) -> pd.DataFrame:
        """Each method's selected run (validation only, the largest training set all reached): the notebook
        files' run."""
        return best_per_method(self.results).loc[self.methods]

    def run_dir(self, method: str) -> Path:
        return self.directory / "runs" / self.best.loc[method, "run_id"]

    def run_file(self, method: str, name: str) -> pd.DataFrame:
        path = self.run_dir(method) / name
        if not path.is_file():
            raise ReportError(f"{path}: missing (the run is unfinished or was moved)")
        return pd.read_csv(path, keep_default_na=False, na_values=[""])  # a tweet "null" or "na" is text

    @cached_property
    def predictions(self) -> dict[str, pd.DataFrame]:
        return {m: self.run_file(m, "predictions.csv") for m in self.methods}

    def epoch_log(self, method: str) -> pd.DataFrame:
        return self.run_epoch_log(self.best.loc[method, "run_id"])

    def run_epoch_log(self, run_id: str) -> pd.DataFrame:
        """Any run's epoch log, not only a method's selected run's (a sizes study's selection at each size, the
        trackers' replay of every run)."""
        path = self.directory / "runs" / run_id / "epoch_log.csv"
        if not path.is_file():
            raise ReportError(f"{path}: missing (the run is unfinished or was moved)")
        return pd.read_csv(path)

    def is_baseline(self, method: str) -> bool:
        return is_baseline(method) or is_baseline(self.best.loc[method].get("base_method"))


def load_study(directory: str | Path) -> Study:
    directory = Path(directory)
    if not (directory / "results.csv").is_file():
        raise ReportError(f"{directory}: not a study directory (no results.csv); run `sendit study` first")
    results = pd.read_csv(directory / "results.csv")
    if results.empty:
        raise ReportError(f"{directory / 'results.csv'}: no finished runs yet")
    if "config_id" not in results:  # written before runs had configuration ids: rebuild from the runs
        results = collect(directory, results["run_id"].tolist())
    try:
        selection = selection_metric(results)
    except ConfigError as err:
        raise ReportError(f"{directory / 'results.csv'}: {err}") from None
    config = yaml.safe_load((directory / "config.yaml").read_text()) if (directory / "config.yaml").is_file() else {}
    config = config or {}
    present = list(dict.fromkeys(results["method"]))
    configured = [m.get("label") or m.get("name") for m in config.get("methods", [])]
    methods = [m for m in configured if m in present] + [m for m in present if m not in configured]
    largest = results.loc[results["train_size"].idxmax(), "run_id"]  # its data_stats describe the full splits
    metrics_path = directory / "runs" / largest / METRICS_FILE
    if not metrics_path.is_file():
        raise ReportError(f"{metrics_path}: missing; a report needs its study's run directories (their metrics.json "
                          "and predictions.csv; benchmarks/commit_study.py copies them without the weights)")
    metrics = json.loads(metrics_path.read_text())
    info = {"dataset": config.get("data", {}).get("dataset"), "model": config.get("model", {}).get("name"),
            "data_stats": metrics.get("data_stats", {}), "provenance": metrics.get("provenance")}
    return Study(directory, config.get("name") or directory.name, results, methods,
                 list(metrics["label_names"]), info, selection)


def size_column(results: pd.DataFrame) -> str | None:
    """"train_size" if the study varies the number of training examples."""
    return "train_size" if "train_size" in results and results["train_size"].nunique() > 1 else None


def config_keys(results: pd.DataFrame) -> list[str]:
    """The columns a reader tells one configuration from another by (the full key is config_id)."""
    return [c for c in ("lr", "batch_size", "epochs", size_column(results)) if c and c in results]


def statistics(study: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    """summary.csv and pairwise.csv as the study wrote them (sendit.results.write_statistics); written
    first where they are missing, cover other runs than results.csv (an interrupted study) or were
    written by an older sendit (another STATISTICS_VERSION)."""
    directory = study.directory
    path = directory / "statistics.json"
    files = [directory / "summary.csv", directory / "pairwise.csv"]
    written = json.loads(path.read_text()) if path.is_file() else {}
    if (written.get("runs") != sorted(study.results["run_id"]) or written.get("version") != STATISTICS_VERSION
            or not all(f.is_file() for f in files)):
        in_order = study.results.sort_values("method", key=lambda m: m.map(study.methods.index), kind="stable")
        try:
            write_statistics(directory, in_order)  # the config's method order: pairs read "A vs B" as before
        except ValueError as err:  # runs tested on different test sets
            raise ReportError(str(err)) from None
    summary, pairs = (pd.read_csv(f) for f in files)
    return summary, pairs.astype({"seeds": str})  # "42" alone would read as a number


def summarise(study: Study, summary: pd.DataFrame) -> pd.DataFrame:
    """Per method, summary.csv's row of its selected run: `n` seeds, the configuration, mean (as
    `<metric>`) and std (`<metric>_std`, NaN for one seed) of every metric, and the test metrics' 95%
    intervals (`<metric>_ci_low`, `_high`) over seeds and test sample (the test sample's alone for one seed)."""
    rows = summary.set_index("best_run").loc[study.best["run_id"]].set_index(study.best.index)
    frame = pd.DataFrame({"n": rows["n_seeds"], **{k: study.best[k] for k in config_keys(study.results)}})
    for metric in [m for m in METRICS if f"{m}_mean" in rows]:
        frame[metric], frame[f"{metric}_std"] = rows[f"{metric}_mean"], rows[f"{metric}_std"]
    for metric in [m for m in INTERVAL_METRICS if f"{m}_ci_seeds_low" in rows]:
        for end in ("low", "high"):
            frame[f"{metric}_ci_{end}"] = rows[f"{metric}_ci_seeds_{end}"]
    return frame


def pareto_set(summary: pd.DataFrame, cost: str, quality: str = "test_accuracy") -> list[str]:
    """Methods no other method beats on both counts (higher quality, lower cost), cheapest first."""
    points = summary[[quality, cost]].dropna()
    front = [m for m, (q, c) in points.iterrows()
             if not ((points[quality] >= q) & (points[cost] <= c)
                     & ((points[quality] > q) | (points[cost] < c))).any()]
    return sorted(front, key=lambda m: points.loc[m, cost])


def significance(study: Study, pairs: pd.DataFrame) -> pd.DataFrame:
    """pairwise.csv's tests between the methods' selected configurations (McNemar with one seed, over
    the seeds both ran otherwise), flagged at ALPHA."""
    chosen = set(study.best["run_id"])
    pairs = pairs[pairs["run_a"].isin(chosen) & pairs["run_b"].isin(chosen)].reset_index(drop=True)
    return pairs.assign(significant=pairs["p_value"] < ALPHA)


def _p_text(pair: pd.Series) -> str:
    """A pair's p-value with its test: "McNemar p = 0.02" (one seed) or "p = 0.02 over 3 seeds"."""
    seeds = pair.seeds.split()
    single = len(seeds) == 1 or "vs" in seeds
    return f"McNemar {format_p(pair.p_value)}" if single else f"{format_p(pair.p_value)} over {len(seeds)} seeds"


def _pair(pairs: pd.DataFrame, a: str, b: str) -> pd.Series:
    match = pairs[((pairs.method_a == a) & (pairs.method_b == b)) | ((pairs.method_a == b) & (pairs.method_b == a))]
    return match.iloc[0]


@dataclass
class Recommendation:
    method: str | None  # None: nothing trained to recommend
    headline: str
    details: list[str]
    pareto_time: list[str]
    pareto_params: list[str]
    deployed: str | None = None  # the variant to deploy it as, e.g. "LoRA, ONNX int8" (deploy.csv's `name`)


def _points(x: float) -> str:
    return f"{100 * x:.1f}"


def _share(part: float, whole: float) -> str:
    """`part` as a share of `whole`, precise where it matters: 40%, 1.5%, 0.034%."""
    if not whole:
        return "n/a"
    ratio = part / whole
    return f"{ratio:.0%}" if ratio >= 0.1 else f"{100 * ratio:.2g}%"


def recommend(summary: pd.DataFrame, pairs: pd.DataFrame, baselines: set[str]) -> Recommendation:
    """The cheapest method on a Pareto frontier that is not significantly less accurate than the best.

    "Cheapest" is training time first, then trainable parameters; "significantly" is the paired test at
    ALPHA between the methods' selected configurations (pairwise.csv).
    """
    trained = summary[~summary.index.isin(baselines)]
    if trained.empty:
        return Recommendation(None, "No trained method in this study yet: nothing to recommend.", [], [], [])
    front_time = pareto_set(trained, "runtime_sec")
    front_params = pareto_set(trained, "trainable_params")
    top = trained.sort_values(["test_accuracy", "runtime_sec"], ascending=[False, True]).index[0]
    pool = [m for m in trained.index if (m == top or not _pair(pairs, m, top)["significant"])
            and (m in front_time or m in front_params)]
    pick = min(pool, key=lambda m: (trained.loc[m, "runtime_sec"], trained.loc[m, "trainable_params"]))
    details = [_versus(trained, pairs, other, pick) for other in trained.index if other != pick]
    details += [f"Pareto set, accuracy vs training time: {', '.join(map(pretty, front_time))}.",
                f"Pareto set, accuracy vs trainable parameters: {', '.join(map(pretty, front_params))}."]
    for base in summary.index.intersection(list(baselines)):
        accuracy = summary.loc[base, "test_accuracy"]
        details.append(f"{pretty(base)} (baseline, nothing trained) scores {_points(accuracy)}%; {pretty(pick)} "
                       f"is {_points(trained.loc[pick, 'test_accuracy'] - accuracy)} points above it.")
    seeds = int(trained["n"].min())
    details.append((f"Accuracy is the mean over {seeds} seeds of each method's selected configuration. "
                    if seeds > 1 else "One seed per method: a difference of a point or so may be seed noise. ")
                   + f"Verdicts: a paired test (p < {ALPHA}) between each pair of methods' selected configurations "
                   "on the shared test set (McNemar's with one seed; with several, over the seeds both ran, so it "
                   "follows the mean), not corrected for multiple comparisons.")
    return Recommendation(pick, _headline(trained, pairs, pick, top), details, front_time, front_params)


def _versus(trained: pd.DataFrame, pairs: pd.DataFrame, other: str, pick: str) -> str:
    """One alternative against the pick: accuracy, its significance, and each cost as a share."""
    row, chosen = trained.loc[other], trained.loc[pick]
    pair = _pair(pairs, other, pick)
    return (f"{pretty(other)}: {100 * (row.test_accuracy - chosen.test_accuracy):+.1f} points "
            f"({'significant' if pair.significant else 'not significant'}, {_p_text(pair)}) "
            f"at {_share(row.runtime_sec, chosen.runtime_sec)} of the training time, "
            f"{_share(row.peak_memory_mb, chosen.peak_memory_mb)} of the peak memory and "
            f"{_share(row.trainable_params, chosen.trainable_params)} of the trainable parameters "
            f"of {pretty(pick)}.")


def _headline(trained: pd.DataFrame, pairs: pd.DataFrame, pick: str, top: str) -> str:
    """The sentence that leads the page: what to pick and what it costs against the alternative."""
    row, best = trained.loc[pick], trained.loc[top]
    if pick != top:
        gap = best.test_accuracy - row.test_accuracy
        closeness = (f"as accurate as {pretty(top)}" if gap < 0.0005
                     else f"within {_points(gap)} points of {pretty(top)}'s accuracy")
        pair = _pair(pairs, pick, top)
        return (f"Pick {pretty(pick)}: {closeness} (no significant difference, {_p_text(pair)}) "
                f"at {_share(row.runtime_sec, best.runtime_sec)} "
                f"of its training time and {_share(row.trainable_params, best.trainable_params)} of its "
                "trainable parameters.")
    if len(trained) == 1:
        return f"Pick {pretty(top)}, the study's only trained method ({_points(best.test_accuracy)}% test accuracy)."
    headline = f"Pick {pretty(top)}: the most accurate method ({_points(best.test_accuracy)}% test accuracy)"
    cheaper = trained[trained.runtime_sec < best.runtime_sec]
    if cheaper.empty:
        return headline + " and the fastest to train."
    runner = cheaper.loc[cheaper.test_accuracy.idxmax()]
    pair = _pair(pairs, runner.name, top)
    return headline + (f". The closest cheaper method, {pretty(runner.name)}, trains in "
                       f"{_share(runner.runtime_sec, best.runtime_sec)} of the time but is "
                       f"{_points(best.test_accuracy - runner.test_accuracy)} points less accurate "
                       f"(significant, {_p_text(pair)}).")


VARIANTS = {"torch_fp32": "torch fp32", "torch_bf16": "torch bf16", "onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8"}


def variant_name(variant: str) -> str:
    return VARIANTS.get(variant, variant)


def deployment(study: Study) -> pd.DataFrame | None:
    """deploy.csv's rows of the methods' selected runs (a row of a run no longer selected is out of date),
    named ("LoRA, ONNX int8") and flagged `pareto`: on the frontier of test accuracy against p50 latency
    at batch 1 among the measured ones. None where the study has not been measured deployed."""
    path = study.directory / DEPLOY_FILE
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    frame = frame[frame["method"].isin(study.methods)]
    frame = frame[frame["run_id"] == frame["method"].map(study.best["run_id"])].reset_index(drop=True)
    if frame.empty:
        return None
    frame["name"] = [f"{pretty(m)}, {variant_name(v)}" for m, v in zip(frame["method"], frame["variant"])]
    front = pareto_set(frame[frame["status"] == "measured"].set_index("name"), "latency_p50_ms")
    return frame.assign(pareto=frame["name"].isin(front))


def deploy_advice(recommendation: Recommendation, deploy: pd.DataFrame) -> Recommendation:
    """The recommendation naming the variant to deploy the pick as: its fastest at batch 1 (p50) of those
    whose test predictions are not significantly different from torch fp32's (McNemar at ALPHA)."""
    rows = deploy[(deploy["method"] == recommendation.method) & (deploy["status"] == "measured")]
    safe = rows[rows["mcnemar_p"] >= ALPHA]
    front = deploy[deploy["pareto"]].sort_values("latency_p50_ms")
    details = [f"Pareto set, accuracy vs latency at batch 1 (deployed): {', '.join(front['name'])}."]
    if safe.empty:
        reasons = "; ".join(f"{variant_name(r.variant)}: {r.reason}" for r in deploy[
            deploy["method"] == recommendation.method].itertuples() if r.status == "skipped")
        details.insert(0, f"No deployment variant of {pretty(recommendation.method)} was measured without a "
                          f"significant change from torch fp32" + (f" ({reasons})." if reasons else "."))
        return dataclasses.replace(recommendation, details=recommendation.details + details)
    best = safe.loc[safe["latency_p50_ms"].idxmin()]
    torch_fp32 = rows[rows["variant"] == "torch_fp32"]
    speedup = (f", {torch_fp32['latency_p50_ms'].iloc[0] / best.latency_p50_ms:.1f}x faster than torch fp32"
               if len(torch_fp32) and best.variant != "torch_fp32" else "")
    sentence = (f"Deploy it as {best['name']}: {best.latency_p50_ms:.1f} ms per text alone (p50; p99 "
                f"{best.latency_p99_ms:.1f} ms){speedup}, {best.examples_per_s:,.0f} examples/s in batches of "
                f"{best.batch_size:.0f}, {best.size_mb:,.1f} MB, test accuracy {_points(best.test_accuracy)}% "
                f"({best.agreement:.1%} of predictions as torch fp32's, McNemar {format_p(best.mcnemar_p)}).")
    return dataclasses.replace(recommendation, headline=f"{recommendation.headline} {sentence}",
                               details=recommendation.details + details, deployed=best["name"])


def confident_mistakes(predictions: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The k wrong predictions the model was surest of: where it is confidently wrong, and why."""
    wrong = predictions[predictions["pred"] != predictions["label"]].copy()
    wrong["confidence"] = wrong.filter(like="prob_").max(axis=1)  # the prediction is the most probable class
    return wrong.nlargest(k, "confidence")[["text", "label_name", "pred_name", "confidence"]]


def has_negation(texts: pd.Series) -> pd.Series:
    return texts.fillna("").str.lower().str.contains(NEGATION)


def accuracy_by(predictions: dict[str, pd.DataFrame], groups) -> pd.DataFrame:
    """Per method, accuracy and count of each group of texts (in order of appearance);
    `groups(predictions)` labels rows."""
    rows = []
    for method, frame in predictions.items():
        correct = frame["pred"] == frame["label"]
        for group, hits in correct.groupby(groups(frame), sort=False):
            rows.append({"method": method, "group": group, "accuracy": hits.mean(), "n": len(hits)})
    table = pd.DataFrame(rows)
    columns = pd.MultiIndex.from_product([("accuracy", "n"), table["group"].unique()])
    return table.pivot(index="method", columns="group").reindex(columns=columns).loc[list(predictions)]


def negation_accuracy(study: Study) -> pd.DataFrame:
    """Both groups always present (NaN, n=0 where no test text falls in one)."""
    groups = ("with negation", "without negation")
    accuracy = accuracy_by(study.predictions, lambda f: has_negation(f["text"]).map(dict(zip((True, False), groups))))
    return accuracy.reindex(columns=pd.MultiIndex.from_product([("accuracy", "n"), groups]))


def subset_accuracy(study: Study) -> pd.DataFrame | None:
    """Accuracy on the test set beside the source's extra evaluation sets (SemEval's sarcasm tweets),
    when every selected run scored them (`EXTRA_PREDICTIONS_FILE`, column `subset`)."""
    if not all((study.run_dir(m) / EXTRA_PREDICTIONS_FILE).is_file() for m in study.methods):
        return None
    frames = {m: pd.concat([study.predictions[m].assign(subset="test"), study.run_file(m, EXTRA_PREDICTIONS_FILE)])
              for m in study.methods}
    return accuracy_by(frames, lambda f: f["subset"].astype(str))


SENSITIVITY = 0.01  # "stays within 1 point of its best"


def search_trials(results: pd.DataFrame) -> pd.DataFrame:
    """The search trials' own runs, in trial order per method (not the re-runs of a best trial on
    other seeds, which share its configuration and come later in results.csv)."""
    if "trial" not in results:
        return results.iloc[0:0]
    trials = results[results["trial"].notna()].drop_duplicates("config_id", keep="first")
    return trials.sort_values(["trial"], kind="stable").assign(pruned=lambda t: t["pruned"].fillna(False).astype(bool),
                                                               score=selection_scores)


def tuning(study: Study) -> pd.DataFrame | None:
    """Per searched method: the budget spent, the best trial, and how forgiving the method is to tune:
    the learning rates of the finished (unpruned) trials within a point of the best validation score."""
    trials = search_trials(study.results)
    if trials.empty:
        return None
    rows = []
    for method, runs in trials.groupby("method", sort=False):
        finished = runs[~runs["pruned"]]
        best = finished.loc[finished["score"].idxmax()] if len(finished) else None
        near = finished[finished["score"] >= finished["score"].max() - SENSITIVITY]
        rows.append({"method": method, "trials": len(runs), "pruned": int(runs["pruned"].sum()),
                     "train_examples": int(runs["train_examples"].sum()), "seconds": runs["runtime_sec"].sum(),
                     "best_score": None if best is None else best["score"],
                     "best_lr": None if best is None else best["lr"],
                     "near_lr_low": near["lr"].min(), "near_lr_high": near["lr"].max(),
                     "near_share": len(near) / len(finished) if len(finished) else None})
    return pd.DataFrame(rows).set_index("method")


def most_forgiving(table: pd.DataFrame) -> str | None:
    """The searched method whose good learning rates span the widest range (then the largest share of
    trials near its best); None with fewer than two methods."""
    if table is None or len(table) < 2:
        return None
    span = (table["near_lr_high"] / table["near_lr_low"]).astype(float)
    return max(table.index, key=lambda m: (span[m], table.loc[m, "near_share"]))


@dataclass
class Report:
    """Every number the page shows, computed once; figures and renderers only format them."""

    study: Study
    summary: pd.DataFrame
    pairs: pd.DataFrame
    recommendation: Recommendation
    baselines: list[str]
    negation: pd.DataFrame
    subsets: pd.DataFrame | None
    mistakes: dict[str, pd.DataFrame]
    deploy: pd.DataFrame | None  # `deployment`: None where the study was not measured deployed
    tuning: pd.DataFrame | None = None  # a search study's budget and sensitivity per method
    by_size: pd.DataFrame | None = None  # a sizes study's summary.csv: each method's selection per size


def analyse(study: Study) -> Report:
    summary_file, pairs_file = statistics(study)
    summary, pairs = summarise(study, summary_file), significance(study, pairs_file)
    baselines = [m for m in study.methods if study.is_baseline(m)]
    recommendation, deploy = recommend(summary, pairs, set(baselines)), deployment(study)
    if deploy is not None and recommendation.method is not None:
        recommendation = deploy_advice(recommendation, deploy)
    return Report(study, summary, pairs, recommendation, baselines, negation_accuracy(study), subset_accuracy(study),
                  {m: confident_mistakes(p) for m, p in study.predictions.items() if m not in baselines}, deploy,
                  tuning(study), summary_file if size_column(study.results) else None)
