"""The plan of a study: its runs (methods x sizes x grid x seeds), each with an id that encodes every
value the study varies, the search spaces of the methods a search tunes (checked here, sampled by
`sendit.search`), the re-runs of the best configurations, and the data every run shares (prepared
and tokenised once; a training-set size is a stratified subset of it).
"""
from __future__ import annotations

import dataclasses
import itertools
import re
import typing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sendit.config import (ConfigError, MethodConfig, ModelConfig, RunConfig, StudyConfig, StudyMethodConfig,
                           TrainConfig, build, to_dict)
from sendit.pruning import TrialRef
from sendit.results import select

if TYPE_CHECKING:
    from sendit.data import Splits


# -- planning -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedRun:
    config_id: str  # every value the study varies except the seed, e.g. lora-n5000-lr0.0005-bs16-ep3-r16
    config: RunConfig
    size: int | None = None  # training examples; None: the whole train split
    trial: TrialRef | None = None  # the search trial this run is, its validations reported for pruning

    @property
    def run_id(self) -> str:
        return f"{self.config_id}-seed{self.config.train.seed}"

    def with_seed(self, seed: int) -> "PlannedRun":
        """The same configuration on another seed: a re-run, no longer a search trial."""
        return replace(self, config=replace(self.config, train=replace(self.config.train, seed=seed)), trial=None)


def plan(cfg: StudyConfig) -> list[PlannedRun]:
    """The grid runs of the study in execution order: methods (cheapest first, as listed) x sizes x grid x seeds.

    The trials of searched methods (`sendit.search`) and the re-runs of the best configurations
    (`reseed_plan`) are planned as the study goes; their spaces are checked here, before any work.
    """
    search_spaces(cfg)
    runs = [configuration.with_seed(seed) for configuration in configurations(cfg) for seed in cfg.seeds]
    ids = [r.run_id for r in runs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"study '{cfg.name}': runs {duplicates} appear twice; give variants a `label`")
    return runs


def configurations(cfg: StudyConfig) -> list[PlannedRun]:
    """One planned run (on the study's train seed) per method x size x grid point."""
    from sendit.methods import get_method

    planned = []
    for index, study_method in enumerate(cfg.methods):
        method = method_config(study_method)
        get_method(method)  # validates the name and options before anything runs
        if study_method.search:
            continue  # its configurations are the search's trials
        where = f"methods[{index}] ({method.label or method.name}).grid"
        points = [(point, *apply_grid_point(method, cfg.train, cfg.model, point, where))
                  for point in grid_points(study_method, where)]
        for size in cfg.sizes or [None]:
            for point, method_cfg, train_cfg, model_cfg in points:
                name = name_configuration(method_cfg, get_method(method_cfg).lr, train_cfg, model_cfg, size, point)
                planned.append(PlannedRun(name, RunConfig(data=cfg.data, model=model_cfg, method=method_cfg,
                                                          train=train_cfg, selection=cfg.selection,
                                                          distill=study_method.distill,
                                                          transfer=study_method.transfer), size))
    return planned


def method_config(study_method: StudyMethodConfig) -> MethodConfig:
    """A study's method entry as a run's method (without its grid, search and distillation blocks)."""
    return MethodConfig(**{f.name: getattr(study_method, f.name) for f in dataclasses.fields(MethodConfig)})


def grid_points(method: StudyMethodConfig, where: str) -> list[dict]:
    """Every combination of the grid's values ([{}] without a grid), in the order the config lists them."""
    values = {key: value if isinstance(value, list) else [value] for key, value in method.grid.items()}
    empty = [key for key, value in values.items() if not value]
    if empty:
        raise ConfigError(f"{where}.{empty[0]}: an empty list of values")
    return [dict(zip(values, combination)) for combination in itertools.product(*values.values())]


# -- search spaces ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Choices:
    """One of these values (Optuna's suggest_categorical)."""

    values: tuple


@dataclass(frozen=True)
class Range:
    """A number from low to high (Optuna's suggest_float, or suggest_int for integer fields)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


SearchSpace = dict  # key -> Choices | Range


def search_spaces(cfg: StudyConfig) -> dict[int, SearchSpace]:
    """The space of each searched method (by its index in `methods`), checked: a search budget, one
    seed, no grid beside it, known keys, non-empty and ordered ranges; errors name the field."""
    spaces = {}
    for index, study_method in enumerate(cfg.methods):
        where = f"methods[{index}] ({study_method.label or study_method.name}).search"
        if not study_method.search:
            if study_method.search_start:
                raise ConfigError(f"{where}_start: starting points need a `search` space")
            continue
        if cfg.search is None:
            raise ConfigError(f"{where}: a search space needs the study's `search:` block (its budget and sampler)")
        if study_method.grid:
            raise ConfigError(f"{where}: give a method a grid or a search space, not both")
        if len(cfg.seeds) != 1 or cfg.sizes:
            raise ConfigError(f"{where}: a search runs its trials on one seed and the whole train split; "
                              "set `seeds` to one seed (`reseed_best` re-runs the best on more) and drop `sizes`")
        spaces[index] = {key: _dimension(study_method, key, spec, f"{where}.{key}")
                         for key, spec in study_method.search.items()}
        method = method_config(study_method)
        for start, point in enumerate(study_method.search_start):  # a starting point must be a valid point
            apply_grid_point(method, cfg.train, cfg.model, point, f"{where}_start[{start}]")
    if cfg.search is not None and not spaces:
        raise ConfigError("search: no method has a `search` space to tune")
    return spaces


def _dimension(study_method: StudyMethodConfig, key: str, spec, where: str):
    from sendit.methods import METHODS

    field_types = {**typing.get_type_hints(TrainConfig), **typing.get_type_hints(METHODS[study_method.name].Options),
                   "lr": float}
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: an empty list of choices")
        values = [tuple(v) if isinstance(v, list) else v for v in spec]
        for value in spec:  # each choice must make a valid configuration
            apply_grid_point(method_config(study_method), TrainConfig(), ModelConfig(), {key: value}, where)
        return Choices(tuple(values))
    if not isinstance(spec, dict) or set(spec) - {"low", "high", "log"} or not {"low", "high"} <= set(spec):
        raise ConfigError(f"{where}: a list of choices or a range {{low: .., high: .., log: true|false}}, got {spec!r}")
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: low and high must be numbers, got {spec['low']!r} and {spec['high']!r}") from None
    if not low < high:
        raise ConfigError(f"{where}: an empty or inverted range (low {low:g} must be below high {high:g})")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range must start above 0 (low {low:g})")
    integer = field_types.get(key) in (int, int | None)
    apply_grid_point(method_config(study_method), TrainConfig(), ModelConfig(), {key: int(low) if integer else low},
                     where)  # a known key that takes a number
    return Range(low, high, log, integer)


# Model fields a grid may vary: those that leave tokenisation alone (a study tokenises once).
GRID_MODEL_FIELDS = {"attention", "attention_dropout"}


def apply_grid_point(method: MethodConfig, train: TrainConfig, model: ModelConfig, point: dict,
                     where: str) -> tuple[MethodConfig, TrainConfig, ModelConfig]:
    """The method, train and model configs of one grid point; a key that is neither lr, a train
    field, an option of the method nor one of GRID_MODEL_FIELDS is an error naming it."""
    from sendit.methods import METHODS

    options = {f.name for f in dataclasses.fields(METHODS[method.name].Options)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"seed"}  # seeds come from `seeds`
    unknown = sorted(set(point) - options - train_fields - GRID_MODEL_FIELDS - {"lr"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; use lr, a train field "
                          f"({', '.join(sorted(train_fields))}), a model field ({', '.join(sorted(GRID_MODEL_FIELDS))}) "
                          f"or an option of {method.name} ({', '.join(sorted(options)) or 'it has none'})"
                          + ("; seeds are the study's `seeds`" if unknown[0] == "seed" else ""))
    method_cfg = build(MethodConfig, {**to_dict(method), "lr": point.get("lr", method.lr),
                                      "options": {**method.options, **{k: point[k] for k in options & set(point)}}},
                       where)
    train_cfg = build(TrainConfig, {**to_dict(train), **{k: point[k] for k in train_fields & set(point)}}, where)
    model_cfg = build(ModelConfig, {**to_dict(model), **{k: point[k] for k in GRID_MODEL_FIELDS & set(point)}}, where)
    return method_cfg, train_cfg, model_cfg


def name_configuration(method: MethodConfig, lr: float | None, train: TrainConfig, model: ModelConfig,
                       size: int | None, point: dict) -> str:
    """A configuration id encoding every value the study varies: stable across re-runs, readable."""
    parts = [method.label or method.name]
    if size is not None:
        parts.append(f"n{size}")
    if lr is not None:
        parts.append(f"lr{lr:g}")
    parts += [f"bs{train.batch_size}", f"ep{train.epochs:g}"]
    current = {**to_dict(train), **to_dict(model), **method.options}
    parts += [f"{key}{_slug(current[key])}" for key in point if key not in ("lr", "batch_size", "epochs")]
    return "-".join(parts)


def _slug(value) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(_slug(v) for v in value)
    text = f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9.+_]", "_", text)


def reseed_plan(cfg: StudyConfig, grid: list[PlannedRun], results: pd.DataFrame) -> list[PlannedRun]:
    """Each method's best grid configuration (per size) on the `reseed_best` seeds it has not run on.

    `results` are the grid's runs only: a re-run from an earlier invocation must not sway the choice.
    """
    chosen = set(select(results).get("config_id", []))
    in_grid = {r.run_id for r in grid}
    best = {r.config_id: r for r in grid if r.config_id in chosen}
    return [run for configuration in best.values() for run in map(configuration.with_seed, cfg.reseed_best)
            if run.run_id not in in_grid]


# -- data shared by every run ---------------------------------------------------------------------

@dataclass
class StudyData:
    """The splits and their token ids, built once per study and shared by every run and worker."""

    splits: Splits
    encoded: dict  # split name -> Encoded
    subsets: dict[int, np.ndarray]  # training-set size -> rows of the train split

    @classmethod
    def build(cls, cfg: StudyConfig) -> "StudyData":
        from sendit.data import prepare
        from sendit.models import load_tokenizer
        from sendit.run import encode_splits

        splits = prepare(cfg.data)
        encoded = encode_splits(load_tokenizer(cfg.model.name), splits, cfg.data, cfg.model.max_length)
        return cls(splits, encoded, {size: subset_rows(splits.train, size, cfg.data.seed) for size in cfg.sizes or []})

    def for_size(self, size: int | None):
        """(splits, encoded) of a run on `size` training examples: val and test are always the full splits."""
        if size is None:
            return self.splits, self.encoded
        from sendit.data.prepare import label_counts

        rows = self.subsets[size]
        train = self.splits.train.iloc[rows].reset_index(drop=True)
        stats = self.splits.stats
        stats = {**stats, "train_pool": len(self.splits.train),
                 "split_sizes": {**stats["split_sizes"], "train": len(train)},
                 "label_counts": {**stats["label_counts"], "train": label_counts(train, self.splits.label_names)}}
        return replace(self.splits, train=train, stats=stats), {**self.encoded,
                                                                 "train": self.encoded["train"].subset(rows)}

    def for_run(self, planned: PlannedRun):
        """(splits, encoded) of a planned run: its training-set size, then the transfer set it asks for."""
        splits, encoded = self.for_size(planned.size)
        if planned.config.transfer == "none":
            return splits, encoded
        return (splits.with_transfer(planned.config.transfer),
                {**encoded, "train": encoded["train"].concat(encoded["transfer"])})

    def describe(self) -> str:
        splits = self.splits
        dropped = ", ".join(f"{k} {v:,}" for k, v in splits.stats.items()
                            if k.startswith(("dropped", "rows")) and isinstance(v, int))
        sizes = f"; training-set sizes {', '.join(f'{s:,}' for s in self.subsets)}" if self.subsets else ""
        transfer = f"; transfer set {len(splits.transfer):,}" if len(splits.transfer) else ""
        return (f"data: train {len(splits.train):,} / val {len(splits.val):,} / test {len(splits.test):,}, "
                f"labels {splits.label_names}; {dropped}{sizes}{transfer}")


def subset_rows(train: pd.DataFrame, size: int, seed: int) -> np.ndarray:
    """Rows of a stratified subset of the train split (the same seed: the same subset for every run)."""
    from sendit.data.split import stratified_sample

    if size > len(train):
        raise ConfigError(f"sizes: {size:,} training examples asked, but the train split has {len(train):,}")
    return np.sort(stratified_sample(train.assign(row=np.arange(len(train))), size, seed)["row"].to_numpy())


