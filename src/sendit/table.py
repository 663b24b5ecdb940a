"""The results table printed at the end of a study: every metric and cost, one row per method."""
from __future__ import annotations

import math

import pandas as pd
from rich.table import Table

from sendit.results import best_per_method

# (column, header, format): what the method reaches, then what it costs.
QUALITY = [
    ("lr", "lr", "{:g}"), ("test_accuracy", "test acc", "{:.4f}"), ("test_f1_macro", "F1 macro", "{:.4f}"),
    ("test_f1_weighted", "F1 weighted", "{:.4f}"), ("test_recall_macro", "recall macro", "{:.4f}"),
    ("best_val_f1", "val F1", "{:.4f}"),
]
COST = [
    ("runtime_sec", "train s", "{:.0f}"), ("train_examples_per_s", "train ex/s", "{:.0f}"),
    ("peak_memory_mb", "peak MB", "{:,.0f}"), ("memory_delta_mb", "Δmem MB", "{:,.0f}"),
    ("trainable_params", "trainable", "{:,.0f}"), ("trainable_share", "share", "{:.3%}"),
    ("f1_per_m_params", "F1/M params", "{:.3g}"), ("inference_time_sec", "infer s", "{:.1f}"),
    ("inference_examples_per_s", "infer ex/s", "{:,.0f}"), ("adapter_mb", "adapter MB", "{:.3g}"),
    # Where and how it ran, and which memory `peak MB` counts ("cpu rss", "cuda allocated", ...).
    ("device", "device", "{}"), ("precision", "train prec.", "{}"), ("inference_precision", "infer prec.", "{}"),
    ("memory_kind", "memory", "{}"),
]


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def results_table(results: pd.DataFrame, title: str, columns=QUALITY) -> Table:
    """The best run of each method (chosen on validation, by the selection metric), with the given columns."""
    table = Table(title=title, header_style="bold")
    table.add_column("method")
    for _, header, _ in columns:
        table.add_column(header, justify="right")
    for method, row in best_per_method(results).iterrows():
        table.add_row(str(method), *(_cell(row.get(col), fmt) for col, _, fmt in columns))
    return table


def per_class_table(results: pd.DataFrame, label_names: list[str]) -> Table:
    """Per-class precision/recall/F1 and the confusion matrix (rows: true class) of each method's best run."""
    table = Table(title="per class, test set (P / R / F1); confusion matrix rows = true class", header_style="bold")
    table.add_column("method")
    for name in label_names:
        table.add_column(name, justify="right")
    table.add_column("confusion matrix", justify="right")
    for method, row in best_per_method(results).iterrows():
        cells = [f"{row[f'precision_{n}']:.3f} / {row[f'recall_{n}']:.3f} / {row[f'f1_{n}']:.3f}" for n in label_names]
        table.add_row(str(method), *cells, str(row["confusion_matrix"]))
    return table
