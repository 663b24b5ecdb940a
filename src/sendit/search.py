"""A study's hyperparameter search: Optuna samples each searched method's space (`plan.search_spaces`)
until the method's budget is spent, every method the same budget; its pruner stops poor trials at a
validation. A trial is a run like a grid's (the same run directory, results row and statistics, its
id holding `trialNNN`); only the way its configuration is chosen differs.

The Optuna studies (one per method) live in `search.journal` in the study directory, so a killed
search resumes: finished trials are not repeated; a trial that was running is re-run with its
parameters (or, if its run had finished, told its score). With `--workers N`, N trials are asked at a
time and run in parallel, each reporting to the shared journal from its own process.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

from sendit.config import RunConfig, StudyConfig
from sendit.methods import get_method
from sendit.parallel import examples_to_train, execute_runs
from sendit.plan import Choices, PlannedRun, Range, apply_grid_point, method_config, name_configuration, search_spaces
from sendit.pruning import TrialRef, import_optuna, journal_storage, make_pruner
from sendit.results import collect, is_done
from sendit.train import VALIDATION_COLUMNS

JOURNAL = "search.journal"


def run_search(cfg: StudyConfig, directory: Path, data, console, workers: int = 1, ray_address: str | None = None,
               on_finished=lambda: None) -> list[PlannedRun]:
    """Run every searched method's trials to its budget; return the trials' runs (each finished).
    `on_finished` is called after each trial (the study rewrites results.csv there)."""
    optuna = import_optuna()

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # sendit prints each trial itself
    storage = journal_storage(directory / JOURNAL)
    trials = []
    for index, space in search_spaces(cfg).items():
        search = MethodSearch(cfg, index, space, storage, directory)
        trials += search.run(data, console, workers, ray_address, on_finished)
    return trials


class MethodSearch:
    """The search of one method: its Optuna study, its budget, its trials' runs."""

    def __init__(self, cfg: StudyConfig, index: int, space: dict, storage, directory: Path):
        optuna = import_optuna()

        self.cfg, self.space, self.directory = cfg, space, directory
        self.study_method = cfg.methods[index]
        self.method = method_config(self.study_method)
        self.label = self.method.label or self.method.name
        search = cfg.search
        sampler = (optuna.samplers.TPESampler(seed=search.seed + index, n_startup_trials=search.startup_trials)
                   if search.sampler == "tpe" else optuna.samplers.RandomSampler(seed=search.seed + index))
        self.study = optuna.create_study(study_name=f"{cfg.name}/{self.label}", storage=storage, sampler=sampler,
                                         pruner=make_pruner(search.pruner, search.startup_trials),
                                         direction="maximize", load_if_exists=True)
        if not self.study.trials:  # a new search: its starting points first
            for point in self.study_method.search_start:
                self.study.enqueue_trial(point)
        self.asked: dict[int, object] = {}  # trial number -> optuna Trial, asked by this process

    def run(self, data, console, workers: int, ray_address: str | None, on_finished) -> list[PlannedRun]:
        self._recover()
        while (left := self._left()) > 0:
            batch = [self._ask()]
            while len(batch) < min(workers, left) and self._room_beside(batch, data()):
                batch.append(self._ask())
            for planned, row in execute_runs(batch, self.directory / "runs", data(), console, workers, ray_address):
                self._tell(planned, row)
                console.print(f"  {planned.run_id}: val {self._score(row):.4f}"
                              f"{' (pruned)' if row.get('pruned') else ''}, {row['runtime_sec']:.0f} s")
                on_finished()
        finished = self._finished()
        complete = [t for t in finished if not t.user_attrs["pruned"]]
        best = max(complete, key=lambda t: t.value) if complete else None
        console.print(f"search {self.label}: {self._describe_budget()}"
                      + (f", best val {best.value:.4f} (trial {best.number})" if best else ", every trial pruned"))
        return [self._planned(trial) for trial in finished]

    # -- budget -----------------------------------------------------------------------------------

    def _finished(self) -> list:
        optuna = import_optuna()

        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return [t for t in self.study.trials if t.state in done]

    def _left(self) -> float:
        """How many trials may start now: what is left of a trials budget; for an examples or minutes
        budget, any number while some of it is left (`_room_beside` sizes an examples budget's batch)."""
        search, finished = self.cfg.search, self._finished()
        if search.trials is not None:
            return search.trials - len(finished)
        if search.examples is not None:
            spent = self._examples_spent() >= search.examples
        else:
            spent = sum(t.user_attrs["seconds"] for t in finished) >= 60 * search.minutes
        return 0 if spent else math.inf

    def _room_beside(self, batch: list[PlannedRun], data) -> bool:
        """Whether another trial may start beside `batch`. With an examples budget, only while the
        examples spent plus the most the batch can spend (no trial pruned) leave some budget: trials
        run in parallel then overrun it by no more than one trial, as trials run one by one do."""
        budget = self.cfg.search.examples
        if budget is None:
            return True
        most = sum(examples_to_train(p.config, len(data.for_run(p)[0].train)) for p in batch)
        return self._examples_spent() + most < budget

    def _examples_spent(self) -> int:
        return sum(t.user_attrs["train_examples"] for t in self._finished())

    def _describe_budget(self) -> str:
        finished = self._finished()
        pruned = sum(t.user_attrs.get("pruned", False) for t in finished)
        examples = self._examples_spent()
        return f"{len(finished)} trials ({pruned} pruned), {examples:,} training examples"

    # -- trials -----------------------------------------------------------------------------------

    def _ask(self) -> PlannedRun:
        trial = self.study.ask()
        params = {key: _suggest(trial, key, dimension) for key, dimension in self.space.items()}
        planned = self._plan(trial.number, trial._trial_id, params)
        trial.set_user_attr("run_id", planned.run_id)
        self.asked[trial.number] = trial
        return planned

    def _plan(self, number: int, trial_id: int, params: dict) -> PlannedRun:
        cfg, where = self.cfg, f"{self.label} trial {number}"
        method, train, model = apply_grid_point(self.method, cfg.train, cfg.model, params, where)
        name = name_configuration(method, _method_lr(method), train, model, None, params)
        config_id = f"{self.label}-trial{number:03d}{name[len(self.label):]}"
        train = replace(train, seed=cfg.seeds[0])
        ref = TrialRef(str(self.directory / JOURNAL), self.study.study_name, trial_id, number, cfg.search.pruner,
                       cfg.search.startup_trials, VALIDATION_COLUMNS[cfg.selection.metric])
        return PlannedRun(config_id, RunConfig(data=cfg.data, model=model, method=method, train=train,
                                               selection=cfg.selection, distill=self.study_method.distill,
                                               transfer=self.study_method.transfer), trial=ref)

    def _planned(self, frozen) -> PlannedRun:
        return self._plan(frozen.number, frozen._trial_id, _decode(frozen.params, self.space))

    def _tell(self, planned: PlannedRun, row: dict) -> None:
        optuna = import_optuna()

        number = planned.trial.number
        trial = self.asked.pop(number)
        trial.set_user_attr("train_examples", int(row["train_examples"]))
        trial.set_user_attr("seconds", float(row["runtime_sec"]))
        trial.set_user_attr("pruned", bool(row.get("pruned")))
        if row.get("pruned"):
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)  # its value: the last reported
        else:
            self.study.tell(trial, self._score(row))

    def _score(self, row: dict) -> float:
        """The run's validation score on the study's selection metric, at its kept checkpoint."""
        return float(row["best_val_score"])

    def _recover(self) -> None:
        """Trials left running by a killed search: told their run's score if the run had finished,
        else failed and re-queued with the same parameters (their run directory started over)."""
        optuna = import_optuna()

        for frozen in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            run_dir = self.directory / "runs" / frozen.user_attrs.get("run_id", "")
            if frozen.user_attrs.get("run_id") and is_done(run_dir):
                self.asked[frozen.number] = optuna.trial.Trial(self.study, frozen._trial_id)
                self._tell(self._planned(frozen), collect(self.directory, [run_dir.name]).iloc[0].to_dict())
                continue
            self.study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
            self.study.enqueue_trial(frozen.params, skip_if_exists=False)
            if frozen.user_attrs.get("run_id"):
                shutil.rmtree(run_dir, ignore_errors=True)


def _method_lr(method):
    return get_method(method).lr


def _suggest(trial, key: str, dimension):
    """Sample one dimension. Optuna's categorical choices must be plain values: a list-valued choice
    (e.g. LoRA's target_modules) is sampled by its JSON text."""
    if isinstance(dimension, Range):
        if dimension.integer:
            return trial.suggest_int(key, int(dimension.low), int(dimension.high), log=dimension.log)
        return trial.suggest_float(key, dimension.low, dimension.high, log=dimension.log)
    if _sampled_as_json(dimension):
        return json.loads(trial.suggest_categorical(key, [json.dumps(v) for v in dimension.values]))
    return trial.suggest_categorical(key, list(dimension.values))


def _decode(params: dict, space: dict) -> dict:
    """A trial's stored parameters as the values its run used (list-valued choices from their JSON)."""
    return {key: json.loads(value) if _sampled_as_json(space[key]) else value for key, value in params.items()}


def _sampled_as_json(dimension) -> bool:
    return isinstance(dimension, Choices) and any(isinstance(v, tuple) for v in dimension.values)

