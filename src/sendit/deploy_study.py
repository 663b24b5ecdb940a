"""A study's methods as they would be deployed: each method's selected run measured on this CPU as
torch fp32, torch bf16, ONNX fp32 and ONNX int8, so the report can set accuracy against latency.

- torch_fp32, torch_bf16: the run as saved (`artifacts.Predictor`). bf16 only where `sendit.hardware`
  times bf16 inference faster on this machine (its usual measurement, cached per machine and model);
  elsewhere the variant is recorded as skipped with those timings.
- onnx_fp32, onnx_int8: `sendit export` into `<study>/deploy/<run_id>/<variant>/`. A run the exporter
  refuses (sentence-pair inputs, head_tail truncation) or an int8 export losing more than
  `deploy.max_loss` validation points is recorded as skipped with the exporter's reason: the study goes on.

Each variant labels the run's test texts (its predictions.csv): test accuracy and macro-F1,
agreement with torch fp32 and McNemar's p against it, examples/s of the forward passes at
`deploy.batch_size` (length-sorted batches, as evaluation), p50/p99 milliseconds to label one text
alone (cleaning and tokenising included: one request) and the size a deployment ships (torch: base
weights and adapter as safetensors would store them; ONNX: the export directory). Baselines, which
train nothing, are not deployed.

`<study>/deploy.csv` is rewritten atomically after each variant; a variant already in it for the
same run (measured or skipped) is not redone, so an interrupted measurement resumes where it stopped.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sendit.artifacts import Predictor, batching_for, eval_precision
from sendit.config import DeployConfig, load_study
from sendit.deploy import ExportPredictor
from sendit.errors import InputError
from sendit.evaluate import classification_metrics
from sendit.export import export_run
from sendit.io import atomic_write_csv
from sendit.measure import directory_mb, latency_ms, throughput, weights_mb
from sendit.methods.base import is_baseline
from sendit.results import DEPLOY_FILE, best_per_method
from sendit.stats import mcnemar

COLUMNS = ["method", "run_id", "variant", "status", "reason", "test_accuracy", "test_f1_macro", "agreement",
           "mcnemar_p", "examples_per_s", "latency_p50_ms", "latency_p99_ms", "size_mb", "test_examples",
           "batch_size", "threads"]


class VariantSkipped(Exception):
    """A variant that does not apply to a run on this machine; the message is the reason recorded."""


def deploy_study(directory: str | Path, cfg: DeployConfig | None, console) -> pd.DataFrame:
    """Measure every deployment variant of each trained method's selected run not yet in deploy.csv;
    return the table. `cfg` None: the study's own `deploy:` block, else the defaults."""
    directory = Path(directory)
    cfg = cfg or configured(directory)
    chosen = selected_runs(directory)
    wanted = [(run_id, variant) for _, run_id in chosen for variant in cfg.variants]  # the table's row order
    rows = {key: row for key, row in measured(directory).items() if key in wanted}  # none of an unselected run

    def table() -> pd.DataFrame:
        return pd.DataFrame([rows[key] for key in wanted if key in rows], columns=COLUMNS)

    with torch_threads(cfg.threads) as threads:
        for method, run_id in chosen:
            todo = [variant for variant in cfg.variants if (run_id, variant) not in rows]
            if todo:
                console.print(f"deploy {method} ({run_id}): {', '.join(todo)}")
            for variant, row in measure_run(directory / "runs" / run_id, directory / "deploy" / run_id, todo, cfg,
                                            threads):
                rows[(run_id, variant)] = {"method": method, "run_id": run_id, "variant": variant, **row,
                                           "batch_size": cfg.batch_size, "threads": threads}
                console.print(f"  {variant}: {describe(row)}")
                atomic_write_csv(directory / DEPLOY_FILE, table())
    return table()


def configured(directory: Path) -> DeployConfig:
    """The `deploy:` block of the study's config.yaml; the defaults where it has none."""
    path = directory / "config.yaml"
    return (load_study(path).deploy if path.is_file() else None) or DeployConfig()


def selected_runs(directory: Path) -> list[tuple[str, str]]:
    """(method, run id) of each trained method's selected run (validation only, the largest training set every
    method reached)."""
    if not (directory / "results.csv").is_file():
        raise InputError(f"{directory}: not a study directory (no results.csv); run `sendit study` first")
    best = best_per_method(pd.read_csv(directory / "results.csv"))
    return [(method, row["run_id"]) for method, row in best.iterrows()
            if not is_baseline(row.get("base_method", method))]


def measured(directory: Path) -> dict[tuple[str, str], dict]:
    """deploy.csv's rows by (run id, variant); none before the first measurement."""
    path = directory / DEPLOY_FILE
    if not path.is_file():
        return {}
    frame = pd.read_csv(path).astype(object).where(lambda f: f.notna(), None)
    return {(row["run_id"], row["variant"]): row for row in frame.to_dict("records")}


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch on `threads` (None: as it is) for the measurement, restored after; yields the count, which
    ONNX Runtime is given too so both libraries compute on as many cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def measure_run(run_dir: Path, out: Path, variants: list[str], cfg: DeployConfig, threads: int):
    """Yield (variant, row) for each of `variants` of the run: its measurements, or why it was skipped."""
    if not variants:
        return
    test = pd.read_csv(run_dir / "predictions.csv", keep_default_na=False, na_values=[""])  # "null" is a tweet
    texts, labels = test["text"].fillna("").astype(str).tolist(), test["label"].to_numpy()
    if not texts:
        yield from ((v, {"status": "skipped", "reason": "the run has no test texts"}) for v in variants)
        return
    run = Predictor.from_run(run_dir)
    encoded = run.encode(run.clean(texts))
    reference = run.logits(encoded, cfg.batch_size, "fp32")[0].argmax(1)
    for variant in variants:
        try:
            predictor, precision, size = open_variant(variant, run, encoded, run_dir, out / variant, cfg, threads)
        except (InputError, VariantSkipped) as err:  # an export refused, or its data gone: recorded, not fatal
            yield variant, {"status": "skipped", "reason": str(err)}
            continue
        yield variant, {"status": "measured", **measure(predictor, precision, texts, labels, reference, cfg),
                        "size_mb": size}


def open_variant(variant: str, run: Predictor, encoded, run_dir: Path, out: Path, cfg: DeployConfig, threads: int):
    """(predictor, precision to run it in, MB a deployment ships) of `variant`; exports it first for ONNX."""
    if variant == "torch_bf16":
        decision = bf16_decision(run, encoded)
        if decision.precision != "bf16":
            raise VariantSkipped(f"bf16 inference is not faster on this machine: {decision.reason}")
    if variant.startswith("torch_"):
        return run, variant.removeprefix("torch_"), weights_mb(run.model)
    # An earlier, interrupted measurement may have left the export: it is made again (force).
    export_run(run_dir, out, quantize="int8" if variant == "onnx_int8" else "none", force=True,
               max_loss=cfg.max_loss)
    return ExportPredictor.from_export(out, threads=threads), None, directory_mb(out)


def bf16_decision(run: Predictor, encoded):
    """Whether bf16 inference is faster here: `auto` inference precision for the run's model (sendit.hardware
    times forward passes on a typical batch of `encoded`; cached per machine), whatever its config fixed."""
    auto = dataclasses.replace(run.cfg, train=dataclasses.replace(run.cfg.train, eval_precision="auto"))
    return eval_precision(auto, run.model, encoded, batching_for(run.tokenizer, run.model))


def measure(predictor, precision: str | None, texts: list[str], labels: np.ndarray, reference: np.ndarray,
            cfg: DeployConfig) -> dict:
    """Quality against the labels and torch fp32's predictions (`reference`), throughput and latency."""
    logits, rate = throughput(predictor, predictor.encode(predictor.clean(texts)), cfg.batch_size, precision)
    predictions = logits.argmax(1)
    metrics = classification_metrics(labels, predictions, predictor.label_names)
    latency = latency_ms(predictor, texts[:cfg.latency_texts], precision)
    return {"test_accuracy": metrics["accuracy"], "test_f1_macro": metrics["f1_macro"],
            "agreement": float((predictions == reference).mean()),
            "mcnemar_p": mcnemar(predictions == labels, reference == labels)[1], "examples_per_s": rate,
            "latency_p50_ms": float(np.percentile(latency, 50)), "latency_p99_ms": float(np.percentile(latency, 99)),
            "test_examples": len(texts)}


def describe(row: dict) -> str:
    """One console line for a measured or skipped variant."""
    if row["status"] == "skipped":
        return f"skipped: {row['reason']}"
    return (f"test acc {row['test_accuracy']:.4f}, agreement {row['agreement']:.2%}, "
            f"{row['examples_per_s']:,.0f} ex/s, p50 {row['latency_p50_ms']:.1f} ms, p99 {row['latency_p99_ms']:.1f} ms, {row['size_mb']:.1f} MB")
