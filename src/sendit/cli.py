"""The `sendit` command: each verb is a thin call into the pipeline modules.

Heavy libraries (torch, transformers, peft) are imported inside the verbs, so `--help` is instant
and `sendit predict` spends its time on the model, not on imports it does not need.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

# Option defaults are read from these dataclasses (a field's class attribute is its default): one source.
from sendit.config import SELECTION_METRICS, DataConfig, DistillConfig, MethodConfig, ModelConfig, TrainConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # hub ids still work where a cache has them
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Adapt pretrained transformers to sentiment classification and measure which method to pick.")
data_app = typer.Typer(no_args_is_help=True, help="Prepare, download and inspect datasets.")
app.add_typer(data_app, name="data")
# Logs and CI are not terminals: give tables room instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 140)

SetOption = typer.Option(None, "--set", "-s", help="Override a config field: KEY=VALUE, e.g. train.epochs=2")
DeviceOption = typer.Option("auto", "--device", help="auto | cpu | cuda | mps; auto: CUDA, then MPS, then the CPU")


def _quiet() -> None:
    """Our own log lines as plain messages; library chatter that buries them silenced."""
    import logging

    from sendit.logs import quiet_libraries

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries()


def _fail(message: str) -> None:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(2)


def _guard(call):
    """Run `call`, turning our own input errors into one clear line and exit code 2."""
    from sendit.errors import InputError

    try:
        return call()
    except InputError as err:
        _fail(str(err))


def _device(requested: str) -> str:
    """The torch device `--device` names; one it cannot see is an input error (exit 2)."""
    from sendit.hardware import resolve_device

    return _guard(lambda: resolve_device(requested, "--device"))


@app.command()
def study(config: Path = typer.Argument(..., help="Study YAML, e.g. configs/quickstart.yaml"),
          overrides: Optional[list[str]] = SetOption,
          dry_run: bool = typer.Option(False, "--dry-run", help="List the runs without running them"),
          workers: int = typer.Option(1, "--workers", "-w", min=1,
                                      help="Runs at once on this machine, each in its own process with "
                                           "cores // N torch threads. More runs per hour, each slower: on 2 "
                                           "cores, 2 workers trained 1.35x the examples/s of one 2-thread run "
                                           "(benchmarks/results/loop.md)."),
          ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS",
                                            help="Run each run as a task on a Ray cluster: `auto` (a running "
                                                 "cluster, else a new local one), `local` (a new local instance) "
                                                 "or a cluster address. Each task takes train.threads CPUs "
                                                 "(default 1). Needs `pip install 'sendit\\[ray]'`.")):
    """Run a comparative study (methods x grid x seeds x sizes), resumable; save results and statistics."""
    from sendit.config import load_study
    from sendit.plan import plan

    cfg = _guard(lambda: load_study(config, overrides or []))
    if dry_run:
        runs = _guard(lambda: plan(cfg))
        for run in runs:
            console.print(run.run_id)
        console.print(f"{len(runs)} runs -> {cfg.directory}")
        if cfg.search:
            searched = [m.label or m.name for m in cfg.methods if m.search]
            console.print(f"then a search ({cfg.search.sampler}, {cfg.search.pruner} pruning) of {', '.join(searched)}, "
                          f"each to the same budget of {cfg.search.describe_budget()}")
        if cfg.reseed_best:
            console.print(f"then each method's best configuration{' per size' if cfg.sizes else ''} on seeds "
                          f"{cfg.reseed_best} (chosen on validation {SELECTION_METRICS[cfg.selection.metric]} once "
                          "the grid is done)")
        return
    if ray and workers > 1:
        _fail("--workers and --ray exclude each other: on Ray, set the CPUs per run with -s train.threads=N")
    _run_and_print(cfg, workers, ray)


def _run_and_print(cfg, workers: int = 1, ray: Optional[str] = None) -> None:
    """Run a study; print its results, statistics and, for a distillation study, students vs teacher."""
    _quiet()
    from sendit.host import bound_primitive_cache
    from sendit.study import run_study
    from sendit.table import COST, per_class_table, results_table

    bound_primitive_cache(cfg.model.max_length)
    results = _guard(lambda: run_study(cfg, console, workers, ray))
    console.print(results_table(results, f"{cfg.name}: test set, best configuration per method by validation "
                                         f"{SELECTION_METRICS[cfg.selection.metric]}"))
    console.print(results_table(results, f"{cfg.name}: cost of each method's best run", COST))
    console.print(per_class_table(results, _label_names(cfg.directory)))
    _print_statistics(cfg.directory)
    if any(method.distill for method in cfg.methods):
        _print_distillation(cfg.directory / "distill_summary.csv")
    console.print(f"results: {cfg.directory / 'results.csv'}, statistics: {cfg.directory / 'summary.csv'}, "
                  f"{cfg.directory / 'pairwise.csv'}")


def _print_distillation(path: Path) -> None:
    import pandas as pd
    from rich.table import Table

    summary = pd.read_csv(path)
    table = Table(*summary.columns, title="distillation: test set (mean, std over seeds), size and speed")
    for row in summary.itertuples(index=False):
        table.add_row(*(f"{v:,.4g}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


def _print_statistics(directory: Path) -> None:
    """Mean +- std over seeds with 95% intervals (over seeds and test examples), then one paired-test verdict per
    method pair."""
    import pandas as pd
    from rich.table import Table

    summary, pairs = pd.read_csv(directory / "summary.csv"), pd.read_csv(directory / "pairwise.csv")
    sized = summary["train_size"].nunique() > 1
    table = Table("method", *(["train size"] if sized else []), "best configuration", "seeds", "test accuracy",
                  "test F1 macro", title="best configuration per method: mean ± std over seeds "
                  "[95% CI over seeds and test examples]",
                  header_style="bold")
    for row in summary.itertuples():
        cells = []
        for metric in ("test_accuracy", "test_f1_macro"):
            mean, std, low, high = (getattr(row, f"{metric}_{s}") for s in ("mean", "std", "ci_seeds_low",
                                                                              "ci_seeds_high"))
            cells.append(f"{mean:.4f}{'' if pd.isna(std) else f' ± {std:.4f}'} [{low:.4f}, {high:.4f}]")
        table.add_row(row.method, *([f"{row.train_size:,}"] if sized else []), row.config_id, str(row.seeds), *cells)
    console.print(table)
    for row in pairs.itertuples():
        size = f" (n = {row.train_size:,})" if sized else ""
        pair = f"{row.method_a} vs {row.method_b}"
        console.print(f"  {pair}{size}: {row.verdict.removeprefix(pair + ': ')}")  # a tie's verdict names the pair


def _label_names(directory: Path) -> list[str]:
    import json

    metrics = next((directory / "runs").glob("*/metrics.json"))
    return json.loads(metrics.read_text())["label_names"]


@app.command()
def train(dataset: str = typer.Option(DataConfig.dataset, help="Registry name (sentiment140, csv, jsonl, ...)"),
          data_path: Optional[str] = typer.Option(DataConfig.path, help="File or folder of the data"),
          model: str = typer.Option(ModelConfig.name, help="Alias, local directory or hub id"),
          method: str = typer.Option(MethodConfig.name, help="See `sendit methods`"),
          lr: Optional[float] = typer.Option(MethodConfig.lr, help="Default: the method's own"),
          epochs: float = typer.Option(TrainConfig.epochs), batch_size: int = typer.Option(TrainConfig.batch_size),
          max_length: int = typer.Option(ModelConfig.max_length), sample: Optional[int] = typer.Option(DataConfig.sample),
          seed: int = typer.Option(TrainConfig.seed), out: Path = typer.Option(Path("runs/train"), help="Run directory"),
          overrides: Optional[list[str]] = SetOption):
    """Train one run and evaluate it on the test split."""
    _quiet()
    from sendit.config import RunConfig, apply_overrides, build
    from sendit.data import prepare
    from sendit.distill import loss_for
    from sendit.host import bound_primitive_cache
    from sendit.run import execute
    from sendit.table import COST, results_table

    values = apply_overrides({
        "data": {"dataset": dataset, "path": data_path, "sample": sample},
        "model": {"name": model, "max_length": max_length},
        "method": {"name": method, "lr": lr},
        "train": {"epochs": epochs, "batch_size": batch_size, "seed": seed}}, overrides or [])
    cfg = _guard(lambda: build(RunConfig, values))
    bound_primitive_cache(cfg.model.max_length)
    splits = _guard(lambda: prepare(cfg.data).with_transfer(cfg.transfer))
    row = _guard(lambda: execute(cfg, out, splits, make_loss=loss_for(cfg, splits)))
    if row:
        import pandas as pd

        console.print(results_table(pd.DataFrame([row]), f"{method} on {dataset}"))
        console.print(results_table(pd.DataFrame([row]), "cost", COST))
        console.print(f"run: {out}")


@app.command()
def distill(teacher: Path = typer.Option(..., help="The teacher's run directory (any method), or a study "
                                                   "directory: its best run on validation (its selection.metric)"),
            student: str = typer.Option("minilm-l3", help="Student model: alias (minilm-l3), directory or hub id"),
            method: str = typer.Option("full", help="The student's method (any of `sendit methods`)"),
            lr: Optional[float] = typer.Option(MethodConfig.lr), epochs: float = typer.Option(TrainConfig.epochs),
            batch_size: int = typer.Option(TrainConfig.batch_size),
            temperature: float = typer.Option(DistillConfig.temperature, "--temperature", "-T",
                                              help="Softmax temperature T"),
            alpha: float = typer.Option(DistillConfig.alpha, help="Weight of the soft-target term"),
            seeds: str = typer.Option("42", help="Comma-separated seeds, e.g. 1,2,3"),
            out: Path = typer.Option(Path("runs/distill"), help="Output directory (the study's)"),
            overrides: Optional[list[str]] = SetOption):
    """Distil a trained run into a smaller student: a study of the method with and without KD on the
    same seeds and the teacher's data (the shape of configs/distill_minilm.yaml; resumable). When the
    teacher's data has a transfer set (data.transfer), two more arms: the student on it with the
    teacher's soft targets alone (+kd+transfer) and, the control, with its gold labels (+transfer)."""
    from sendit.config import StudyConfig, apply_overrides, build, load_run, to_dict
    from sendit.distill import teacher_run

    try:
        seed_list = [int(s) for s in seeds.split(",")]
    except ValueError:
        _fail(f"--seeds {seeds!r}: comma-separated whole numbers, e.g. 1,2,3")
    teacher_cfg = _guard(lambda: load_run(teacher_run(teacher) / "config.yaml"))
    arm = {"name": method, "lr": lr}
    kd = {"teacher": str(teacher), "temperature": temperature, "alpha": alpha}
    values = apply_overrides({
        "name": out.name, "output_dir": str(out.parent), "data": to_dict(teacher_cfg.data),
        "model": {"name": student, "max_length": teacher_cfg.model.max_length},
        "train": {"epochs": epochs, "batch_size": batch_size},
        "methods": [{**arm, "label": method}, {**arm, "label": f"{method}+kd", "distill": kd},
                    *([{**arm, "label": f"{method}+transfer", "transfer": "labels"},
                       {**arm, "label": f"{method}+kd+transfer", "distill": kd, "transfer": "teacher"}]
                      if teacher_cfg.data.transfer else [])],
        "seeds": seed_list}, overrides or [])
    _run_and_print(_guard(lambda: build(StudyConfig, values)))


model_app = typer.Typer(no_args_is_help=True, help="Build models: shrink a model to a subset of its layers.")
app.add_typer(model_app, name="model")


@model_app.command("shrink")
def model_shrink(name: str = typer.Argument(..., help="Model alias or directory, e.g. minilm"),
                 layers: str = typer.Option(..., help="Layers to keep, e.g. 0,2,4"),
                 out: Path = typer.Option(..., "-o", "--out", help="Output model directory")):
    """Keep a subset of a model's layers (DistilBERT-style student init); save an ordinary model dir."""
    _quiet()
    from sendit.models import count_parameters, load_model, shrink

    keep = [int(i) for i in layers.split(",")]
    path = _guard(lambda: shrink(name, keep, out))
    before, after = (count_parameters(load_model(n, 2)[0])[1] for n in (name, str(path)))
    console.print(f"{name} -> {path}: layers {keep}, {before:,} -> {after:,} parameters "
                  f"({after / before:.0%}; embeddings and pooler are kept whole)")


@app.command("eval")
def evaluate(run: Path = typer.Argument(..., help="A run directory"),
             dataset: Optional[str] = typer.Option(
                 None, help="NAME or NAME:SPLIT; NAME:all is every example. Default: the run's test split; "
                            "the run's own NAME:test is its dataset's whole test split (not the run's "
                            "data.test_sample); another dataset (or --data-path): its own test split if it has "
                            "one, else all"),
             data_path: Optional[str] = typer.Option(None, help="File or folder of that dataset"),
             out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write per-example predictions to this CSV"),
             device: str = DeviceOption):
    """Evaluate a saved run on a dataset split: metrics, per-class table, confusion matrix."""
    _quiet()
    from dataclasses import replace

    from sendit.artifacts import Predictor, prediction_frame
    from sendit.config import load_run
    from sendit.data import parse_split_name, split_of
    from sendit.data.datasets import check_independent, default_split
    from sendit.evaluate import classification_metrics
    from sendit.host import bound_primitive_cache
    from sendit.io import atomic_write_csv

    if (run / "config.yaml").is_file():  # before loading folds an adapter (a matmul)
        bound_primitive_cache(_guard(lambda: load_run(run / "config.yaml")).model.max_length)
    device = _device(device)
    predictor = _guard(lambda: Predictor.from_run(run, device))
    cfg = predictor.cfg
    data, split = cfg.data, "test"
    if dataset or data_path:
        name, split = parse_split_name(dataset or cfg.data.dataset)
        if name != cfg.data.dataset or data_path:  # another dataset: none of the run's sampling applies
            data = replace(cfg.data, dataset=name, path=data_path, format=None, sample=None, test_sample=None)
            split = split or _guard(lambda: default_split(data))
        elif split == "test":  # named: the published test split whole, e.g. IMDb's 25,000 beside a run's 5,000
            data = replace(cfg.data, test_sample=None)
        split = split or "test"
        _guard(lambda: check_independent(cfg.data.dataset, name, split))
    frame, label_names = _guard(lambda: split_of(data, split))
    if list(label_names) != list(cfg.data.label_names):
        _fail(f"labels of {data.dataset} {label_names} differ from the run's {cfg.data.label_names}")
    encoded = _guard(lambda: predictor.encode(frame["text"].tolist(), frame["label"].to_numpy(), data))
    logits, seconds = predictor.logits(encoded)
    metrics = classification_metrics(encoded.labels, logits.argmax(-1), cfg.data.label_names)
    where = f" from {data.path}" if data.path else ""
    console.print(f"{run} on {data.dataset}:{split}: {len(frame):,} examples{where} ({seconds:.1f} s on {device})")
    for key in ("accuracy", "f1_macro", "f1_weighted", "recall_macro"):
        console.print(f"  {key:<13} {metrics[key]:.4f}")
    console.print(_per_class_and_confusion(metrics, cfg.data.label_names))
    if out:
        atomic_write_csv(out, prediction_frame(frame["text"], encoded.labels, logits, cfg.data.label_names))
        console.print(f"predictions: {out}")


def _per_class_and_confusion(metrics: dict, label_names: list[str]):
    """One row per true class: precision, recall, F1, support, then its row of the confusion matrix."""
    from rich.table import Table

    table = Table("class", "precision", "recall", "F1", "support", *(f"pred {n}" for n in label_names),
                  title="per class (rows: true class)")
    for name, counts in zip(label_names, metrics["confusion_matrix"]):
        stats = metrics["per_class"][name]
        table.add_row(name, *(f"{stats[k]:.4f}" for k in ("precision", "recall", "f1-score")),
                      f"{int(stats['support']):,}", *(f"{c:,}" for c in counts))
    return table


OUTPUTS = ("table", "csv", "jsonl")


@app.command()
def predict(run: Path = typer.Argument(..., help="A run directory, or an export (`sendit export`)"),
            texts: Optional[list[str]] = typer.Argument(None, help="Texts to label; '-' reads stdin"),
            file: Optional[Path] = typer.Option(None, "--file", "-f", help="One text per line, or CSV/TSV/JSONL"),
            text_column: str = typer.Option("text", help="Text column of a CSV/TSV/JSONL file"),
            output: str = typer.Option("table", "--output", "-o", help="table | csv | jsonl"),
            batch_size: int = typer.Option(64, min=1), device: str = DeviceOption):
    """Label texts with a saved run or an export: label and probability of every class (a run: in its
    train.eval_precision, auto: the faster here, measured once; an export: its calibrated probabilities)."""
    if output not in OUTPUTS:
        _fail(f"--output {output!r}: one of {', '.join(OUTPUTS)}")
    _quiet()
    from sendit.predict import open_predictor, predict_texts, progress, read_texts, skip_bitsandbytes, write_rows

    items = _guard(lambda: read_texts(texts or [], file, text_column, sys.stdin))
    if not items:
        _fail("no texts given: pass TEXT arguments, --file F, or '-' to read stdin")
    skip_bitsandbytes([run])
    predictor = _guard(lambda: open_predictor(run, device))
    with progress(len(items), shown=file is not None) as advance:
        rows = predict_texts(predictor, items, batch_size, on_batch=advance)
    if output != "table":
        write_rows(rows, output, sys.stdout)
    else:
        from rich.table import Table

        table = Table(*rows[0])
        for row in rows:
            table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
        console.print(table)


@app.command()
def export(run: Path = typer.Argument(..., help="A run directory"),
           out: Path = typer.Option(..., "--out", "-o", help="Export directory (written whole, or not at all)"),
           fmt: str = typer.Option("onnx", "--format", help="onnx"),
           quantize: str = typer.Option("none", help="none | int8 (ONNX Runtime dynamic, per channel)"),
           force: bool = typer.Option(False, "--force", help="Replace a non-empty export directory"),
           max_loss: float = typer.Option(1.0, "--max-loss", metavar="POINTS",
                                          help="int8 (and QLoRA computing in bf16): refuse if validation "
                                               "accuracy drops by more points")):
    """Export a run for CPUs without torch: adapter folded in, ONNX (optionally int8), tokenizer, calibrated
    temperature; checked against the run on its validation texts. `sendit predict` and `serve` read it."""
    _quiet()
    from sendit.export import export_run

    manifest = _guard(lambda: export_run(run, out, fmt, quantize, force, max_loss))
    check, calibration = manifest["check"], manifest["calibration"]
    console.print(f"{run} -> {out}: {manifest['format']} {manifest['precision']}, "
                  f"{manifest['bytes']['model.onnx'] / 1e6:.1f} MB, checked on {check['texts']:,} texts")
    for precision in ("fp32", "int8"):
        if "max_abs_logit_diff" in check.get(precision, {}):
            console.print(f"  {precision} graph: predictions identical, max |logit difference| "
                          f"{check[precision]['max_abs_logit_diff']:.1e}")
        elif precision in check:
            lost = check[precision]
            console.print(f"  {precision}: validation accuracy {lost['val_accuracy_torch']:.4f} -> "
                          f"{lost[f'val_accuracy_{precision}']:.4f} ({-lost['loss_points']:+.2f} points), "
                          f"agreement with torch {lost['agreement']:.2%}")
    console.print(f"  temperature {calibration['temperature']:.3f}: validation ECE {calibration['val_ece_before']:.4f} "
                  f"-> {calibration['val_ece_after']:.4f}")


@app.command()
def serve(runs: list[str] = typer.Argument(..., help="Run or export directories, or NAME=DIR to name a model"),
          host: str = typer.Option("127.0.0.1", help="Interface to listen on; 0.0.0.0 exposes it to the network"),
          port: int = typer.Option(8000),
          max_texts: int = typer.Option(256, min=1, help="Texts per request"),
          max_chars: int = typer.Option(2000, min=1, help="Characters per text"),
          batch_wait_ms: float = typer.Option(5.0, min=0, help="How long a request waits for others to batch with"),
          max_batch: int = typer.Option(64, min=1, help="Texts per forward pass"),
          naive: bool = typer.Option(False, "--naive", help="Benchmark baseline: one request per forward pass"),
          device: str = DeviceOption):
    """Serve runs and exports over HTTP (FastAPI): POST /v1/predict, GET /v1/models, GET /health, docs at /docs.

    Adapter runs (lora, dora, ia3, prompt_tuning) over one base share it; concurrent requests are batched.
    """
    _quiet()
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as err:
        _fail(f"sendit serve needs `pip install 'sendit\\[serve]'` ({err})")
    from sendit.predict import skip_bitsandbytes
    from sendit.serve import Settings, create_app, parse_runs

    skip_bitsandbytes([run_dir for _, run_dir in parse_runs(runs)])
    settings = Settings(max_texts, max_chars, batch_wait_ms, max_batch, naive, device)
    server = _guard(lambda: create_app(runs, settings))
    console.print(f"serving {', '.join(server.state.models)} on http://{host}:{port} (API docs: /docs)")
    uvicorn.run(server, host=host, port=port, log_level="warning")


@app.command()
def methods(model: str = typer.Option(ModelConfig.name, help="Count trainable parameters on this model"),
            num_labels: int = typer.Option(2)):
    """List every method with its trainable parameter count on a model."""
    _quiet()
    from rich.table import Table

    from sendit.methods import METHODS, get_method
    from sendit.methods.base import options_help
    from sendit.models import count_parameters, load_model

    table = Table("method", "trainable params", "share", "default lr", "options", "what trains")
    for name, cls in METHODS.items():
        base, _ = _guard(lambda: load_model(model, num_labels))
        method = get_method(MethodConfig(name=name))
        trainable, total = count_parameters(method.apply(base))
        trainable = trainable if method.trains else 0
        options = ", ".join(f"{k}={v}" for k, v in options_help(cls)) or "-"
        table.add_row(name, f"{trainable:,}", f"{trainable / total:.3%}",
                      f"{method.lr:g}" if method.lr else "-", options, cls.summary)
    console.print(table)
    console.print(f"model {model}: {total:,} parameters")


@app.command()
def doctor(model: str = typer.Option(ModelConfig.name, help="Decide the precision for this model"),
           batch_size: int = typer.Option(TrainConfig.batch_size, min=1, help="Rows of the timed batch"),
           length: int = typer.Option(24, min=1, help="Tokens per row of the timed batch (a tweet: ~24 minilm tokens)"),
           method: str = typer.Option("full", help="Method whose training step is timed (see `sendit methods`)"),
           remeasure: bool = typer.Option(False, help="Forget this model's cached decisions and time again (e.g. "
                                                      "when they were measured on a busy machine)")):
    """This machine: devices, CPU, threads, matmul peaks, library versions, the precision `auto` picks
    for a model's training and inference, with the timings behind it (cached once measured), and what
    turning off the model's attention dropout would save at this length (timed each time)."""
    _quiet()
    from rich.table import Table

    from sendit.dropout import use_fast_dropout
    from sendit.hardware import (forget, inference_precision, machine_facts, resolve_device, synthetic_batch,
                                 time_training, training_precision)
    from sendit.methods import get_method
    from sendit.models import attention_dropout_field, load_model

    table = Table("what", "value", title="sendit doctor", header_style="bold")
    for what, value in machine_facts():
        table.add_row(what, value)
    base, _ = _guard(lambda: load_model(model, 2))
    net = get_method(MethodConfig(name=method)).apply(base)
    device = resolve_device("auto")
    batch = synthetic_batch(net.config.vocab_size, batch_size, length)
    precisions = {}
    for kind, key, decide in (("training", "train", training_precision),
                              ("inference", "inference", inference_precision)):
        if remeasure:
            forget(key, device, net, batch_size)
        choice = decide("auto", device, net, batch)
        table.add_row(f"{kind} precision ({model}, {method}, {batch_size} x {length})",
                      f"{choice.precision}: {choice.reason}")
        precisions[key] = choice.precision
    dropout_field = attention_dropout_field(base.config)
    dropout = getattr(base.config, dropout_field) if dropout_field else 0.0
    if dropout:
        without, _ = load_model(model, 2, attention_dropout=0.0)
        candidates = (net, get_method(MethodConfig(name=method)).apply(without))
        if device == "cpu" and TrainConfig.fast_dropout:  # as training will run
            for candidate in candidates:
                use_fast_dropout(candidate)
        with_s, without_s = (time_training(candidate, batch, device, precisions["train"], limit=None)
                             for candidate in candidates)
        table.add_row(f"attention dropout {dropout:g} -> 0",
                      f"training {with_s / without_s:.2f}x as fast ({with_s * 1e3:.0f} vs {without_s * 1e3:.0f} ms a "
                      f"step, {precisions['train']}): -s model.attention_dropout=0 (a regulariser: check the accuracy)")
    console.print(table)


@app.command()
def report(study_dir: Path = typer.Argument(..., help="A study directory, e.g. runs/quickstart"),
           track: Optional[list[str]] = typer.Option(None, "--track",
                                                     help="Also log every run to: tensorboard, mlflow"),
           deploy: bool = typer.Option(False, "--deploy",
                                       help="First measure each method's selected run deployed (torch fp32/bf16, "
                                            "ONNX fp32/int8) into deploy.csv, as the study's `deploy:` block "
                                            "(or its defaults) says; variants already measured are kept")):
    """Write figures/, report.html and report.md from a study's saved results; lead with a recommendation."""
    from rich.markup import escape

    from sendit.report import ReportError, analyse, load_study, write
    from sendit.report import track as track_runs

    if deploy:
        _quiet()
        from sendit.deploy_study import deploy_study

        _guard(lambda: deploy_study(study_dir, None, console))
    try:
        made = analyse(load_study(study_dir))
        page = write(made)
        destinations = [(backend, track_runs(made, backend)) for backend in track or []]
    except ReportError as err:
        _fail(escape(str(err)))  # the message names extras in brackets: sendit[track]
    console.print(f"[bold]{escape(made.recommendation.headline)}[/]")
    console.print(f"report: {page} (and report.md, figures/)")
    for backend, where in destinations:
        console.print(f"{backend}: {where}")


@data_app.command("prepare")
def data_prepare(name: str = typer.Argument(..., help="Registry name"),
                 path: Optional[str] = typer.Option(DataConfig.path, help="File or folder (default: under ./data)"),
                 sample: Optional[int] = typer.Option(DataConfig.sample, help="Stratified downsample to N"),
                 split: str = typer.Option("/".join(f"{100 * f:g}" for f in DataConfig().split),
                                           help="train/val/test percentages"),
                 seed: int = typer.Option(DataConfig.seed), out: Path = typer.Option(Path("data/prepared"), "-o", "--out")):
    """Clean, sample and split a dataset; write train/val/test CSVs (text,label)."""
    from sendit.data import prepare
    from sendit.io import atomic_write_csv

    fractions = _parse_split(split)
    splits = _guard(lambda: prepare(DataConfig(dataset=name, path=path, sample=sample, split=fractions, seed=seed)))
    target = out / name
    for part in ("train", "val", "test"):
        atomic_write_csv(target / f"{part}.csv", getattr(splits, part))
    console.print(f"{name}: train {len(splits.train):,} / val {len(splits.val):,} / test {len(splits.test):,} -> {target}")


def _parse_split(split: str) -> list[float]:
    try:
        parts = [float(p) for p in split.split("/")]
    except ValueError:
        _fail(f"--split {split!r}: expected percentages like 80/10/10")
    if len(parts) != 3 or abs(sum(parts) - 100) > 1e-6:
        _fail(f"--split {split!r}: three percentages summing to 100, like 80/10/10")
    return [p / 100 for p in parts]


@data_app.command("download")
def data_download(name: str = typer.Argument(..., help="Dataset to fetch from its canonical URL"),
                  dest: Path = typer.Option(Path("data"), help="Folder to write into")):
    """Fetch a dataset's original archive, verify it, and extract it (needs a network)."""
    from sendit.data.download import download

    path = _guard(lambda: download(name, dest))
    console.print(f"{name}: verified and extracted to {path}")


@data_app.command("info")
def data_info(name: str = typer.Argument(..., help="Registry name"),
              path: Optional[str] = typer.Option(DataConfig.path, help="File or folder (default: under ./data)")):
    """Print each split's row count and label distribution."""
    from rich.table import Table

    from sendit.data import dataset_splits

    frames, label_names, stats = _guard(lambda: dataset_splits(DataConfig(dataset=name, path=path)))
    table = Table("split", "rows", *label_names)
    for part, frame in frames.items():
        counts = frame["label"].value_counts()
        table.add_row(part, f"{len(frame):,}", *(f"{counts.get(i, 0):,}" for i in range(len(label_names))))
    console.print(table)
    if stats:  # a dataset without a train split here (tweeteval) has no prepare stats
        console.print({k: v for k, v in stats.items() if not isinstance(v, dict)})


if __name__ == "__main__":
    app()
