"""The report's figures, drawn with matplotlib's object API (no pyplot: no global state, no GUI).

Each method keeps one colour (Okabe-Ito, safe for colour-blind readers), one marker and one hatch
in every figure, so the figures read in grey print too. Each figure is saved as PNG and SVG.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from math import ceil
from pathlib import Path

# matplotlib logs "generated new fontManager" (INFO) when it builds its font cache, between our results.
logging.getLogger("matplotlib").setLevel(logging.WARNING)

import matplotlib  # noqa: E402
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import Bbox

from sendit.config import SELECTION_METRICS
from sendit.report.analysis import SENSITIVITY, Report, pareto_set, pretty, search_trials, variant_name
from sendit.results import selection_scores

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
HATCHES = ["", "//", "\\\\", "xx", "..", "--", "++", "oo"]
HEAT = "cividis"  # sequential, colour-blind safe and monotone in grey
RC = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
      "axes.grid": True, "grid.alpha": 0.3, "svg.fonttype": "none", "svg.hashsalt": "sendit",
      "hatch.linewidth": 0.8}


@dataclass(frozen=True)
class Style:
    color: str
    marker: str
    hatch: str


BASELINE = Style("#BBBBBB", "x", "")


@dataclass(frozen=True)
class Drawn:
    """A figure saved as `figures/<name>.png` and `.svg`."""

    name: str
    title: str
    caption: str
    png: Path


def styles(report: Report) -> dict[str, Style]:
    trained = [m for m in report.study.methods if m not in report.baselines]
    cycle = {m: Style(OKABE_ITO[i % 8], MARKERS[i % 8], HATCHES[i % 8]) for i, m in enumerate(trained)}
    return {m: cycle.get(m, BASELINE) for m in report.study.methods}


def draw_all(report: Report, out_dir: Path) -> list[Drawn]:
    """Draw every figure the study's data supports; skip the rest (one size: no size curve)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    style = styles(report)
    drawn = []
    with matplotlib.rc_context(RC):
        for name, title, draw in FIGURES:
            made = draw(report, style)
            if made is None:
                continue
            fig, caption = made
            png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
            fig.savefig(png, dpi=150, metadata={"Software": None})  # constrained layout: no tight bbox pass
            fig.savefig(svg, metadata={"Date": None, "Creator": None})
            drawn.append(Drawn(name, title, caption, png))
    return drawn


def _fmt(value: float) -> str:
    """A bar label: 0.0394, 5.34, 80.2, 1,420, 150k, 22.7M."""
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def _tick(value: float, _=None) -> str:
    """A log-axis tick: 0.01, 20, 500, 2k, 10M."""
    return f"{value / 1e6:g}M" if value >= 1e6 else f"{value / 1e3:g}k" if value >= 1e3 else f"{value:g}"


def _log_axis(ax, which: str, values) -> None:
    """Log scale with plain tick labels (20, 50, 100k) instead of 2×10¹; finer steps on short ranges."""
    positive = np.asarray([v for v in values if v > 0])
    decades = np.log10(positive.max() / positive.min()) if len(positive) else 0
    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_locator(LogLocator(subs=(1, 2, 3, 5) if decades < 1.5 else (1, 2, 5) if decades < 3 else (1,)))
    axis.set_major_formatter(FuncFormatter(_tick))
    axis.set_minor_formatter(NullFormatter())


def cost_scatter(report: Report, style: dict[str, Style]):
    """Accuracy against each cost, with the Pareto frontier: what each point of accuracy costs."""
    summary = report.summary
    trained = summary.drop(index=list(report.baselines))
    if trained.empty:
        return None
    panels = [("runtime_sec", "training time (s, log scale)", True),
              ("peak_memory_mb", "peak memory (MB)", False),
              ("trainable_params", "trainable parameters (count, log scale)", True)]
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    FigureCanvasAgg(fig)  # a renderer, to measure labels
    axes = fig.subplots(1, 3, sharey=True)
    accuracy = 100 * trained["test_accuracy"]
    for ax, (cost, label, log) in zip(axes, panels):
        front = pareto_set(trained, cost)
        _frontier(ax, trained.loc[front, cost], accuracy[front])
        for method, row in trained.iterrows():
            s = style[method]
            ax.errorbar(row[cost], accuracy[method], xerr=_spread(row, cost), yerr=_spread(row, "test_accuracy", 100),
                        fmt=s.marker, color=s.color, markersize=9, markeredgecolor="black", ecolor="black",
                        elinewidth=0.8, capsize=3, zorder=3)
        if log:
            _log_axis(ax, "x", trained[cost])
        ax.margins(x=0.15, y=0.15)
        ax.set_xlabel(label)
        ax.set_title("Pareto set: " + " → ".join(map(pretty, front)), fontsize=8.5)
    axes[0].set_ylabel("test accuracy (%)")
    low, high = axes[0].get_ylim()  # the trained methods set the scale: a far-off baseline would flatten them
    handles = [FRONTIER]
    for base in report.baselines:
        value = 100 * summary.loc[base, "test_accuracy"]
        shown = low <= value <= high
        for ax in axes if shown else []:
            ax.axhline(value, color="grey", linestyle=":", linewidth=1.2)
        handles.append(Line2D([], [], color="grey", linestyle=":", label=f"{pretty(base)} baseline: {value:.1f}%"
                              + ("" if shown else ", below the axis")))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.draw_without_rendering()  # lay out first: labels are placed where they will be drawn
    for ax, (cost, _, _) in zip(axes, panels):
        front = pareto_set(trained, cost)
        _label_points(ax, [(row[cost], accuracy[m], pretty(m)) for m, row in trained.iterrows()],
                      _step(ax, trained.loc[front, cost], accuracy[front]))
    caption = ("Test accuracy against training time, peak memory and trainable parameters of each method's "
               f"selected configuration ({_seeds_note(trained)}). Circled methods are on the Pareto frontier: no "
               "other method is both more accurate and cheaper.")
    return fig, caption


FRONTIER = Line2D([], [], color="black", linestyle="--", marker="o", markerfacecolor="none", markersize=12,
                  label="Pareto frontier (higher accuracy, lower cost)")


def _frontier(ax, costs, accuracies) -> None:
    """The Pareto frontier (points cheapest first): a dashed step through them, each circled."""
    ax.step(costs, accuracies, where="post", color="black", linestyle="--", linewidth=1, zorder=1)
    ax.scatter(costs, accuracies, s=260, facecolors="none", edgecolors="black", linewidths=1, zorder=2)


def deploy_scatter(report: Report, style: dict[str, Style]):
    """Accuracy against the latency of one text, for each method's selected run deployed as each variant."""
    if report.deploy is None:
        return None
    measured = report.deploy[report.deploy["status"] == "measured"].set_index("name")
    if measured.empty:
        return None
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    FigureCanvasAgg(fig)  # a renderer, to measure labels
    ax = fig.subplots()
    accuracy = 100 * measured["test_accuracy"]
    front = measured[measured["pareto"]].sort_values("latency_p50_ms")
    _frontier(ax, front["latency_p50_ms"], accuracy[front.index])
    for name, row in measured.iterrows():
        s = style[row["method"]]
        ax.plot(row["latency_p50_ms"], accuracy[name], s.marker, color=s.color, markersize=9,
                markeredgecolor="black", zorder=3)
    _log_axis(ax, "x", measured["latency_p50_ms"])
    ax.margins(x=0.2, y=0.15)
    ax.set_xlabel("latency of one text alone, p50 (ms, log scale)")
    ax.set_ylabel("test accuracy (%)")
    methods = list(dict.fromkeys(measured["method"]))
    handles = [FRONTIER] + [Line2D([], [], linestyle="", marker=style[m].marker, color=style[m].color,
                                   markeredgecolor="black", label=pretty(m)) for m in methods]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), frameon=False)
    fig.draw_without_rendering()  # lay out first: labels are placed where they will be drawn
    _label_points(ax, [(row["latency_p50_ms"], accuracy[name], variant_name(row["variant"]))
                       for name, row in measured.iterrows()],
                  _step(ax, front["latency_p50_ms"], accuracy[front.index]))
    threads = ", ".join(f"{t:g}" for t in measured["threads"].unique())
    skipped = report.deploy[report.deploy["status"] == "skipped"]
    caption = ("Test accuracy against the median time to label one text alone (batch 1, cleaning and tokenising "
               f"included; {threads} threads on this CPU) of each method's selected run deployed as torch and ONNX "
               "variants. Circled variants are on the Pareto frontier: no other is both more accurate and faster."
               + (f" {len(skipped)} variants were skipped; the deployment table gives why." if len(skipped) else ""))
    return fig, caption


# Where a point's label may go, in points from it: below right, above right, below left, above left.
LABEL_OFFSETS = [(9, -14, "left"), (9, 5, "left"), (-9, -14, "right"), (-9, 5, "right")]


def _step(ax, xs, ys) -> np.ndarray:
    """Display coordinates along the drawn frontier (a post step), a few pixels apart."""
    xs, ys = list(xs), list(ys)
    corners = [v for i in range(len(xs) - 1) for v in ((xs[i], ys[i]), (xs[i + 1], ys[i]))] + [(xs[-1], ys[-1])]
    pixels = ax.transData.transform(corners)
    return np.vstack([pixels, *(np.linspace(a, b, 40) for a, b in zip(pixels[:-1], pixels[1:]))])


def _label_points(ax, points: list[tuple[float, float, str]], line: np.ndarray) -> None:
    """Label each point on the first side where its label hits no marker, no line, no earlier label
    and stays inside the axes (else the side with the fewest clashes): close methods stay legible."""
    renderer = ax.figure.canvas.get_renderer()
    pad = renderer.points_to_pixels(8)
    centres = [ax.transData.transform((x, y)) for x, y, _ in points]
    taken = [Bbox.from_extents(cx - pad, cy - pad, cx + pad, cy + pad) for cx, cy in centres]
    taken += [Bbox.from_extents(x - 1, y - 1, x + 1, y + 1) for x, y in line]
    area = ax.get_window_extent(renderer)

    def clashes(box: Bbox) -> int:
        inside = area.x0 <= box.x0 and box.x1 <= area.x1 and area.y0 <= box.y0 and box.y1 <= area.y1
        return sum(box.overlaps(other) for other in taken) + (0 if inside else len(taken) + 1)

    for x, y, text in points:
        options = []
        for dx, dy, ha in LABEL_OFFSETS:
            label = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, fontsize=8)
            options.append((clashes(label.get_window_extent(renderer)), len(options), label))
            label.remove()
        _, _, best = min(options, key=lambda option: option[:2])
        ax.add_artist(best)
        taken.append(best.get_window_extent(renderer))


def _spread(row: pd.Series, metric: str, scale: float = 1) -> float | None:
    """The error bar of a summary row: its std over seeds, none for a single seed."""
    return scale * row[f"{metric}_std"] if row["n"] > 1 else None


def _seeds_note(summary: pd.DataFrame) -> str:
    low, high = int(summary["n"].min()), int(summary["n"].max())
    if high == 1:
        return "one seed, n=1: no error bars"
    return f"mean ± std over {low if low == high else f'{low}–{high}'} seeds"


# (metric, axis label, scale, log axis)
QUALITY = [("test_accuracy", "test accuracy (%)", 100, False),
           ("test_f1_macro", "test macro-F1 (%)", 100, False),
           ("f1_per_m_params", "macro-F1 (0–1) per million\ntrainable parameters (log scale)", 1, True)]
COST = [("runtime_sec", "training time (s)", 1, False),
        ("peak_memory_mb", "peak memory (MB)", 1, False),
        ("trainable_params", "trainable parameters\n(count, log scale)", 1, True),
        ("inference_examples_per_s", "inference speed (examples/s)", 1, False)]


def _bars(report: Report, style: dict[str, Style], panels: list[tuple], what: str):
    summary = report.summary
    methods = list(summary.index)
    fig = Figure(figsize=(3.1 * len(panels), 3.6), layout="constrained")
    for ax, (metric, label, scale, log) in zip(fig.subplots(1, len(panels)), panels):
        if log:
            _log_axis(ax, "y", summary[metric].dropna() * scale)
        for i, method in enumerate(methods):
            value, spread = summary.loc[method, metric] * scale, _spread(summary.loc[method], metric, scale)
            if pd.isna(value) or (log and value <= 0):
                ax.annotate("n/a" if pd.isna(value) else "0", (i, 0.02), xycoords=("data", "axes fraction"),
                            ha="center", fontsize=7.5, color="dimgrey")
                continue
            s = style[method]
            ax.bar(i, value, color=s.color, hatch=s.hatch, edgecolor="black", hatchcolor="black",
                   linewidth=0.6, yerr=spread, capsize=3, error_kw={"elinewidth": 0.8})
            shown = "≈0" if not log and value < 1e-3 * summary[metric].max() * scale else _fmt(value)
            ax.annotate(f"{shown}\nn={summary.loc[method, 'n']:.0f}", (i, value + (spread or 0)),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7.5)
        ax.set_xticks(range(len(methods)), [pretty(m) for m in methods], rotation=30, ha="right")
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_ylabel(label)
        ax.grid(axis="x", visible=False)
        smallest = (summary[metric] * scale)[lambda v: v > 0].min()
        if log and pd.notna(smallest):  # bars start a decade below the smallest value; room for labels on top
            ax.set_ylim(10 ** (np.floor(np.log10(smallest)) - 1), ax.get_ylim()[1] * 8)
        elif not log:
            ax.set_ylim(0, ax.get_ylim()[1] * 1.18)
    caption = f"{what} of each method's selected configuration ({_seeds_note(summary)}; n = seeds)."
    return fig, caption


def quality_bars(report: Report, style: dict[str, Style]):
    return _bars(report, style, QUALITY, "Test accuracy, macro-F1 and macro-F1 per million trainable parameters")


def cost_bars(report: Report, style: dict[str, Style]):
    return _bars(report, style, COST, "Training time, peak memory (RSS), trainable parameters and inference speed")


def learning_curves(report: Report, style: dict[str, Style]):
    """Validation accuracy, macro-F1 and loss per epoch of each method's selected run."""
    logs = {m: report.study.epoch_log(m) for m in report.study.methods}
    logs = {m: log for m, log in logs.items() if not log.empty}
    if not logs:
        return None
    fig = Figure(figsize=(12, 3.9), layout="constrained")
    acc_ax, f1_ax, loss_ax = fig.subplots(1, 3)
    for method, log in logs.items():
        s = style[method]
        line = {"color": s.color, "marker": s.marker, "markeredgecolor": "black", "markersize": 6}
        acc_ax.plot(log["epoch"], 100 * log["val_accuracy"], **line)
        f1_ax.plot(log["epoch"], 100 * log["val_f1"], **line)
        loss_ax.plot(log["epoch"], log["val_loss"], **line)
        loss_ax.plot(log["epoch"], log["train_loss"], **{**line, "linestyle": "--", "markerfacecolor": "none"})
    last = max(log["epoch"].max() for log in logs.values())
    for ax, label in ((acc_ax, "validation accuracy (%)"), (f1_ax, "validation macro-F1 (%)"),
                      (loss_ax, "cross-entropy loss (nats)")):
        ax.set_xlabel("epoch (passes over the training data)")
        ax.set_ylabel(label)
        ax.set_xlim(0, last * 1.08)  # from the start of training, so a single validation reads as "after 1 epoch"
        ax.margins(y=0.15)
    handles = [Line2D([], [], color=style[m].color, marker=style[m].marker, markeredgecolor="black",
                      label=pretty(m)) for m in logs]
    handles += [Line2D([], [], color="black", label="loss: validation"),
                Line2D([], [], color="black", linestyle="--", marker="o", markerfacecolor="none",
                       label="loss: training (mean since the previous validation)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    single = all(len(log) == 1 for log in logs.values())
    caption = ("Validation accuracy, macro-F1 and loss at each validation of each method's selected run"
               + (" (one validation per run: more epochs or `train.evals_per_epoch` draw a curve)." if single else "."))
    return fig, caption


def confusion_matrices(report: Report, style: dict[str, Style]):
    """One confusion matrix per method (its selected run): share of each true class, with counts."""
    names = report.study.label_names
    k = len(names)
    methods = report.study.methods
    cols = len(methods) if len(methods) <= 5 else 4
    rows = ceil(len(methods) / cols)
    fig = Figure(figsize=(2.9 * cols + 1, 3.1 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for index, (ax, method) in enumerate(zip(axes, methods)):
        frame = report.study.predictions[method]
        counts = np.zeros((k, k), dtype=int)
        np.add.at(counts, (frame["label"].to_numpy(), frame["pred"].to_numpy()), 1)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(100 * share, cmap=HEAT, vmin=0, vmax=100)
        for (i, j), value in np.ndenumerate(share):
            ax.text(j, i, f"{value:.0%}\n{counts[i, j]:,}", ha="center", va="center", fontsize=8,
                    color="white" if value < 0.5 else "black")
        ax.set_xticks(range(k), names, rotation=30 if k > 2 else 0)
        ax.set_yticks(range(k), names)
        ax.set_xlabel("predicted class")
        if index % cols == 0:
            ax.set_ylabel("true class")
        ax.grid(False)
        ax.set_title(f"{pretty(method)}\naccuracy {100 * np.trace(counts) / counts.sum():.1f}%")
    for ax in axes[len(methods):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes[:len(methods)].tolist(), label="share of the true class (%)", shrink=0.8)
    caption = (f"Confusion matrices on the test set, selected run of each method (by validation "
               f"{SELECTION_METRICS[report.study.selection]}): each cell is the share of its true class (row) and "
               "the count of examples.")
    return fig, caption


def f1_vs_size(report: Report, style: dict[str, Style]):
    """Test macro-F1 against the number of training examples with its 95% interval, when the study varies it."""
    if report.by_size is None:
        return None
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for method in report.study.methods:
        points = report.by_size[report.by_size["method"] == method].sort_values("train_size")
        mean = 100 * points["test_f1_macro_mean"]
        interval = [mean - 100 * points["test_f1_macro_ci_seeds_low"],
                    100 * points["test_f1_macro_ci_seeds_high"] - mean]
        s = style[method]
        ax.errorbar(points["train_size"], mean, yerr=interval, color=s.color, marker=s.marker, markeredgecolor="black",
                    capsize=3, label=pretty(method))
    _log_axis(ax, "x", report.by_size["train_size"])
    ax.set_xlabel("training examples (count, log scale)")
    ax.set_ylabel("test macro-F1 (%)")
    ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig, ("Test macro-F1 against training set size: per size, each method's configuration selected on "
                 "validation, mean over its seeds with the 95% interval over seeds and test sample (over the test "
                 "sample alone where a size has one seed).")


def loss_by_size(report: Report, style: dict[str, Style]):
    """Training and validation loss of each method's selection at every training set size, one panel per method."""
    if report.by_size is None:
        return None
    trained = [m for m in report.study.methods if m not in report.baselines]
    sizes = sorted(report.by_size["train_size"].unique())
    shade = dict(zip(sizes, matplotlib.colormaps[HEAT](np.linspace(0.05, 0.85, len(sizes)))))
    cols = min(len(trained), 4)
    fig = Figure(figsize=(3.6 * cols + 0.6, 3.4 * ceil(len(trained) / cols) + 0.5), layout="constrained")
    axes = fig.subplots(ceil(len(trained) / cols), cols, squeeze=False, sharey=True).ravel()
    for ax, method in zip(axes, trained):
        for row in report.by_size[report.by_size["method"] == method].sort_values("train_size").itertuples():
            log = report.study.run_epoch_log(row.best_run)
            ax.plot(log["epoch"], log["val_loss"], color=shade[row.train_size], marker="o", markersize=4)
            ax.plot(log["epoch"], log["train_loss"], color=shade[row.train_size], linestyle="--")
        ax.set_title(pretty(method))
        ax.set_xlabel("epoch (passes over its training data)")
    for ax in axes[len(trained):]:
        ax.set_visible(False)
    axes[0].set_ylabel("cross-entropy loss (nats)")
    handles = [Line2D([], [], color=shade[size], label=f"{size:,.0f} examples") for size in sizes]
    handles += [Line2D([], [], color="black", marker="o", markersize=4, label="validation"),
                Line2D([], [], color="black", linestyle="--", label="training (mean since the previous validation)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), frameon=False)
    return fig, ("Loss at each validation of each method's configuration selected at every training set size "
                 "(darker: fewer examples); an epoch is a pass over that size's examples, so larger sets take more "
                 "steps per epoch.")


def grid_heatmaps(report: Report, style: dict[str, Style]):
    """The learning rate x batch size grid of each method that tried more than one, on its largest training set."""
    grids, metric = {}, SELECTION_METRICS[report.study.selection]
    results = report.study.results
    grid_runs = results[results["trial"].isna()] if "trial" in results else results  # not a search's trials
    for method, runs in grid_runs.assign(score=selection_scores(grid_runs)).groupby("method", sort=False):
        runs = runs[runs["train_size"] == runs["train_size"].max()]
        if len(runs[["lr", "batch_size"]].drop_duplicates()) > 1:
            scores = runs.groupby("config_id").agg(lr=("lr", "first"), batch_size=("batch_size", "first"),
                                                   score=("score", "mean"))  # mean over seeds
            grids[method] = 100 * scores.pivot_table(index="lr", columns="batch_size", values="score", aggfunc="max")
    if not grids:
        return None
    fig = Figure(figsize=(4.2 * len(grids), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(grids)))
    for ax, (method, table) in zip(axes, grids.items()):
        values = table.to_numpy()
        image = ax.imshow(values, cmap=HEAT, aspect="auto")
        middle = (np.nanmin(values) + np.nanmax(values)) / 2
        for (i, j), value in np.ndenumerate(values):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if value < middle else "black")  # cividis is dark at the low end
        ax.set_xticks(range(table.shape[1]), [f"{b:g}" for b in table.columns])
        ax.set_yticks(range(table.shape[0]), [f"{lr:g}" for lr in table.index])
        ax.set_xlabel("batch size (examples)")
        ax.set_ylabel("learning rate")
        ax.grid(False)
        ax.set_title(pretty(method))
        fig.colorbar(image, ax=ax, label=f"validation {metric} (%)")
    return fig, (f"The hyperparameter grid: validation {metric} (the selection metric) of each learning rate and "
                 "batch size, mean over seeds (the best over any other setting), on the largest training set.")


def tuning_sensitivity(report: Report, style: dict[str, Style]):
    """Validation score against learning rate for every search trial, one panel per searched method."""
    trials = search_trials(report.study.results)
    if trials.empty or report.tuning is None:
        return None
    methods = list(report.tuning.index)
    fig = Figure(figsize=(min(13, 3.6 * len(methods)), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(methods), sharey=True))
    for ax, method in zip(axes, methods):
        runs, s, row = trials[trials["method"] == method], style[method], report.tuning.loc[method]
        finished, pruned = runs[~runs["pruned"]], runs[runs["pruned"]]
        if pd.notna(row["best_score"]):
            best = 100 * row["best_score"]
            ax.axhspan(best - 100 * SENSITIVITY, best, color=s.color, alpha=0.12, lw=0)
            ax.axvspan(row["near_lr_low"], row["near_lr_high"], color=s.color, alpha=0.08, lw=0)
        ax.scatter(finished["lr"], 100 * finished["score"], color=s.color, marker=s.marker,
                   edgecolor="black", linewidth=0.5, zorder=3, label="finished")
        ax.scatter(pruned["lr"], 100 * pruned["score"], facecolor="none", edgecolor=s.color, marker=s.marker,
                   zorder=3, label="pruned (score when stopped)")
        _log_axis(ax, "x", runs["lr"])
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 3)))  # "2e-05" and "3e-05" side by side would collide
        ax.set_title(pretty(method))
        ax.set_xlabel("learning rate (log scale)")
    axes[0].set_ylabel(f"validation {SELECTION_METRICS[report.study.selection]} (%)")
    axes[-1].legend(frameon=False, loc="lower right", fontsize=8)
    return fig, ("Tuning sensitivity: each search trial's best validation score against its learning rate; hollow "
                 "markers were pruned (the score they had when stopped). Shaded: within 1 point of the method's "
                 "best, and the learning rates of the finished trials that reached it.")


def tuning_progress(report: Report, style: dict[str, Style]):
    """The best validation score found so far against the training examples the search has spent."""
    trials = search_trials(report.study.results)
    if trials.empty:
        return None
    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for method, runs in trials.groupby("method", sort=False):
        spent = runs["train_examples"].cumsum()
        best = runs["score"].where(~runs["pruned"]).cummax()
        s = style[method]
        ax.step(spent, 100 * best, where="post", color=s.color, label=pretty(method))
        ax.scatter(spent, 100 * runs["score"], color=s.color, marker=s.marker, s=14, alpha=0.5)
    ax.set_xlabel("training examples spent by the search (cumulative)")
    ax.set_ylabel(f"best validation {SELECTION_METRICS[report.study.selection]} so far (%)")
    ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig, ("Search progress: the best validation score of each method's finished trials so far (line) and "
                 "each trial's score (dots) against the training examples spent; every method had the same budget.")


# (file name, title, draw) in page order: the trade-off first, then the detail behind it.
FIGURES = [
    ("pareto", "Accuracy versus cost", cost_scatter),
    ("deploy", "Accuracy versus latency, deployed", deploy_scatter),
    ("quality", "Quality per method", quality_bars),
    ("cost", "Cost per method", cost_bars),
    ("learning_curves", "Learning curves", learning_curves),
    ("confusion_matrices", "Confusion matrices", confusion_matrices),
    ("f1_vs_size", "Macro-F1 versus training set size", f1_vs_size),
    ("loss_by_size", "Loss curves at each training set size", loss_by_size),
    ("grid", "Hyperparameter grid", grid_heatmaps),
    ("tuning_sensitivity", "Tuning sensitivity", tuning_sensitivity),
    ("tuning_progress", "Search progress", tuning_progress),
]
