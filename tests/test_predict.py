"""`sendit predict`: texts from arguments, stdin and files, kept verbatim; labels and probabilities equal to
the evaluation's (`predictions.csv`, `sendit eval`): within 1e-5 in fp32 and BF16_ATOL in bf16."""
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import LABELS, eval_probabilities, tiny_data, tiny_run
from typer.testing import CliRunner

from sendit import artifacts
from sendit.artifacts import Predictor, batching_for, load
from sendit.batching import encode
from sendit.cli import app
from sendit.data import DataError
from sendit.calibration import softmax
from sendit.evaluate import predict_logits
from sendit.predict import predict_probabilities, read_texts

runner = CliRunner()
# bf16 keeps 8 significant bits: a different batch shape may change the order of bf16 accumulations, so
# probabilities are allowed 5e-3 (measured here: <= 3e-8, while bf16 vs fp32 differ by ~2e-4).
BF16_ATOL = 5e-3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = tiny_data(root)
    return {"full": tiny_run(root / "full", data, method="full", lr=3e-3), "lora": tiny_run(root / "lora", data)}


def test_texts_come_verbatim_from_arguments_stdin_and_files(tmp_path):
    assert read_texts(["a", "-", "b"], None, "text", io.StringIO("x\n\n y \n")) == ["a", "x", " y ", "b"]
    lines = tmp_path / "texts.txt"
    lines.write_text("one\n\ntwo\n")
    assert read_texts([], lines, "text", None) == ["one", "two"]
    csv = tmp_path / "texts.csv"
    csv.write_text('id,text\n1,NA\n2,1.50\n3,""\n4,"with, comma"\n')
    assert read_texts([], csv, "text", None) == ["NA", "1.50", "", "with, comma"]  # not NaN, not 1.5
    tsv = tmp_path / "texts.tsv"
    tsv.write_text("text\tid\nnull\t1\n")
    assert read_texts([], tsv, "text", None) == ["null"]
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text('{"body": "1.50"}\n{"body": "2020-01-01"}\n')
    assert read_texts([], jsonl, "body", None) == ["1.50", "2020-01-01"]


@pytest.mark.parametrize("name, content, message", [
    ("missing.csv", None, "no such file"), ("texts.csv", "id,body\n1,hi\n", "no column 'text'"),
    ("texts.jsonl", '{"text": "a"\n', "cannot read texts"), ("texts.txt", b"\xff\xfe\xfa", "cannot read texts")])
def test_unreadable_files_are_data_errors_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        read_texts([], path, "text", None)
    assert str(path) in str(error.value)


def test_cli_labels_equal_the_evaluation_in_fp32(runs):
    run = runs["full"]
    expected, probs = eval_probabilities(run)
    out = runner.invoke(app, ["predict", str(run), "--file", str(run / "predictions.csv"), "-o", "csv"])
    assert out.exit_code == 0, out.output
    got = pd.read_csv(io.StringIO(out.stdout), dtype={"text": str}, keep_default_na=False)
    assert got.label.tolist() == expected.pred_name.tolist()
    np.testing.assert_allclose(got[[f"p_{name}" for name in LABELS]].to_numpy(), probs, rtol=0, atol=1e-5)
    evaluated = runner.invoke(app, ["eval", str(run)])
    assert evaluated.exit_code == 0, evaluated.output
    assert f"accuracy      {(got.label == expected.label_name).mean():.4f}" in evaluated.output


def test_bf16_run_predicts_in_bf16_within_tolerance(runs, tmp_path):
    """The run switched to bf16 inference (train.eval_precision; training stays fp32): the
    evaluation's code path (pre-cleaned texts, batches of 128) against `predict` (batches of 7)."""
    run = shutil.copytree(runs["lora"], tmp_path / "bf16")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["eval_precision"] = "bf16"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    model, tokenizer, cfg = load(run)
    frame, _ = eval_probabilities(run)
    test = encode(tokenizer, frame.text.tolist(), frame.label.to_numpy(), cfg.model.max_length)
    logits, _ = predict_logits(model, test, cfg.train.eval_batch_size, cfg.train.eval_precision,
                               **vars(batching_for(tokenizer, model)))
    expected = softmax(logits)
    predictor = Predictor(model, tokenizer, cfg)
    got = predict_probabilities(predictor, frame.text.tolist(), batch_size=7)
    np.testing.assert_allclose(got, expected, rtol=0, atol=BF16_ATOL)
    clear = np.abs(expected[:, 1] - 0.5) > BF16_ATOL
    assert (got.argmax(1) == expected.argmax(1))[clear].all()
    fp32 = predict_probabilities(predictor, frame.text.tolist(), precision="fp32")
    assert np.abs(fp32 - got).max() > 1e-6  # bf16 really was used


def test_cli_jsonl_and_input_errors(runs, tmp_path):
    run = str(runs["full"])
    out = runner.invoke(app, ["predict", run, "i love this", "-", "-o", "jsonl"], input="so sad\n")
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["i love this", "so sad"] and not out.stdout.endswith("\n\n")
    for args, message in ((["-o", "yaml", "x"], "--output 'yaml'"), ([], "no texts given"),
                          (["--file", str(tmp_path / "none.txt")], "no such file")):
        out = runner.invoke(app, ["predict", run, *args], input="")
        assert out.exit_code == 2 and message in " ".join(out.output.split()), out.output


def test_cli_process_skips_bitsandbytes_for_non_qlora_runs(runs):
    """peft imports bitsandbytes (1-2 s) whenever installed; `sendit predict` on a LoRA run must not."""
    code = ("import sys; from sendit.cli import app\n"
            f"app(['predict', {str(runs['lora'])!r}, 'hi', '-o', 'csv'], standalone_mode=False)\n"
            "print(sys.modules.get('bitsandbytes', 'absent'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] in ("None", "absent")


@pytest.fixture
def commands(runs, monkeypatch):
    """`eval`, `predict` and `serve` on one run, the server never started."""
    monkeypatch.setattr("uvicorn.run", lambda app, **options: None)
    run = str(runs["full"])
    return (["eval", run], ["predict", run, "so happy"], ["serve", run])


def test_device_option_decides_where_the_run_is_loaded(commands, monkeypatch):
    """`--device auto` takes CUDA where torch sees it (simulated here: loaded on the CPU all the same)."""
    devices = []
    real_load = artifacts.load
    monkeypatch.setattr(artifacts, "load", lambda run, device="cpu": devices.append(device) or real_load(run))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for command in commands:
        for device in ("cpu", "auto"):
            out = runner.invoke(app, [*command, "--device", device])
            assert out.exit_code == 0, out.output
    assert devices == ["cpu", "cuda"] * 3
    assert " on cpu)" in runner.invoke(app, [*commands[0], "--device", "cpu"]).output


def test_device_that_is_absent_or_unknown_exits_2_naming_it(commands, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for command in commands:
        for device, message in (("cuda", "--device=cuda: torch sees no CUDA device"),
                                ("tpu", "--device='tpu': one of auto, cpu, cuda, mps")):
            out = runner.invoke(app, [*command, "--device", device])
            assert out.exit_code == 2 and message in " ".join(out.output.split()), out.output
