"""Where a study's runs execute: one after another in this process, in N worker processes, or as
Ray tasks. Each way yields (planned run, results row) as runs finish.

Every run ends the same way: its directory holds `metrics.json`, written last. Workers receive the
prepared data once, when they start, and train with cores // N torch threads each; a worker runs
one run at a time and resets its peak-memory counter per run, so each run's cost stays its own.
Ray tasks send their files back to the driver, which writes them: a cluster needs no shared disk.
"""
from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from sendit.config import ConfigError, RunConfig
from sendit.io import atomic_write
from sendit.logs import quiet_libraries
from sendit.plan import PlannedRun, StudyData
from sendit.pruning import pruning_hook
from sendit.results import METRICS_FILE

Finished = Iterator[tuple[PlannedRun, dict]]


def execute_runs(todo: list[PlannedRun], runs_dir: Path, data: StudyData, console, workers: int = 1,
                 ray_address: str | None = None) -> Finished:
    """Run `todo` (each into runs_dir / run_id) the way the study command asked for."""
    if ray_address:
        return on_ray(todo, runs_dir, data, ray_address)
    if workers > 1:
        return in_processes(todo, runs_dir, data, workers)
    return one_by_one(todo, runs_dir, data, console)


def run_one(planned: PlannedRun, run_dir: Path, data: StudyData, progress=None) -> dict:
    """Train and evaluate one run. Its directory is made first: if the study is killed, what is left
    is a directory without metrics.json, which the next invocation resumes from its checkpoint, or
    deletes and redoes where it has none."""
    from sendit.distill import loss_for
    from sendit.run import execute

    splits, encoded = data.for_run(planned)
    run_dir.mkdir(parents=True, exist_ok=True)
    return execute(planned.config, run_dir, splits, encoded, progress, make_loss=loss_for(planned.config, splits),
                   on_validation=pruning_hook(planned.trial) if planned.trial else None)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# -- in this process ------------------------------------------------------------------------------

def one_by_one(todo: list[PlannedRun], runs_dir: Path, data: StudyData, console) -> Finished:
    for number, planned in enumerate(todo, 1):
        splits, _ = data.for_run(planned)
        total = examples_to_train(planned.config, len(splits.train))
        with _RunProgress(console, f"[{number}/{len(todo)}] {planned.run_id}", total) as advance:
            row = run_one(planned, runs_dir / planned.run_id, data, advance)
        yield planned, row


def examples_to_train(cfg: RunConfig, n_train: int) -> int:
    from sendit.methods import get_method

    phases = get_method(cfg.method).phases(cfg.train)
    total = sum(phase.epochs for phase in phases) * n_train
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps * cfg.train.batch_size * len(phases))
    return int(total)


class _RunProgress:
    """A rich progress bar for one run, advanced by examples trained."""

    def __init__(self, console, description: str, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("ex"), TimeElapsedColumn(), console=console, transient=True)
        self.task = self.progress.add_task(description, total=max(total, 1))

    def __enter__(self):
        self.progress.start()
        return lambda n: self.progress.advance(self.task, n)

    def __exit__(self, *exc):
        self.progress.stop()


# -- N worker processes on this machine -----------------------------------------------------------

_data: StudyData | None = None  # a worker's copy of the study data, received once when it starts


def in_processes(todo: list[PlannedRun], runs_dir: Path, data: StudyData, workers: int) -> Finished:
    """Up to `workers` runs at once, each worker a fresh interpreter (spawn: no forked torch threads)."""
    workers = min(workers, len(todo))
    threads = max(1, available_cores() // workers)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(data, threads))
    futures = {pool.submit(_run_in_worker, planned, runs_dir / planned.run_id): planned for planned in todo}
    try:
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:  # on an error or Ctrl-C: start nothing new, let the runs under way end
        pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(data: StudyData, threads: int) -> None:
    import torch

    global _data
    _data = data
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    torch.set_num_threads(threads)  # a run's own train.threads, if set, still wins
    quiet_libraries()  # workers print nothing but errors: the driver reports each run as it finishes


def _exit_with_parent(parent: int) -> None:
    """End this worker once the study process is gone (SIGTERM or SIGKILL run no clean-up there): an
    orphan would go on writing its run into the study unseen. The run resumes from its checkpoint."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _run_in_worker(planned: PlannedRun, run_dir: Path) -> dict:
    return run_one(planned, run_dir, _data)


# -- Ray ------------------------------------------------------------------------------------------

def on_ray(todo: list[PlannedRun], runs_dir: Path, data: StudyData, address: str) -> Finished:
    """Each run a Ray task taking train.threads CPUs (default 1); the data goes to the object store once.

    `address`: "auto" joins a running cluster (RAY_ADDRESS, or one started on this machine) or
    else starts a local one; "local" always starts a local one; anything else is a cluster address.
    """
    ray = import_ray()
    ray.init(address=None if address == "auto" else address, include_dashboard=False, log_to_driver=False)
    try:
        shared = ray.put(data)
        task = ray.remote(_run_on_ray)
        pending = {task.options(num_cpus=planned.config.train.threads or 1).remote(planned, shared): planned
                   for planned in todo}
        while pending:
            (done,), _ = ray.wait(list(pending), num_returns=1)
            planned = pending.pop(done)
            row, files = ray.get(done)
            write_run_files(runs_dir / planned.run_id, files)
            yield planned, row
    finally:
        ray.shutdown()


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray, an optional extra: pip install 'sendit[ray]'") from None
    return ray


def _run_on_ray(planned: PlannedRun, data: StudyData) -> tuple[dict, dict[str, bytes]]:
    """Train in a scratch directory on whichever node Ray picked; return the row and the run's files."""
    import torch

    torch.set_num_threads(planned.config.train.threads or 1)
    quiet_libraries()
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / planned.run_id
        row = run_one(planned, run_dir, data)
        return row, {path.name: path.read_bytes() for path in run_dir.iterdir()}


def write_run_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a run's files atomically, metrics.json last: until then the run does not count as done."""
    for name in sorted(files, key=lambda name: name == METRICS_FILE):
        atomic_write(run_dir / name, lambda tmp: tmp.write_bytes(files[name]))
