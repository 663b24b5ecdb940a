"""The same study run one by one, in 2 worker processes and as local Ray tasks gives the same runs and
metrics; one `sendit train` under torchrun on 2 CPU processes matches one process; a missing Ray is
explained.

Tolerance: the modes train with different thread counts (one by one: torch's default; workers:
cores // 2; Ray: 1 per task), which only reorders floating-point sums. Measured on 2 cores: logged
losses and test probabilities within 2e-7 of each other, metrics equal. Allowed: losses and
probabilities within 1e-4, accuracy / F1 within one flipped test prediction (1/40).
"""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_resume import TIMING_COLUMNS, model_columns, tiny_study
from typer.testing import CliRunner

from sendit.cli import app
from sendit.config import ConfigError, load_study
from sendit.study import run_study

runner = CliRunner()
FLOAT_TOLERANCE = 1e-4
N_TEST = 40  # test examples of the 400-tweet fixture


def study_in(directory: Path, tweets: Path, *options: str) -> Path:
    """Run the tiny study (threads left to each mode) into `directory`; return its study directory."""
    config = tiny_study(directory.with_suffix(".yaml"), directory, tweets)
    result = runner.invoke(app, ["study", str(config), *options])
    assert result.exit_code == 0, result.output
    return directory / "tiny"


def assert_same_runs(got: Path, expected: Path) -> None:
    a, b = (model_columns(pd.read_csv(d / "results.csv")) for d in (got, expected))
    assert a["run_id"].tolist() == b["run_id"].tolist()
    metrics = [c for c in a.columns if c.startswith(("test_", "val_", "best_val"))]
    exact = [c for c in a.columns if c not in metrics and a[c].dtype == object] + ["trainable_params", "seed"]
    pd.testing.assert_frame_equal(a[exact], b[exact])
    np.testing.assert_allclose(a[metrics].to_numpy(float), b[metrics].to_numpy(float), atol=1 / N_TEST + 1e-9)
    for run in a["run_id"]:
        for name, columns in (("epoch_log.csv", ["train_loss", "val_loss"]), ("predictions.csv", ["prob_positive"])):
            x, y = (pd.read_csv(d / "runs" / run / name) for d in (got, expected))
            np.testing.assert_allclose(x[columns].to_numpy(), y[columns].to_numpy(), rtol=0, atol=FLOAT_TOLERANCE,
                                       err_msg=f"{run}/{name}")


@pytest.fixture(scope="module")
def one_by_one(tmp_path_factory, tweets_csv_module):
    return study_in(tmp_path_factory.mktemp("sequential") / "out", tweets_csv_module)


@pytest.fixture(scope="module")
def tweets_csv_module(tmp_path_factory):
    from conftest import synthetic_frame

    path = tmp_path_factory.mktemp("data") / "tweets.csv"
    synthetic_frame(400).to_csv(path, index=False)
    return path


def test_two_workers_give_the_same_runs(one_by_one, tweets_csv_module, tmp_path):
    assert_same_runs(study_in(tmp_path / "out", tweets_csv_module, "--workers", "2"), one_by_one)
    assert pd.read_csv(one_by_one / "results.csv")["test_accuracy"].max() > 0.9  # learned: a real comparison


def test_local_ray_gives_the_same_runs(one_by_one, tweets_csv_module, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'sendit[ray]'")
    assert_same_runs(study_in(tmp_path / "out", tweets_csv_module, "--ray", "local"), one_by_one)


def test_missing_ray_is_explained_before_any_work(tmp_path, tweets_csv, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    cfg = load_study(tiny_study(tmp_path / "s.yaml", tmp_path / "out", tweets_csv))
    with pytest.raises(ConfigError, match=r"pip install 'sendit\[ray\]'"):
        run_study(cfg, ray_address="local")
    assert not (tmp_path / "out" / "tiny" / "runs").exists()


def test_workers_and_ray_exclude_each_other(tmp_path, tweets_csv):
    out = runner.invoke(app, ["study", str(tiny_study(tmp_path / "s.yaml", tmp_path, tweets_csv)),
                              "--workers", "2", "--ray", "local"])
    assert out.exit_code == 2 and "exclude each other" in out.output


def spawned_workers(parent: int) -> list[int]:
    """The pids of `parent`'s multiprocessing workers (Linux: from /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and b"spawn_main" in (stat.parent / "cmdline").read_bytes():
                pids.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # it ended while being read
            continue
    return pids


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_of_a_study_ends_its_workers(tmp_path, tweets_csv):
    """`kill` of `sendit study --workers 2` (SIGTERM: no clean-up runs in the study process) ends its
    workers within seconds: none goes on writing its run into the study unseen."""
    config = tiny_study(tmp_path / "s.yaml", tmp_path / "out", tweets_csv, epochs=200, threads=1)
    study = subprocess.Popen([sys.executable, "-m", "sendit.cli", "study", str(config), "--workers", "2"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs = tmp_path / "out" / "tiny" / "runs"
    deadline = time.monotonic() + 300
    while not (runs.is_dir() and len(list(runs.iterdir())) == 2):  # both workers have started a run
        assert study.poll() is None, study.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.2)
    workers = spawned_workers(study.pid)
    assert len(workers) == 2
    study.terminate()
    study.wait()
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers), "a worker outlived the study"
    assert not list(runs.glob("*/metrics.json"))  # no run finished after the study was gone


def test_torchrun_on_two_cpu_processes_matches_one_process(tmp_path, tweets_csv):
    """DDP over gloo: each rank takes its share of every epoch's batches and gradients are averaged,
    so an optimizer step sees 2 x batch_size examples and an epoch has half the steps. The same
    final metrics are expected within 0.05 (both learn the easy task: 6 epochs, as DDP's take half the steps
    and a tiny model needs ~4 epochs' steps to leave the constant prediction); only rank 0 writes or prints.
    ~25 s on 2 cores. It needs two things of train.py: one batch order on every rank (an rng seeded
    without the rank), and the LR scheduler kept out of `accelerate.prepare` (a prepared scheduler
    steps once per process per step, so the schedule ends halfway and training stalls at chance)."""
    args = ["train", "--dataset", "csv", "--data-path", str(tweets_csv), "--model", "tiny-bert", "--method", "full",
            "--lr", "3e-3", "--epochs", "6", "--batch-size", "16", "--max-length", "32", "--seed", "1",
            "--set", "train.bf16=false", "--set", "train.threads=1"]
    one = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "sendit.cli", *args,
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("full on csv") == 1  # rank 1 returns before writing or printing anything
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    single, ddp = (json.loads((tmp_path / d / "metrics.json").read_text())["row"] for d in ("one", "two"))
    for key in ("test_accuracy", "test_f1_macro", "best_val_f1"):
        assert ddp[key] == pytest.approx(single[key], abs=0.05), (key, ddp[key], single[key])
    assert single["test_accuracy"] > 0.9
    assert set(TIMING_COLUMNS) <= set(single)
