"""The link between a training run and the search trial it is: each validation's score goes to the
trial's Optuna storage, and the pruner's answer comes back as "stop now".

A trial's run may execute in another process (`--workers`, Ray on this machine), so the run gets a
`TrialRef`, the storage's file and the trial's id, and re-opens the trial there; the journal file
storage lets processes share one study.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sendit.config import ConfigError


@dataclass(frozen=True)
class TrialRef:
    journal: str  # the Optuna journal file of the study directory
    study_name: str  # the Optuna study of one method
    trial_id: int
    number: int  # the trial's number within its method's search: 0, 1, ...
    pruner: str  # search.pruner: every process must judge with the same pruner
    startup_trials: int
    metric: str  # the validation row's column the search maximises (the selection metric's)


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("search: needs Optuna, an optional extra: pip install 'sendit[tune]'") from None
    return optuna


def journal_storage(path: str | Path):
    """Optuna's journal storage in a file: appends only, safe for several processes, replayed on resume."""
    optuna = import_optuna()
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def make_pruner(name: str, startup_trials: int):
    """Optuna's pruner for `search.pruner`. Steps are validations, so the "resource" of successive
    halving and Hyperband is the number of validations a trial has had."""
    optuna = import_optuna()

    return {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=startup_trials),
            "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
            "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
            "none": optuna.pruners.NopPruner}[name]()


def pruning_hook(ref: TrialRef) -> Callable[[int, dict], bool]:
    """A `sendit.train.ValidationHook`: report each validation to the trial (step: the validation's
    number in the run, so trials compare at the same validation) and return the pruner's verdict."""
    optuna = import_optuna()
    study = optuna.load_study(study_name=ref.study_name, storage=journal_storage(ref.journal),
                              pruner=make_pruner(ref.pruner, ref.startup_trials))
    trial = optuna.trial.Trial(study, ref.trial_id)

    def report(number: int, row: dict) -> bool:
        trial.report(float(row[ref.metric]), number)
        return trial.should_prune()

    return report
