"""The report as one self-contained HTML page (figures inlined as base64 PNG) and as Markdown.

Tables are built once as rows of formatted strings and rendered twice, so the page and the
Markdown summary cannot disagree. A few lines of script mark <body> with `data-images-ok` once
every image has loaded: the browser test reads that back.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html import escape

import pandas as pd

from sendit.config import SELECTION_METRICS
from sendit.provenance import describe
from sendit.report.analysis import ALPHA, Report, config_keys, most_forgiving, pretty, size_column, variant_name
from sendit.report.figures import Drawn

# (column, header, scale, format): the results in two tables, quality then cost, so neither needs scrolling.
QUALITY = [("test_accuracy", "accuracy %", 100, "{:.1f}"), ("test_f1_macro", "macro-F1 %", 100, "{:.1f}"),
           ("test_f1_weighted", "weighted F1 %", 100, "{:.1f}"), ("test_recall_macro", "macro recall %", 100, "{:.1f}"),
           ("best_val_f1", "val F1 %", 100, "{:.1f}")]
INTERVAL_NOTE = ("95% interval of the seed-averaged score over test examples (bootstrap) and over seeds (Student's t, "
                 "added in quadrature; the test examples' alone for one seed)")
COST = [("runtime_sec", "training s", 1, "{:,.0f}"), ("peak_memory_mb", "peak memory MB", 1, "{:,.0f}"),
        ("trainable_params", "trainable params", 1, "{:,.0f}"), ("f1_per_m_params", "F1 per M params", 1, "{:.3g}"),
        ("inference_examples_per_s", "inference ex/s", 1, "{:,.0f}"), ("adapter_mb", "adapter MB", 1, "{:,.3f}")]
KEYS = {"lr": ("lr", "{:g}"), "batch_size": ("batch", "{:g}"), "epochs": ("epochs", "{:g}"),
        "train_size": ("train size", "{:,.0f}")}  # configuration columns: (header, format)
# Where and how each run ran: a time or memory figure means little without them.
CONTEXT = {"device": "device", "precision": "training precision", "inference_precision": "inference precision",
           "memory_kind": "peak memory counts"}


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]  # right-aligned columns
    highlight: set[int] = field(default_factory=set)  # rows to emphasise: the recommended method


def _cell(value, fmt: str = "{}", scale: float = 1) -> str:
    return "–" if value is None or pd.isna(value) else fmt.format(value * scale)


def _metric_cells(row: pd.Series, specs: list[tuple]) -> list[str]:
    """Mean ± std over seeds (± only where it varies: not for one seed, nor for a constant parameter
    count), followed by the 95% interval where the summary has one."""
    cells = []
    for metric, _, scale, fmt in specs:
        cell = _cell(row[metric], fmt, scale)
        if row["n"] > 1 and row[f"{metric}_std"] > 0:
            cell += " ± " + _cell(row[f"{metric}_std"], fmt, scale)
        cells.append(cell)
        if f"{metric}_ci_low" in row:
            low, high = (_cell(row[f"{metric}_ci_{end}"], fmt, scale) for end in ("low", "high"))
            cells.append(f"{low}–{high}")
    return cells


def _metric_headers(summary: pd.DataFrame, specs: list[tuple]) -> list[str]:
    return [h for metric, header, _, _ in specs
            for h in ([header, "95% CI"] if f"{metric}_ci_low" in summary else [header])]


def _score_header(metric: str) -> str:
    """The results column of the selection metric's validation score: val F1 is in QUALITY already."""
    return "val F1" if metric == "f1_macro" else f"val {SELECTION_METRICS[metric]}"


def _quality_specs(report: Report) -> list[tuple]:
    """QUALITY, and the validation score the study selected on where that is not macro-F1."""
    metric = report.study.selection
    return QUALITY + ([] if metric == "f1_macro" else
                      [("best_val_score", f"{_score_header(metric)} %", 100, "{:.1f}")])


def _selected_on(report: Report) -> str:
    """What chose each method's configuration, as the page says it, naming its column."""
    metric = report.study.selection
    return f"validation {SELECTION_METRICS[metric]} ({_score_header(metric)})"


def _pick(report: Report) -> set[int]:
    method = report.recommendation.method
    return {list(report.summary.index).index(method)} if method else set()


def quality_table(report: Report) -> Table:
    """Per method: its selected configuration and every quality metric."""
    summary, keys = report.summary, config_keys(report.study.results)
    specs = _quality_specs(report)
    rows = [[pretty(method), f"{row['n']:.0f}", *(_cell(row[k], KEYS[k][1]) for k in keys),
             *_metric_cells(row, specs)] for method, row in summary.iterrows()]
    headers = ["method", "seeds", *(KEYS[k][0] for k in keys), *_metric_headers(summary, specs)]
    return Table(headers, rows, [False] + [True] * (len(headers) - 1), _pick(report))


def cost_table(report: Report) -> Table:
    """Per method: every cost, and the Pareto sets it belongs to."""
    rec = report.recommendation
    rows = []
    for method, row in report.summary.iterrows():
        fronts = [name for name, front in (("time", rec.pareto_time), ("params", rec.pareto_params)) if method in front]
        rows.append([pretty(method), *_metric_cells(row, COST), ", ".join(fronts) or "–"])
    headers = ["method", *_metric_headers(report.summary, COST), "Pareto set (vs)"]
    return Table(headers, rows, [False] + [True] * (len(headers) - 2) + [False], _pick(report))


def deploy_table(report: Report) -> Table:
    """Per method and deployment variant: quality against torch fp32, speed, size; or why it was skipped."""
    rows = []
    for r in report.deploy.itertuples():
        measured = r.status == "measured"
        numbers = ([_cell(r.test_accuracy, "{:.1f}", 100), _cell(r.test_f1_macro, "{:.1f}", 100),
                    _cell(r.agreement, "{:.1f}", 100), _cell(r.mcnemar_p, "{:.2g}"), _cell(r.examples_per_s, "{:,.0f}"),
                    _cell(r.latency_p50_ms, "{:.2f}"), _cell(r.latency_p99_ms, "{:.2f}"), _cell(r.size_mb, "{:,.1f}")]
                   if measured else ["–"] * 8)
        rows.append([pretty(r.method), variant_name(r.variant), *numbers,
                     "yes" if r.pareto else "–", "" if measured else f"skipped: {r.reason}"])
    batch = ", ".join(f"{b:g}" for b in report.deploy["batch_size"].unique())
    headers = ["method", "variant", "accuracy %", "macro-F1 %", "agreement with torch fp32 %",
               "McNemar p vs torch fp32", f"ex/s (batch {batch})", "p50 ms (batch 1)", "p99 ms (batch 1)", "size MB",
               "Pareto", "note"]
    deployed = report.recommendation.deployed
    names = list(report.deploy["name"])
    return Table(headers, rows, [False, False] + [True] * 8 + [False, False],
                 {names.index(deployed)} if deployed else set())


def pairwise_table(report: Report) -> Table:
    rows = []
    for p in report.pairs.itertuples():
        better = p.method_a if p.only_a_correct > p.only_b_correct else p.method_b
        rows.append([pretty(p.method_a), pretty(p.method_b), p.seeds, _cell(p.accuracy_a, "{:.1f}", 100),
                     _cell(p.accuracy_b, "{:.1f}", 100), _cell(p.accuracy_a - p.accuracy_b, "{:+.1f}", 100),
                     f"{p.only_a_correct:,}", f"{p.only_b_correct:,}", _cell(p.p_value, "{:.2g}"),
                     f"{pretty(better)} better" if p.significant else "no significant difference"])
    headers = ["A", "B", "seeds", "A accuracy %", "B accuracy %", "A − B points", "only A right", "only B right",
               "p", "verdict"]
    return Table(headers, rows, [False, False, False] + [True] * 6 + [False])


def runs_table(report: Report) -> Table:
    """Every run of the study, grid and seeds included, with the same metrics as the summary."""
    results = report.study.results
    keys = [k for k in KEYS if k in results]
    specs = [spec for spec in _quality_specs(report) + COST if spec[0] in results]
    context = [column for column in CONTEXT if column in results]
    rows = [[row["run_id"], pretty(row["method"]), _cell(row["seed"], "{:g}"),
             *(_cell(row[k], KEYS[k][1]) for k in keys),
             *(_cell(row[metric], fmt, scale) for metric, _, scale, fmt in specs),
             *(_cell(row[column]) for column in context)] for _, row in results.iterrows()]
    headers = ["run", "method", "seed", *(KEYS[k][0] for k in keys), *(header for _, header, _, _ in specs),
               *(CONTEXT[column] for column in context)]
    return Table(headers, rows, [False, False] + [True] * (len(headers) - 2 - len(context)) + [False] * len(context))


def group_table(accuracy: pd.DataFrame, gap: tuple[str, str] | None = None) -> Table:
    """Accuracy (and count) of each method on each group of test texts, e.g. with/without negation."""
    groups = list(accuracy["accuracy"].columns)
    rows = []
    for method in accuracy.index:
        cells = [pretty(method)] + [f"{_cell(accuracy.loc[method, ('accuracy', g)], '{:.1f}', 100)} "
                                    f"(n={_cell(accuracy.loc[method, ('n', g)], '{:.0f}')})" for g in groups]
        if gap:
            cells.append(_cell(accuracy.loc[method, ("accuracy", gap[0])] - accuracy.loc[method, ("accuracy", gap[1])],
                               "{:+.1f}", 100))
        rows.append(cells)
    headers = ["method", *(f"accuracy % {g}" for g in groups)] + (["difference, points"] if gap else [])
    return Table(headers, rows, [False] + [True] * (len(headers) - 1))


def tuning_table(report: Report) -> Table:
    """Per searched method: the budget it spent, its best trial, and the learning rates within a point of it."""
    rows = []
    for method, row in report.tuning.iterrows():
        near = (f"{row.near_lr_low:.3g} to {row.near_lr_high:.3g} (x{row.near_lr_high / row.near_lr_low:.3g})"
                if pd.notna(row.near_lr_low) else "n/a")
        rows.append([pretty(method), f"{row.trials:.0f}", f"{row.pruned:.0f}", f"{row.train_examples:,.0f}",
                     _cell(row.seconds, "{:,.0f}"), _cell(row.best_score, "{:.1f}", 100), _cell(row.best_lr, "{:.3g}"),
                     near, _cell(row.near_share, "{:.0f}%", 100)])
    headers = ["method", "trials", "pruned", "training examples", "training time (s, all trials)", "best val score %", "its lr",
               "lr within 1 point of best", "finished trials within 1 point"]
    return Table(headers, rows, [False] + [True] * 6 + [False, True])


def _tuning(report: Report) -> str:
    forgiving = most_forgiving(report.tuning)
    verdict = (f"<p>Most forgiving to tune: <b>{escape(pretty(forgiving))}</b> (the widest range of learning "
               "rates within a point of its best).</p>" if forgiving else "")
    return ("<p class=note>Every method got the same search budget; a pruned trial stopped at a validation where "
            "its score lagged the other trials' (its score then shown). Trials run on one seed; the best "
            "configuration's re-runs on other seeds are in the results above.</p>"
            + verdict + to_html(tuning_table(report)))


def mistakes_table(mistakes: pd.DataFrame) -> Table:
    rows = [[f"{m.confidence:.1%}", str(m.label_name), str(m.pred_name), str(m.text)] for m in mistakes.itertuples()]
    return Table(["confidence", "true", "predicted", "text"], rows, [True, False, False, False])


def to_html(table: Table, css: str = "") -> str:
    def row(cells, tag, index=None):
        marked = ' class="pick"' if index in table.highlight else ""
        return f"<tr{marked}>" + "".join(f'<{tag}{" class=num" if num else ""}>{escape(c)}</{tag}>'
                                         for c, num in zip(cells, table.numeric)) + "</tr>"

    body = "\n".join(row(cells, "td", i) for i, cells in enumerate(table.rows))
    return (f'<div class="scroll"><table class="{css}"><thead>{row(table.headers, "th")}</thead>'
            f"<tbody>\n{body}\n</tbody></table></div>")


def to_markdown(table: Table) -> str:
    def row(cells):
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    rule = "|" + "|".join("---:" if num else "---" for num in table.numeric) + "|"
    rows = [row([f"**{cells[0]}**", *cells[1:]] if i in table.highlight else cells)
            for i, cells in enumerate(table.rows)]
    return "\n".join([row(table.headers), rule, *rows])


def _made_by(report: Report) -> str:
    """The footer: what made the runs (recorded in each run's metrics.json since provenance was added)."""
    record = report.study.info.get("provenance")
    return f"Made by {describe(record)}." if record else "Made by a sendit version that did not record provenance."


def _meta(report: Report) -> str:
    study, info = report.study, report.study.info
    splits = info.get("data_stats", {}).get("split_sizes", {})
    parts = [f"dataset {info['dataset']}" if info.get("dataset") else None,
             f"model {info['model']}" if info.get("model") else None,
             " / ".join(f"{name} {count:,}" for name, count in splits.items()) or None,
             f"classes: {', '.join(study.label_names)}",
             f"{len(study.results)} runs of {len(study.methods)} methods",
             f"training-set sizes {', '.join(f'{n:,.0f}' for n in sorted(study.results['train_size'].unique()))}"
             if size_column(study.results) else None,
             f"seeds {', '.join(str(s) for s in sorted(study.results['seed'].unique()))}"]
    return " · ".join(p for p in parts if p)


def _figure(drawn: Drawn) -> str:
    data = base64.b64encode(drawn.png.read_bytes()).decode("ascii")
    return (f'<figure id="fig-{drawn.name}" data-figure="{drawn.name}"><h3>{escape(drawn.title)}</h3>'
            f'<img src="data:image/png;base64,{data}" alt="{escape(drawn.title)}">'
            f'<figcaption>{escape(drawn.caption)} <span class="files">figures/{drawn.name}.png, '
            f".svg</span></figcaption></figure>")


DEPLOY_NOTE = ("Each method's selected run deployed on this CPU, measured on its test texts: agreement and McNemar "
               "against torch fp32's predictions; ex/s of the forward passes in length-sorted batches; latency to "
               "label one text alone, cleaning and tokenising included; size: torch's weights (base and adapter), "
               "or the ONNX export's files. The variant to deploy is highlighted.")


def _deployment(report: Report) -> str:
    if report.deploy is None:
        return ""
    return f"<h3>Deployment</h3><p class=note>{escape(DEPLOY_NOTE)}</p>" + to_html(deploy_table(report))


def _error_analysis(report: Report) -> str:
    parts = ["<p class=note>On the test set, the selected run of each method. Negation words: not, no, never, "
             "nothing, cannot, and contractions with or without their apostrophe (don't, dont, cant, isnt...).</p>",
             to_html(group_table(report.negation, ("with negation", "without negation")))]
    if report.subsets is not None:
        groups = list(report.subsets["accuracy"].columns)  # "test" first, then e.g. "sarcasm"
        gap = (groups[1], "test") if len(groups) == 2 else None
        parts += ["<h3>The test set beside the dataset's other evaluation sets</h3>",
                  to_html(group_table(report.subsets, gap))]
    parts.append("<h3>Most confident mistakes</h3>")
    for method, mistakes in report.mistakes.items():
        if not mistakes.empty:
            parts += [f"<h4>{escape(pretty(method))}</h4>", to_html(mistakes_table(mistakes), "texts")]
    return "\n".join(parts)


CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a1a1a;
       max-width: 1240px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { margin: 0 0 4px; font-size: 26px; } h2 { margin-top: 40px; border-bottom: 1px solid #ddd; }
h3 { margin: 24px 0 8px; } h4 { margin: 16px 0 6px; }
.meta, figcaption, .note { color: #555; font-size: 13.5px; }
.recommendation { background: #eef5fb; border-left: 5px solid #0072B2; padding: 14px 20px; margin: 20px 0; }
.recommendation .headline { font-size: 19px; font-weight: 600; margin: 0 0 8px; }
.recommendation ul { margin: 0; padding-left: 20px; }
nav a { margin-right: 14px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 4px 9px; border-bottom: 1px solid #e3e3e3; text-align: left; vertical-align: top; }
th { background: #f4f4f4; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.pick td { background: #fff6dd; font-weight: 600; }
td:first-child { white-space: nowrap; }
table.texts td:last-child { max-width: 640px; }
figure { margin: 28px 0; } figure img { max-width: 100%; height: auto; display: block; }
.files { font-family: ui-monospace, monospace; font-size: 12px; }
details summary { cursor: pointer; font-weight: 600; margin: 12px 0; }
"""

SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-images-ok", images.every(function (img) {
    return img.complete && img.naturalWidth > 0; }) ? "true" : "false");
});
"""


def render_html(report: Report, figures: list[Drawn]) -> str:
    rec, name = report.recommendation, escape(report.study.name)
    sections = [
        ("results", "Results", f"<p class=note>Test-set metrics of each method's configuration selected on "
         f"{escape(_selected_on(report))}, on the largest training set every method reached: mean ± std over "
         f"its seeds; {INTERVAL_NOTE}; the recommended method is highlighted.</p><h3>Quality</h3>"
         + to_html(quality_table(report)) + "<h3>Cost</h3>" + to_html(cost_table(report)) + _deployment(report)),
        ("significance", "Significance", f"<p class=note>Each pair of methods' selected configurations on the "
         "shared test set, seed by seed on the seeds both ran (accuracies: their mean; only A / only B right: "
         "summed over them). One seed: McNemar's test; several: its extension to the seed-averaged accuracy "
         f"(a sign-flip test per example), whose verdict follows the means. Significant at p &lt; {ALPHA}.</p>"
         + to_html(pairwise_table(report))),
        *([("tuning", "Tuning", _tuning(report))] if report.tuning is not None else []),
        ("figures", "Figures", "\n".join(map(_figure, figures))),
        ("errors", "Error analysis", _error_analysis(report)),
        ("runs", "Every run", f"<details><summary>{len(report.study.results)} runs</summary>"
         f"{to_html(runs_table(report))}</details>"),
    ]
    nav = " ".join(f'<a href="#{key}">{title}</a>' for key, title, _ in sections)
    body = "\n".join(f'<section id="{key}"><h2>{title}</h2>\n{html}</section>' for key, title, html in sections)
    details = "".join(f"<li>{escape(d)}</li>" for d in rec.details)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>sendit report: {name}</title><style>{CSS}</style></head>
<body>
<header><h1>sendit report: {name}</h1><p class="meta">{escape(_meta(report))}</p></header>
<section class="recommendation" id="recommendation">
<p class="headline">{escape(rec.headline)}</p><ul>{details}</ul></section>
<nav>{nav}</nav>
{body}
<footer class="meta">{escape(_made_by(report))}</footer>
<script>{SCRIPT}</script>
</body></html>
"""


def render_markdown(report: Report, figures: list[Drawn]) -> str:
    rec = report.recommendation
    lines = [f"# sendit report: {report.study.name}", "", _meta(report), "", f"**{rec.headline}**", "",
             *(f"- {d}" for d in rec.details), "", "## Results", "",
             f"Each method's configuration selected on {_selected_on(report)}: mean ± std over its seeds; "
             f"{INTERVAL_NOTE}.", "",
             to_markdown(quality_table(report)), "", to_markdown(cost_table(report)), "",
             *(["## Deployment", "", DEPLOY_NOTE, "", to_markdown(deploy_table(report)), ""]
               if report.deploy is not None else []),
             *(["## Tuning", "", to_markdown(tuning_table(report)), ""] if report.tuning is not None else []),
             "## Figures", "",
             *(f"![{f.title}](figures/{f.name}.png)\n\n{f.caption}\n" for f in figures),
             "The full report with significance tests and error analysis: report.html", "", "---", "",
             _made_by(report), ""]
    return "\n".join(lines)
