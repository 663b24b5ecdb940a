"""The report from study directories written by hand (no training): figures, page, recommendation."""
import json
import re
import shutil
import statistics
import xml.etree.ElementTree as ElementTree

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import seed_interval, seeds_and_test_interval
from matplotlib.image import imread
from typer.testing import CliRunner

from sendit.cli import app
from sendit.report import ReportError, analyse, load_study, track, write_report
from sendit.report.analysis import has_negation
from sendit.results import EXTRA_PREDICTIONS_FILE, write_results

LABELS = ["negative", "positive"]
TEXTS = ["i dont like mondays", "not bad at all", "what a great day", "cant wait for the weekend", "so tired of this",
         "never going back there", "love this song", "isnt it lovely", "worst service ever", "thanks for the follow"]
N_TEST = 400


def method_spec(accuracy, runtime, params, memory, lrs=(1e-3,), batch_sizes=(32,)):
    return {"accuracy": accuracy, "runtime": runtime, "params": params, "memory": memory,
            "lrs": lrs, "batch_sizes": batch_sizes}


# LoRA matches full fine-tuning for a fraction of the cost: it should be picked.
LORA_WINS = {"zero_shot": method_spec(0.50, 0.0, 0, 500), "lora": method_spec(0.875, 120, 150_000, 1100),
             "full": method_spec(0.88, 300, 22_700_000, 1400)}
# Full fine-tuning is far ahead; a grid for LoRA, three seeds, two dataset sizes, a sarcasm subset.
FULL_WINS = {"zero_shot": method_spec(0.50, 0.0, 0, 500), "head": method_spec(0.66, 25, 770, 900),
             "lora": method_spec(0.80, 120, 150_000, 1100, lrs=(5e-4, 1e-3), batch_sizes=(16, 32)),
             "full": method_spec(0.90, 300, 22_700_000, 1400)}


def build_study(root, name, methods, seeds=(1,), sizes=(None,), subset=False):
    """Write a study directory the way `sendit study` does: run directories, then write_results."""
    rng = np.random.default_rng(0)
    directory = root / name
    labels = rng.integers(0, 2, N_TEST)
    texts = [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(N_TEST)]
    difficulty = rng.random(N_TEST)  # shared by every method: their errors overlap, as real ones do
    (directory / "runs").mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump({
        "name": name, "data": {"dataset": "csv"}, "model": {"name": "tiny-bert"},
        "methods": [{"name": m} for m in methods]}))
    for method, spec in methods.items():
        for seed in seeds:
            for size in sizes:
                for lr in spec["lrs"]:
                    for batch in spec["batch_sizes"]:
                        shrink = 0.0 if size in (None, max(sizes)) else 0.05
                        tweak = 0.01 * (lr == spec["lrs"][0]) + 0.005 * (batch == spec["batch_sizes"][0])
                        accuracy = spec["accuracy"] - shrink - tweak
                        seed_noise = np.random.default_rng(seed).normal(0, 0.02, N_TEST) if len(seeds) > 1 else 0
                        correct = difficulty + seed_noise < accuracy
                        run_id = f"{method}-lr{lr:g}-bs{batch}-seed{seed}" + (f"-n{size}" if size else "")
                        write_run(directory / "runs" / run_id, method, lr, batch, seed, spec, labels, texts,
                                  correct, rng, subset, size or 3200)
    write_results(directory)
    return directory


PROVENANCE = {"sendit": "0.1.0", "git_commit": "0123456789abcdef", "python": "3.11.7", "torch": "2.13.0",
              "transformers": "5.23.0", "peft": "0.21.0", "accelerate": "1.15.0", "cpu": "Test CPU 9000",
              "gpu": None, "threads": 2}


def write_run(run_dir, method, lr, batch, seed, spec, labels, texts, correct, rng, subset, train_size):
    run_dir.mkdir()
    preds = np.where(correct, labels, 1 - labels)
    confidence = rng.uniform(0.5, 0.99, len(labels))
    prob_positive = np.where(preds == 1, confidence, 1 - confidence)
    frame = pd.DataFrame({"text": texts, "label": labels, "pred": preds,
                          "label_name": [LABELS[i] for i in labels], "pred_name": [LABELS[i] for i in preds],
                          "prob_negative": 1 - prob_positive, "prob_positive": prob_positive})
    frame.to_csv(run_dir / "predictions.csv", index=False)
    if subset:  # as SemEval's sarcasm tweets: an extra evaluation set, scored apart from test
        frame.iloc[::4].assign(subset="sarcasm").to_csv(run_dir / EXTRA_PREDICTIONS_FILE, index=False)
    accuracy = float(correct.mean())
    trained = method != "zero_shot"
    epochs = [1, 2, 3] if trained else []
    pd.DataFrame({"epoch": epochs, "phase": "train", "step": [10 * e for e in epochs],
                  "train_loss": [0.7 - 0.1 * e for e in epochs], "val_loss": [0.65 - 0.08 * e for e in epochs],
                  "val_accuracy": [accuracy - 0.03 * (3 - e) for e in epochs],
                  "val_f1": [accuracy - 0.03 * (3 - e) - 0.002 for e in epochs]},
                 columns=["epoch", "phase", "step", "train_loss", "val_loss", "val_accuracy", "val_f1"]
                 ).to_csv(run_dir / "epoch_log.csv", index=False)
    runtime = spec["runtime"] * (1 + 0.05 * seed) * (32 / batch)
    row = {"method": method, "base_method": method, "lr": lr if trained else None, "batch_size": batch,
           "epochs": 3.0, "seed": seed, "best_val_f1": accuracy - 0.002 + 0.001 * seed, "val_accuracy": accuracy,
           "best_epoch": 3.0 if trained else 0.0, "test_accuracy": accuracy, "test_f1_macro": accuracy - 0.001,
           "test_f1_weighted": accuracy - 0.001, "test_recall_macro": accuracy, "runtime_sec": runtime,
           "peak_memory_mb": spec["memory"] + 10 * seed, "memory_delta_mb": spec["memory"] / 2,
           "trainable_params": spec["params"], "total_params": 22_713_986,
           "f1_per_m_params": accuracy / (spec["params"] / 1e6) if trained else None,
           "inference_time_sec": 2.0, "inference_examples_per_s": len(labels) / 2.0, "adapter_mb": 0.5,
           "test_examples": len(labels), "device": "cpu", "precision": "fp32",
           "inference_precision": "fp32", "memory_kind": "cpu rss"}
    metrics = {"row": row, "test": {"accuracy": accuracy}, "label_names": LABELS,
               "data_stats": {"split_sizes": {"train": train_size, "val": 400, "test": len(labels)}},
               "provenance": PROVENANCE}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture(scope="module")
def lora_study(tmp_path_factory):
    """A one-seed study whose report is written by the `sendit report` command."""
    directory = build_study(tmp_path_factory.mktemp("report"), "lora_wins", LORA_WINS)
    out = CliRunner().invoke(app, ["report", str(directory)])
    assert out.exit_code == 0, out.output
    return directory, out.output


@pytest.fixture(scope="module")
def full_study(tmp_path_factory):
    directory = build_study(tmp_path_factory.mktemp("report"), "full_wins", FULL_WINS, seeds=(1, 2, 3),
                            sizes=(1000, 4000), subset=True)
    assert write_report(directory) == directory / "report.html"
    return directory


@pytest.fixture(scope="module")
def full_report(full_study):
    return analyse(load_study(full_study))


def check_figures(directory, expected):
    figures = directory / "figures"
    assert {p.stem for p in figures.glob("*.png")} == expected
    assert {p.stem for p in figures.glob("*.svg")} == expected
    page = (directory / "report.html").read_text()
    markdown = (directory / "report.md").read_text()
    for name in expected:
        png = figures / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = imread(png)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # drawn, not blank
        assert ElementTree.parse(figures / f"{name}.svg").getroot().tag.endswith("svg")
        assert f'data-figure="{name}"' in page
        assert f"figures/{name}.png" in markdown
    assert page.count('src="data:image/png;base64,') == len(expected)
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # nothing fetched


def test_report_command_on_a_one_seed_study(lora_study):
    directory, output = lora_study
    assert "Pick LoRA" in output and "report.html" in output
    check_figures(directory, {"pareto", "quality", "cost", "learning_curves", "confusion_matrices"})
    html = (directory / "report.html").read_text()
    assert html.index("Pick LoRA") < html.index("<table") < html.index("<img")  # recommendation, tables, figures
    assert "n=1" in html
    assert (directory / "lora_results.csv").is_file() and (directory / "full_epoch_logs.csv").is_file()


def test_runs_table_says_where_and_in_which_precision_each_run_ran(lora_study):
    from sendit.report.html import runs_table

    table = runs_table(analyse(load_study(lora_study[0])))
    row = dict(zip(table.headers, table.rows[0]))
    assert (row["device"], row["training precision"], row["inference precision"], row["peak memory counts"]) == (
        "cpu", "fp32", "fp32", "cpu rss")
    assert "training precision" in (lora_study[0] / "report.html").read_text()


def test_report_of_a_grid_over_seeds_and_sizes(full_study):
    check_figures(full_study, {"pareto", "quality", "cost", "learning_curves", "confusion_matrices",
                               "f1_vs_size", "loss_by_size", "grid"})
    html = (full_study / "report.html").read_text()
    assert "sarcasm" in html and "with negation" in html and "Most confident mistakes" in html


def test_a_sizes_study_still_running_is_reported_where_every_method_has_runs(tmp_path):
    """Full FT has not reached 4,000 examples yet: the methods are compared at 1,000 (pairwise.csv pairs runs
    of one size only; the report crashed looking for a pair across sizes), the size curve shows every run."""
    directory = build_study(tmp_path, "sizes_running", {"head": FULL_WINS["head"], "full": FULL_WINS["full"]},
                            sizes=(1000, 4000))
    shutil.rmtree(directory / "runs" / "full-lr0.001-bs32-seed1-n4000")
    write_results(directory)
    report = analyse(load_study(directory))
    assert report.summary["train_size"].tolist() == [1000, 1000]
    assert report.recommendation.method == "full"
    assert write_report(directory) == directory / "report.html"
    assert "f1_vs_size" in {p.stem for p in (directory / "figures").glob("*.png")}


def test_size_figures_draw_every_size_with_its_interval_and_loss_curves(full_report):
    """The size curve's error bars are summary.csv's 95% interval over seeds and test sample (not the seeds' std,
    which is zero with one seed); the loss figure has each method's validation and training loss at every size."""
    from sendit.report.figures import f1_vs_size, loss_by_size, styles

    style = styles(full_report)
    fig, _ = f1_vs_size(full_report, style)
    lora = full_report.by_size[full_report.by_size.method == "lora"].sort_values("train_size")
    container = next(c for c in fig.axes[0].containers if c.get_label() == "LoRA")
    segments = container.lines[2][0].get_segments()  # one vertical bar per size: (x, low) to (x, high)
    drawn = np.array([bar[:, 1] for bar in segments])
    assert drawn == pytest.approx(100 * lora[["test_f1_macro_ci_seeds_low", "test_f1_macro_ci_seeds_high"]].to_numpy())
    fig, _ = loss_by_size(full_report, style)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["head only", "LoRA", "full fine-tuning"]
    assert all(len(ax.lines) == 2 * 2 for ax in panels)  # 2 sizes x (validation, training)


def test_different_winners_give_different_recommendations(lora_study, full_report):
    lora = analyse(load_study(lora_study[0])).recommendation
    full = full_report.recommendation
    assert lora.method == "lora" and full.method == "full"
    assert re.match(r"Pick LoRA: within \d\.\d points of full fine-tuning's accuracy", lora.headline)
    assert "no significant difference" in lora.headline
    assert full.headline.startswith("Pick full fine-tuning: the most accurate")
    assert full.headline.endswith("less accurate (significant, p < 0.001 over 3 seeds).")


def test_summary_uses_the_best_configuration_over_its_seeds(full_study, full_report):
    """LoRA's chosen configuration (lr 1e-3, batch 32, 4,000 examples) over its three seeds, by hand:
    mean and sample std of the seeds' scores, the interval of their mean over test sample and seeds."""
    lora = full_report.summary.loc["lora"]
    assert lora["n"] == 3 and lora["lr"] == 1e-3 and lora["batch_size"] == 32 and lora["train_size"] == 4000
    results = pd.read_csv(full_study / "results.csv")
    runs = results[results.run_id.str.fullmatch(r"lora-lr0.001-bs32-seed\d-n4000")]
    assert runs.seed.tolist() == [1, 2, 3]
    for metric in ("test_accuracy", "test_f1_macro", "runtime_sec"):
        assert lora[metric] == pytest.approx(statistics.mean(runs[metric]))
        assert lora[f"{metric}_std"] == pytest.approx(statistics.stdev(runs[metric]))
    for metric in ("accuracy", "f1_macro"):
        interval = [lora[f"test_{metric}_ci_low"], lora[f"test_{metric}_ci_high"]]
        assert interval == pytest.approx(seeds_and_test_interval(full_study, runs.run_id, metric, runs[f"test_{metric}"]))
        assert interval[0] < seed_interval(full_study, runs.run_id, metric)[0]  # wider than the test sample's
    assert full_report.summary.index.tolist() == ["zero_shot", "head", "lora", "full"]  # the config's order
    assert full_report.baselines == ["zero_shot"]


def test_error_analysis(full_report):
    mistakes = full_report.mistakes["full"]
    assert len(mistakes) == 5 and mistakes["confidence"].is_monotonic_decreasing
    assert (mistakes["label_name"] != mistakes["pred_name"]).all()
    assert full_report.subsets["n"].columns.tolist() == ["test", "sarcasm"]
    assert full_report.subsets.loc["full", ("n", "sarcasm")] * 4 == full_report.subsets.loc["full", ("n", "test")]
    assert full_report.negation.loc["full", ("n", "with negation")] == 200  # 5 of the 10 texts negate
    cues = pd.Series(["i dont know", "i cant", "it isn t", "not now", "nothing", "i want it", "went home",
                      "can't stop", "cannot", "no way", "nobody"])
    assert has_negation(cues).tolist() == [True, True, True, True, True, False, False, True, True, True, True]


def test_report_command_refuses_a_directory_without_results(tmp_path):
    out = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert out.exit_code == 2 and "no results.csv" in out.output


def test_tracking_names_the_missing_extra(full_report, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_trackers(name, *args, **kwargs):
        if name.split(".")[0] in ("mlflow", "tensorboard") or name == "torch.utils.tensorboard":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_trackers)
    for backend, extra in (("tensorboard", "sendit[track]"), ("mlflow", "sendit[mlflow]")):
        with pytest.raises(ReportError, match=re.escape(extra)):
            track(full_report, backend)
    with pytest.raises(ReportError, match="choose from tensorboard, mlflow"):
        track(full_report, "wandb")


def test_a_study_without_its_run_directories_is_refused_by_name(full_study, tmp_path):
    """Only the study's CSVs (runs/ not copied): exit 2 naming the missing file, not a traceback."""
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("results.csv", "config.yaml"):
        shutil.copy(full_study / name, bare / name)
    out = CliRunner().invoke(app, ["report", str(bare)])
    said = " ".join(out.output.split())  # rich wraps long lines
    assert out.exit_code == 2 and "metrics.json: missing; a report needs its study's run directories" in said


def test_tracking_to_tensorboard(lora_study):
    pytest.importorskip("tensorboard")
    directory, _ = lora_study
    out = CliRunner().invoke(app, ["report", str(directory), "--track", "tensorboard"])
    assert out.exit_code == 0, out.output
    assert len(list((directory / "tensorboard").glob("*/events.out.tfevents.*"))) == 3


def test_tracking_to_mlflow(lora_study, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    directory, _ = lora_study
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for _ in range(2):  # the second replay adds nothing
        out = CliRunner().invoke(app, ["report", str(directory), "--track", "mlflow"])
        assert out.exit_code == 0, out.output
    runs = mlflow.search_runs(experiment_names=["lora_wins"], output_format="list")
    assert sorted(r.info.run_name for r in runs) == sorted(pd.read_csv(directory / "results.csv").run_id)


def test_numeric_label_names_render():
    """Labels named 0/1 (a CSV without label_names) come back from predictions.csv as numbers."""
    from sendit.report.html import mistakes_table, to_html

    mistakes = pd.DataFrame({"confidence": [0.91], "label_name": [0], "pred_name": [1], "text": ["meh"]})
    assert "<td>0</td><td>1</td><td>meh</td>" in to_html(mistakes_table(mistakes))


def test_matplotlib_font_cache_chatter_stays_out_of_our_output(tmp_path):
    """A fresh MPLCONFIGDIR makes matplotlib build its font cache and log it at INFO, the level the CLI logs at."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = "import logging; logging.basicConfig(level=logging.INFO); import sendit.report.figures"
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.glob("fontlist-*.json"))  # the cache really was built here
    assert done.stdout + done.stderr == ""


def test_report_footer_says_what_made_the_runs(lora_study):
    directory, _ = lora_study
    made_by = ("Made by sendit 0.1.0 (commit 0123456789ab), torch 2.13.0, transformers 5.23.0, peft 0.21.0, "
               "accelerate 1.15.0, Python 3.11.7, on Test CPU 9000, 2 torch threads.")
    assert f'<footer class="meta">{made_by}</footer>' in (directory / "report.html").read_text()
    assert made_by in (directory / "report.md").read_text()


def test_report_reads_summary_and_pairwise_and_rewrites_them_when_out_of_date(tmp_path):
    """The numbers come from the study's statistics files; missing or covering other runs than
    results.csv (an older or interrupted study), they are written first."""
    directory = build_study(tmp_path, "lora_wins", LORA_WINS)
    assert not (directory / "summary.csv").exists()
    assert analyse(load_study(directory)).summary.loc["lora", "n"] == 1  # written on the way
    summary = pd.read_csv(directory / "summary.csv")
    summary.loc[summary.method == "lora", "test_accuracy_mean"] = 0.1234
    summary.to_csv(directory / "summary.csv", index=False)
    pairs = pd.read_csv(directory / "pairwise.csv")
    pairs.loc[(pairs.method_a == "lora") & (pairs.method_b == "full"), "p_value"] = 1e-9
    pairs.to_csv(directory / "pairwise.csv", index=False)
    report = analyse(load_study(directory))
    assert report.summary.loc["lora", "test_accuracy"] == 0.1234
    lora_full = report.pairs[(report.pairs.method_a == "lora") & (report.pairs.method_b == "full")]
    assert lora_full["significant"].tolist() == [True]
    written = json.loads((directory / "statistics.json").read_text())
    (directory / "statistics.json").write_text(json.dumps({**written, "version": 1}))  # an older sendit's
    report = analyse(load_study(directory))
    assert report.summary.loc["lora", "test_accuracy"] != 0.1234
    assert json.loads((directory / "statistics.json").read_text())["version"] == written["version"]

    write_run(directory / "runs" / "lora-lr0.002-bs32-seed1", "lora", 2e-3, 32, 1, LORA_WINS["lora"],
              *(pd.read_csv(directory / "runs" / "lora-lr0.001-bs32-seed1" / "predictions.csv")[c] for c in
                ("label", "text")), np.ones(N_TEST, bool), np.random.default_rng(1), False, 3200)
    write_results(directory)  # a run the statistics do not cover yet: perfect on test, best on validation
    report = analyse(load_study(directory))
    assert report.summary.loc["lora", "test_accuracy"] == 1.0
    assert "lora-lr0.002-bs32-seed1" in json.loads((directory / "statistics.json").read_text())["runs"]


def deploy_row(method, variant, accuracy=None, p50=None, p_value=1.0, run_id=None, reason=None):
    """A deploy.csv row as `sendit.deploy_study` writes it: measured, or skipped with `reason`."""
    row = {"method": method, "run_id": run_id or f"{method}-lr0.001-bs32-seed1", "variant": variant,
           "status": "skipped" if reason else "measured", "reason": reason, "batch_size": 64, "threads": 2}
    if not reason:
        row |= {"test_accuracy": accuracy, "test_f1_macro": accuracy - 0.001, "agreement": 0.99,
                "mcnemar_p": p_value, "examples_per_s": 1000 / p50, "latency_p50_ms": p50,
                "latency_p99_ms": 2 * p50, "size_mb": 90.0 if variant.endswith("fp32") else 23.0,
                "test_examples": N_TEST}
    return row


def test_deployed_variants_are_drawn_tabled_and_named_in_the_recommendation(tmp_path):
    """LoRA is picked; its int8 export is the fastest but its test predictions differ significantly from
    torch fp32's, so the recommendation names ONNX fp32; a row of a run that is no longer selected is ignored."""
    directory = build_study(tmp_path, "deployed", LORA_WINS)
    pd.DataFrame([deploy_row("lora", "torch_fp32", 0.875, 12.0), deploy_row("lora", "torch_bf16", reason="bf16 "
                  "inference is not faster on this machine"), deploy_row("lora", "onnx_fp32", 0.875, 5.0),
                  deploy_row("lora", "onnx_int8", 0.86, 2.0, p_value=0.01),
                  deploy_row("full", "torch_fp32", 0.88, 20.0), deploy_row("full", "onnx_fp32", 0.88, 8.0),
                  deploy_row("full", "onnx_int8", 0.95, 1.0, run_id="full-stale")]).to_csv(
        directory / "deploy.csv", index=False)
    report = analyse(load_study(directory))
    assert report.recommendation.deployed == "LoRA, ONNX fp32"
    assert "Deploy it as LoRA, ONNX fp32: 5.0 ms per text alone (p50; p99 10.0 ms), 2.4x faster than torch fp32" \
        in report.recommendation.headline
    assert list(report.deploy[report.deploy.pareto].name) == ["LoRA, ONNX fp32", "LoRA, ONNX int8",
                                                              "full fine-tuning, ONNX fp32"]
    assert "full-stale" not in set(report.deploy.run_id)
    write_report(directory)
    check_figures(directory, {"pareto", "deploy", "quality", "cost", "learning_curves", "confusion_matrices"})
    html = (directory / "report.html").read_text()
    assert "skipped: bf16 inference is not faster on this machine" in html
    highlighted = re.search(r'<tr class="pick"><td>LoRA</td><td>ONNX fp32</td>', html)
    assert highlighted, "the deployed variant's row is highlighted"
    assert "## Deployment" in (directory / "report.md").read_text()
