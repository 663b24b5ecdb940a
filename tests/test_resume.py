"""A study killed with SIGKILL in the middle of a run resumes to the results of an uninterrupted one;
so does a run killed after a checkpoint, through `sendit train` and through a study."""
import json
import logging
import signal
import subprocess
import sys
import time

import pandas as pd
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import dying_after_save
from sendit.checkpoint import CHECKPOINT_FILE
from sendit.cli import app

# What a run measures about the machine rather than the model: differs between identical runs.
TIMING_COLUMNS = ["runtime_sec", "train_examples_per_s", "peak_memory_mb", "memory_delta_mb", "peak_is_per_run",
                  "inference_time_sec", "inference_examples_per_s"]


def tiny_study(path, output_dir, data, **train):
    """Two methods x two seeds on the tiny model; written to `path`."""
    path.write_text(yaml.safe_dump({
        "name": "tiny", "output_dir": str(output_dir), "report": False,
        "data": {"dataset": "csv", "path": str(data), "label_names": ["negative", "positive"]},
        "model": {"name": "tiny-bert", "max_length": 32},
        # 4 epochs: after 2 most seeds still predict one class, with torch's dropout as with FastDropout
        "train": {"epochs": 4, "batch_size": 16, "bf16": False, **train},
        "methods": [{"name": "bitfit", "lr": 1e-2}, {"name": "full", "lr": 3e-3}], "seeds": [1, 2]}))
    return path


def model_columns(results: pd.DataFrame) -> pd.DataFrame:
    return results.drop(columns=TIMING_COLUMNS).reset_index(drop=True)


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_results(tmp_path, tweets_csv):
    # One thread everywhere: sendit is then deterministic, so the results must match exactly.
    reference = tiny_study(tmp_path / "reference.yaml", tmp_path / "reference", tweets_csv, threads=1)
    assert CliRunner().invoke(app, ["study", str(reference)]).exit_code == 0

    config = tiny_study(tmp_path / "killed.yaml", tmp_path / "killed", tweets_csv, threads=1)
    runs = tmp_path / "killed" / "tiny" / "runs"
    study = subprocess.Popen([sys.executable, "-m", "sendit.cli", "study", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while True:  # kill once the first run is done and the second has started
        finished = list(runs.glob("*/metrics.json"))
        if finished and len(list(runs.iterdir())) > len(finished):
            break
        assert study.poll() is None, study.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the study never started its second run"
        time.sleep(0.01)
    study.send_signal(signal.SIGKILL)
    study.wait()

    unfinished = [run.name for run in runs.iterdir() if not (run / "metrics.json").exists()]
    assert len(unfinished) == 1  # killed mid-run: a directory without metrics.json
    partial = pd.read_csv(tmp_path / "killed" / "tiny" / "results.csv")
    assert len(partial) == len(finished) and partial["test_accuracy"].notna().all()  # whole rows only

    resumed = CliRunner().invoke(app, ["study", str(config)])
    assert resumed.exit_code == 0, resumed.output
    assert f"{len(finished)} already done" in resumed.output
    assert f"{unfinished[0]}: unfinished, starting it again" in resumed.output
    expected = pd.read_csv(tmp_path / "reference" / "tiny" / "results.csv")
    got = pd.read_csv(tmp_path / "killed" / "tiny" / "results.csv")
    pd.testing.assert_frame_equal(model_columns(got), model_columns(expected), check_exact=True)
    assert got["test_accuracy"].max() > 0.9  # a model that learned, not a constant prediction


# -- checkpoints inside a run ---------------------------------------------------------------------------

def train_args(data, out) -> list[str]:
    """`sendit train`: two-phase on the tiny model (3 end-to-end epochs, then 2 head epochs), a
    checkpoint after every step."""
    return ["train", "--dataset", "csv", "--data-path", str(data), "--model", "tiny-bert", "--method", "two_phase",
            "--lr", "3e-3", "--max-length", "32", "--batch-size", "16", "--seed", "1", "--out", str(out),
            "-s", "data.label_names=[negative, positive]", "-s", "method.options={full_epochs: 3, head_epochs: 2}",
            "-s", "train.bf16=false", "-s", "train.threads=1", "-s", "train.evals_per_epoch=2",
            "-s", "train.checkpoint_minutes=0"]


def saved_position(checkpoint) -> tuple[int, int] | None:
    """(phase, step) of the checkpoint on disk, if there is one yet (replaced atomically: always whole)."""
    if not checkpoint.is_file():
        return None
    with safe_open(str(checkpoint), "pt") as file:
        state = json.loads(file.metadata()["state"])
    return state["phase"], state["step"]


def test_sigkill_after_a_checkpoint_then_train_again_goes_on_to_the_uninterrupted_run(tmp_path, tweets_csv, caplog):
    assert CliRunner().invoke(app, train_args(tweets_csv, tmp_path / "reference")).exit_code == 0

    out = tmp_path / "killed"
    train = subprocess.Popen([sys.executable, "-m", "sendit.cli", *train_args(tweets_csv, out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while (saved_position(out / CHECKPOINT_FILE) or (0, 0)) < (0, 5):  # a few steps into the first phase
        assert train.poll() is None, train.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint came"
        time.sleep(0.01)
    train.send_signal(signal.SIGKILL)
    train.wait()
    assert not (out / "metrics.json").exists() and saved_position(out / CHECKPOINT_FILE) < (1, 0)

    caplog.set_level(logging.INFO, logger="sendit")
    resumed = CliRunner().invoke(app, train_args(tweets_csv, out))
    assert resumed.exit_code == 0, resumed.output
    assert "resuming at step" in caplog.text
    assert not (out / CHECKPOINT_FILE).exists()  # deleted once the run is done
    for name in ("predictions.csv", "epoch_log.csv"):
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    weights, expected = (load_file(str(run / "adapter.safetensors")) for run in (out, tmp_path / "reference"))
    assert weights.keys() == expected.keys() and all(torch.equal(weights[n], expected[n]) for n in weights)
    rows = [pd.DataFrame([json.loads((run / "metrics.json").read_text())["row"]])
            for run in (out, tmp_path / "reference")]
    pd.testing.assert_frame_equal(model_columns(rows[0]), model_columns(rows[1]), check_exact=True)
    assert rows[0]["test_accuracy"].item() > 0.9


def test_a_study_resumes_an_interrupted_run_from_its_checkpoint(tmp_path, tweets_csv):
    reference = tiny_study(tmp_path / "reference.yaml", tmp_path / "reference", tweets_csv, threads=1)
    assert CliRunner().invoke(app, ["study", str(reference)]).exit_code == 0

    config = tiny_study(tmp_path / "killed.yaml", tmp_path / "killed", tweets_csv, threads=1, checkpoint_minutes=0)
    with dying_after_save(lambda state: state["step"] == 15):
        CliRunner().invoke(app, ["study", str(config)], catch_exceptions=False)
    (interrupted,) = (tmp_path / "killed" / "tiny" / "runs").iterdir()
    assert (interrupted / CHECKPOINT_FILE).is_file() and not (interrupted / "metrics.json").exists()

    resumed = CliRunner().invoke(app, ["study", str(config)])
    assert resumed.exit_code == 0, resumed.output
    assert f"{interrupted.name}: unfinished, resuming from its checkpoint" in resumed.output
    assert not list((tmp_path / "killed").rglob(CHECKPOINT_FILE))
    expected = pd.read_csv(tmp_path / "reference" / "tiny" / "results.csv")
    got = pd.read_csv(tmp_path / "killed" / "tiny" / "results.csv")
    pd.testing.assert_frame_equal(model_columns(got), model_columns(expected), check_exact=True)
