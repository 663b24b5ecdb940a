"""Deployment variants of a study: a tiny study with a `deploy:` block measures each trained method's selected
run as torch and ONNX variants into deploy.csv and its report draws them; `sendit report --deploy` measures
a finished study and resumes without redoing a variant; a refused export is recorded, not fatal."""
import shutil

import pandas as pd
import pytest
import yaml
from conftest import synthetic_frame
from rich.console import Console
from typer.testing import CliRunner

from sendit import deploy_study as deploy_module
from sendit.cli import app
from sendit.config import DEPLOY_VARIANTS, ConfigError, DeployConfig, load_study
from sendit.deploy import MODEL_FILE, ExportError
from sendit.deploy_study import deploy_study
from sendit.hardware import Decision

runner = CliRunner()
TRAINED = ["lora", "full"]


def study_config(root, tweets, deploy) -> dict:
    return {"name": "deployed", "output_dir": str(root / "runs"),
            "data": {"dataset": "csv", "path": str(tweets), "label_names": ["negative", "positive"]},
            "model": {"name": "tiny-bert", "max_length": 32},
            "train": {"epochs": 2, "batch_size": 16, "bf16": False, "threads": 1},
            "methods": [{"name": "zero_shot"}, {"name": "lora", "lr": 1e-2}, {"name": "full", "lr": 3e-3}],
            "seeds": [1], "deploy": deploy}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Zero-shot, LoRA and full fine-tuning on tiny-bert, measured deployed at the end (int8 may lose anything:
    a tiny random model's int8 accuracy is not the point here)."""
    root = tmp_path_factory.mktemp("deploy")
    tweets = root / "tweets.csv"
    synthetic_frame(400).to_csv(tweets, index=False)
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study_config(root, tweets, {"latency_texts": 10, "max_loss": 100})))
    result = runner.invoke(app, ["study", str(path)])
    assert result.exit_code == 0, result.output
    return root / "runs" / "deployed"


@pytest.fixture
def finished(study, tmp_path):
    """A copy of the study as if it had no `deploy:` block and had never been measured deployed nor reported."""
    copy = shutil.copytree(study, tmp_path / "deployed",
                           ignore=shutil.ignore_patterns("deploy", "deploy.csv", "report.*", "figures"))
    config = yaml.safe_load((copy / "config.yaml").read_text())
    (copy / "config.yaml").write_text(yaml.safe_dump({**config, "deploy": None}))
    return copy


def test_a_study_with_deploy_measures_every_variant_of_each_trained_method(study):
    deployed = pd.read_csv(study / "deploy.csv")
    results = pd.read_csv(study / "results.csv").set_index("method")
    assert list(deployed.method) == [m for m in TRAINED for _ in DEPLOY_VARIANTS]  # the baseline is not deployed
    assert list(deployed.variant) == list(DEPLOY_VARIANTS) * len(TRAINED)
    assert set(deployed.status) <= {"measured", "skipped"}
    skipped = deployed[deployed.status == "skipped"]  # none where bf16 measures faster (an AMX CPU)
    assert skipped.reason.fillna("").astype(str).str.len().gt(0).all()  # every skip says why
    for method, rows in deployed.groupby("method"):
        rows = rows.set_index("variant")
        assert (rows.run_id == results.loc[method, "run_id"]).all()
        assert rows.loc[["torch_fp32", "onnx_fp32", "onnx_int8"], "status"].eq("measured").all(), rows.reason
        torch_fp32, onnx_fp32 = rows.loc["torch_fp32"], rows.loc["onnx_fp32"]
        assert torch_fp32.test_accuracy == pytest.approx(results.loc[method, "test_accuracy"])  # evaluated in fp32
        assert onnx_fp32.test_accuracy == torch_fp32.test_accuracy and onnx_fp32.agreement == 1.0
        assert onnx_fp32.test_f1_macro == torch_fp32.test_f1_macro and onnx_fp32.mcnemar_p == 1.0
        measured = rows[rows.status == "measured"]
        assert (measured.examples_per_s > 0).all() and (measured.size_mb > 0).all()
        assert (measured.latency_p50_ms <= measured.latency_p99_ms).all()
        assert rows.loc["onnx_int8", "size_mb"] < onnx_fp32.size_mb / 2
        if rows.loc["torch_bf16", "status"] == "skipped":
            assert "bf16 inference is not faster on this machine" in rows.loc["torch_bf16", "reason"]
        export = study / "deploy" / torch_fp32.run_id
        assert (export / "onnx_fp32" / MODEL_FILE).is_file() and (export / "onnx_int8" / MODEL_FILE).is_file()


def test_the_report_draws_the_variants_and_names_the_one_to_deploy(study):
    assert (study / "figures" / "deploy.png").is_file() and (study / "figures" / "deploy.svg").is_file()
    page, markdown = (study / "report.html").read_text(), (study / "report.md").read_text()
    assert 'data-figure="deploy"' in page and "<h3>Deployment</h3>" in page and "## Deployment" in markdown
    names = {f"{method}, {variant}" for method in ("LoRA", "full fine-tuning")
             for variant in ("torch fp32", "torch bf16", "ONNX fp32", "ONNX int8")}
    headline = next(line for line in markdown.splitlines() if line.startswith("**Pick"))
    assert any(f"Deploy it as {name}:" in headline for name in names), headline


def test_report_deploy_measures_a_finished_study_then_redoes_nothing(finished):
    out = runner.invoke(app, ["report", str(finished), "--deploy"])
    assert out.exit_code == 0, out.output
    first = pd.read_csv(finished / "deploy.csv")
    assert len(first) == len(TRAINED) * len(DEPLOY_VARIANTS) and first.threads.eq(1).all()
    assert 'data-figure="deploy"' in (finished / "report.html").read_text()
    assert "Deploy it as" in " ".join(out.output.split())
    lora = first[first.method == "lora"].run_id.iloc[0]
    stamp = (finished / "deploy" / lora / "onnx_fp32" / MODEL_FILE).stat().st_mtime_ns
    first[~((first.method == "lora") & (first.variant == "onnx_int8"))].to_csv(finished / "deploy.csv", index=False)
    again = runner.invoke(app, ["report", str(finished), "--deploy"])
    assert again.exit_code == 0, again.output
    assert "deploy lora" in again.output and "deploy full" not in again.output  # only the missing variant
    second = pd.read_csv(finished / "deploy.csv")
    assert list(second.variant) == list(first.variant)
    kept = ~((second.method == "lora") & (second.variant == "onnx_int8"))
    pd.testing.assert_frame_equal(second[kept], first[kept])
    assert (finished / "deploy" / lora / "onnx_fp32" / MODEL_FILE).stat().st_mtime_ns == stamp


def test_a_refused_export_is_recorded_and_the_rest_goes_on(finished, monkeypatch):
    def refuse(run_dir, out, **options):
        raise ExportError("its 4-bit bitsandbytes layers have no ONNX form")

    monkeypatch.setattr(deploy_module, "export_run", refuse)
    table = deploy_study(finished, DeployConfig(variants=["onnx_fp32", "torch_fp32"], latency_texts=3),
                         Console(quiet=True))
    assert list(table.status) == ["skipped", "measured"] * len(TRAINED)
    assert table.reason.iloc[0] == "its 4-bit bitsandbytes layers have no ONNX form"


def test_torch_bf16_is_measured_where_bf16_is_the_faster(finished, monkeypatch):
    """This CPU has no fast bf16: as if the measurement had found bf16 faster, the variant runs in bf16."""
    monkeypatch.setattr(deploy_module, "bf16_decision", lambda run, encoded: Decision("bf16", "faster here"))
    table = deploy_study(finished, DeployConfig(variants=["torch_bf16"], latency_texts=3), Console(quiet=True))
    assert list(table.status) == ["measured"] * len(TRAINED)
    assert table.agreement.between(0.5, 1).all() and (table.latency_p50_ms > 0).all()


def test_an_unknown_variant_is_refused_naming_the_field(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "deploy": {"variants": ["onnx_fp32", "onnx_int4"]}}))
    with pytest.raises(ConfigError, match=r"study\.yaml.*deploy\.variants.*onnx_int4"):
        load_study(path)
    out = runner.invoke(app, ["study", str(path), "--dry-run"])
    assert out.exit_code == 2 and "deploy.variants" in " ".join(out.output.split())
    assert load_study(path, ["deploy.variants=[onnx_int8]"]).deploy == DeployConfig(variants=["onnx_int8"])
