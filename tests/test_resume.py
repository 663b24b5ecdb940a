"""A study killed with SIGKILL in the middle of a run resumes to the results of an uninterrupted one."""
import signal
import subprocess
import sys
import time

import pandas as pd
import yaml
from typer.testing import CliRunner

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
        "train": {"epochs": 2, "batch_size": 16, "bf16": False, **train},
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
