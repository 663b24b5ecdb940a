"""Typed configuration: one dataclass per pipeline stage, loaded from YAML, overridable from the CLI.

A study is reproducible from the `config.yaml` written next to its results: it is this dataclass
tree, serialised with every default filled in.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sendit.errors import InputError
from sendit.io import atomic_write_text


class ConfigError(InputError):
    """A config file or override that cannot be used; the message names the file and field."""


@dataclass
class CleanConfig:
    """Tweet denoising as in the SEND-IT paper; each step is a switch."""

    html: bool = True  # unescape HTML entities (&amp; -> &) before anything else
    mentions: bool = True  # strip @mentions (and the USER placeholder of the label/text shards)
    urls: bool = True  # strip URLs (and the URL placeholder)
    hashtags: bool = True  # strip #hashtags, word included
    symbols: bool = True  # strip non-alphanumeric characters: emoji, punctuation
    lowercase: bool = True
    drop_empty: bool = True  # drop texts that cleaning left empty
    drop_duplicates: bool = True  # keep the first of identical cleaned texts


@dataclass
class DataConfig:
    """Where the examples come from and how they are cleaned, sampled and split."""

    dataset: str = "sentiment140"  # registry name: sentiment140, csv, jsonl, ...
    path: str | None = None  # file or folder; None: the registry's default location under ./data
    format: str | None = None  # reader variant, e.g. sentiment140 "raw6" or "label_text"; None: detect
    text_column: str = "text"  # csv/jsonl: column holding the text
    label_column: str = "label"  # csv/jsonl: column holding the label
    label_names: list[str] | None = None  # label names in class-index order; None: from the dataset
    encoding: str | None = None  # None: UTF-8, falling back to latin-1 where the format allows
    sample: int | None = None  # stratified downsample of the pool to this many examples
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train/val/test fractions
    seed: int = 42  # seed of the sample and the split (independent of the training seed)
    # Stratified sample of a dataset's own test split (e.g. 2,000 of IMDb's 25,000), with `seed`.
    test_sample: int | None = None
    # Target datasets (dong2014, semeval2014_*): the model reads "pair" (sentence, target) or
    # "inline" (the sentence with the target marked: "the [TGT] battery [/TGT] lasts").
    target_mode: str = "pair"
    # Texts longer than max_length: "head" keeps the first tokens; "head_tail" the first quarter and
    # the rest from the end (at 512: first 128 + last 382, Sun et al. 2019), for long reviews (imdb).
    truncation: str = "head"
    # true: a source's own validation split joins its train pool and validation is carved from that pool with
    # `split`. TweetEval's choice for SemEval: it trains on most of the 2016 test tweets that are semeval2017's
    # val here. Not for a source whose val is the set one reports (SST-2's dev).
    merge_val: bool = False
    # A transfer set: this many more texts, a stratified sample of the train pool outside `sample` (so never
    # a val or test text nor a copy of one), for the runs that ask for it (`transfer: labels | teacher` on a
    # run or a study's method). Needs `sample`. 0: none.
    transfer: int = 0
    clean: CleanConfig = field(default_factory=CleanConfig)

    def __post_init__(self):
        if self.transfer < 0:
            raise ConfigError(f"data.transfer={self.transfer}: a number of texts, 0 or more")


@dataclass
class ModelConfig:
    """Which pretrained model, and how its inputs are shaped."""

    name: str = "minilm"  # alias (minilm), hub id, or local directory
    max_length: int = 64  # tokens; tweets are short (99% under 64 MiniLM tokens)
    padding_side: str | None = None  # None: the model's own (right); decoders pool the last real token
    attention: str | None = None  # transformers' attn_implementation: sdpa | eager; None: its default (sdpa)
    attention_dropout: float | None = None  # dropout on attention probabilities; None: the model's own


@dataclass
class MethodConfig:
    """One adaptation method; `options` are the method's own fields (see `sendit methods`)."""

    name: str = "lora"
    lr: float | None = None  # None: the method's default learning rate
    options: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # display name in tables (default: name); distinguishes variants


DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """The optimisation loop, shared by every method."""

    epochs: float = 1.0
    batch_size: int = 32
    max_steps: int | None = None  # stop after this many optimizer steps (seed 002 used 100)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    scheduler: str = "linear"  # linear | cosine | constant
    eval_every_steps: int | None = None  # None: validate once per epoch
    evals_per_epoch: int = 1  # >1 validates several times per epoch (seed 003 used 2)
    # Stop a phase once this many validations in a row brought no gain in `selection.metric` (>= 1; 1: at
    # the first validation without a gain). None: every scheduled validation runs.
    early_stopping_patience: int | None = None
    device: str = "auto"  # auto | cpu | cuda | mps; auto: CUDA, then MPS, then the CPU
    # Training precision: auto | fp32 | bf16 | fp16 (fp16 with loss scaling). auto: on CUDA bf16 where
    # the GPU has it natively (compute capability >= 8.0), else fp16; on a CPU or MPS the faster of a
    # few timed training steps of this model, measured once per machine (see sendit.hardware).
    precision: str = "auto"
    eval_precision: str = "auto"  # validation and inference: as `precision`, timed on forward passes
    # Replaced by `precision` and `eval_precision`; old configs keep working: true sets both to bf16,
    # false to fp32 (and it is written back as null).
    bf16: bool | None = None
    length_buckets: bool = True  # batches of similar length, shuffled: less padding, same randomness
    # Token-budget batching: batches of up to this many padded tokens (rows x longest row) instead of
    # batch_size examples; needs length_buckets. None: batch_size examples per batch.
    batch_tokens: int | None = None
    threads: int | None = None  # torch threads; None: torch's default
    # Inference in length-sorted batches of this many texts: 64 pads 7.5% of a tweet test set where 128 pads
    # 15.6%, and measured 6-16% faster on minilm (benchmarks/results/eval_batch.md); 32 runs smaller matmuls.
    eval_batch_size: int = 64
    seed: int = 42
    grad_clip: float = 1.0
    fused_optimizer: bool = True  # torch's fused AdamW kernel; false: its per-tensor loop (slower on CPU)
    reuse_freed_memory: bool = True  # keep freed memory in the process (glibc); false: page faults every step
    # With bf16 training: frozen linear weights kept in bf16, the values autocast would cast them to in every
    # forward pass: same results, half their memory, no per-step cast. false: kept in float32.
    bf16_frozen_weights: bool = True
    # On a CPU, training's dropout masks (the layers', and the attention probabilities' under SDPA attention) drawn
    # 16 bits at a time (sendit.dropout; p rounded to 1/65536): the same masks in distribution at a quarter of the
    # random draws, 1.1-1.8x faster training (benchmarks/results/fast_dropout.md). false: torch's dropout.
    fast_dropout: bool = True
    # A checkpoint (`checkpoint.safetensors` in the run directory) after the first step that ends this many
    # minutes after the last one (or the start): a killed run, started again by the same `sendit study` or
    # `sendit train`, goes on from it and ends as it would have uninterrupted. A save copies the trained
    # weights, the best ones and the optimizer's state to disk; between saves a step pays one clock read.
    # 0: after every step. None: no checkpoints (nor resuming from one).
    checkpoint_minutes: float | None = 10.0

    def __post_init__(self):
        for name, allowed in (("device", DEVICES), ("precision", PRECISIONS), ("eval_precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"train.{name}={getattr(self, name)!r}: one of {', '.join(allowed)}")
        if self.bf16 is not None:
            self._migrate_bf16()
        if self.batch_tokens is not None and (self.batch_tokens < 1 or not self.length_buckets):
            raise ConfigError(f"train.batch_tokens={self.batch_tokens}: needs a positive token count and "
                              "train.length_buckets: true (budgets cut length-sorted buckets)")
        if self.checkpoint_minutes is not None and self.checkpoint_minutes < 0:
            raise ConfigError(f"train.checkpoint_minutes={self.checkpoint_minutes}: minutes between checkpoints, "
                              "0 or more (null: no checkpoints)")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError(f"train.early_stopping_patience={self.early_stopping_patience}: must be at least 1 "
                              "(validations in a row without a gain); the old 0, stop at the first "
                              "validation without a gain, is now 1")

    def _migrate_bf16(self) -> None:
        legacy = "bf16" if self.bf16 else "fp32"
        for name in ("precision", "eval_precision"):
            if getattr(self, name) not in ("auto", legacy):
                raise ConfigError(f"train.bf16={str(self.bf16).lower()} contradicts train.{name}="
                                  f"{getattr(self, name)}: remove train.bf16 (write train.precision and "
                                  "train.eval_precision instead)")
            setattr(self, name, legacy)
        self.bf16 = None


# The validation metrics a selection may rank by (keys of sendit.evaluate.classification_metrics), and
# how texts name them.
SELECTION_METRICS = {"f1_macro": "macro-F1", "accuracy": "accuracy", "recall_macro": "macro-recall"}


@dataclass
class SelectionConfig:
    """What "best on validation" means, for the checkpoint a run keeps, its early stopping, the
    configuration a study selects, the seeds it re-runs and a study's teacher alike."""

    # f1_macro | accuracy (seed 004 chose on it) | recall_macro (SemEval-2017 4A ranks systems by it)
    metric: str = "f1_macro"

    def __post_init__(self):
        if self.metric not in SELECTION_METRICS:
            raise ConfigError(f"selection.metric={self.metric!r}: one of {', '.join(SELECTION_METRICS)}")


@dataclass
class DistillConfig:
    """Knowledge distillation (Hinton et al. 2015) from a trained run into this run's model."""

    # The teacher's run directory (any method), or in a study also a study directory: its best run on
    # validation, by that study's `selection.metric`. The teacher must have been trained on the same data
    # (its splits).
    teacher: str = ""
    temperature: float = 2.0  # T: softens both distributions; the KL term is scaled by T^2
    alpha: float = 0.5  # weight of the soft (KL) term; 1 - alpha weighs cross-entropy on the labels


# What a run does with the data's transfer set (`data.transfer`): none | labels (trains on its texts
# with their gold labels: a teacher, or distillation's control arm) | teacher (its texts without
# their labels, learnt from the teacher's soft targets alone: needs `distill`).
TRANSFER_MODES = ("none", "labels", "teacher")


def check_transfer(mode: str, distill: DistillConfig | None) -> None:
    if mode not in TRANSFER_MODES:
        raise ConfigError(f"transfer={mode!r}: one of {', '.join(TRANSFER_MODES)}")
    if mode == "teacher" and distill is None:
        raise ConfigError("transfer=teacher learns the transfer texts from a teacher's soft targets: "
                          "it needs a distill block (or transfer: labels for their gold labels)")


def check_transfer_set(data: DataConfig, mode: str, where: str) -> None:
    if mode != "none" and data.transfer == 0:
        raise ConfigError(f"{where}transfer={mode}: the data has no transfer set: set data.transfer to a number of "
                          "texts (drawn from outside data.sample)")


@dataclass
class StudyMethodConfig(MethodConfig):
    """A method of a study and the grid its runs cover: one configuration per combination of values."""

    # key -> values, e.g. {lr: [5e-4, 1e-3], batch_size: [8, 16], r: [8, 16]}. A key is `lr`, a train
    # field (batch_size, epochs, ... but not seed) or an option of the method (lora: r, alpha, ...).
    grid: dict[str, Any] = field(default_factory=dict)
    # With it, this method's runs learn from the teacher's soft targets too: list the method twice, with
    # and without (another `label`), for the KD arm and its control on the same seeds.
    distill: DistillConfig | None = None
    transfer: str = "none"  # none | labels | teacher: what its runs do with the data's transfer set (above)
    # The space a study's `search:` samples for this method (instead of a grid): key -> a list of
    # choices, or a range {low, high, log: true|false} (whole numbers for integer fields). Keys as in
    # `grid`, e.g. {lr: {low: 1e-4, high: 1e-2, log: true}, batch_size: [16, 32], r: [8, 16]}.
    search: dict[str, Any] = field(default_factory=dict)
    # Configurations the search tries first (Optuna's enqueue_trial), e.g. [{lr: 5e-4}]: today's
    # default, so the search starts from what is known. Count against the budget.
    search_start: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self):
        check_transfer(self.transfer, self.distill)


SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "successive_halving", "hyperband", "none")


@dataclass
class SearchConfig:
    """A hyperparameter search (Optuna) over each method's `search` space, one budget for every method.

    Exactly one budget: `trials` (configurations per method), `examples` (training examples per
    method, so a pruned trial costs less than a full one) or `minutes` (wall clock per method: depends
    on the machine and its load, so not reproducible; the study records that).
    """

    trials: int | None = None
    examples: int | None = None
    minutes: float | None = None
    sampler: str = "tpe"  # tpe (Optuna's TPESampler) | random
    # Stops a trial at a validation whose score is poor next to earlier trials' at the same validation:
    # median (Optuna's MedianPruner) | successive_halving | hyperband | none.
    pruner: str = "median"
    startup_trials: int = 5  # trials sampled at random (TPE) and never pruned before the pruner compares
    seed: int = 0  # the sampler's seed; run sequentially, the same seed samples the same trials

    def __post_init__(self):
        budgets = {name: getattr(self, name) for name in ("trials", "examples", "minutes")
                   if getattr(self, name) is not None}
        if len(budgets) != 1:
            raise ConfigError(f"search: give exactly one budget of trials, examples or minutes (got "
                              f"{', '.join(budgets) or 'none'})")
        (name, value), = budgets.items()
        if value <= 0:
            raise ConfigError(f"search.{name}={value}: a budget must be positive")
        for name, allowed in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"search.{name}={getattr(self, name)!r}: one of {', '.join(allowed)}")
        if self.startup_trials < 0:
            raise ConfigError(f"search.startup_trials={self.startup_trials}: cannot be negative")

    def describe_budget(self) -> str:
        """The budget in words, e.g. "20 trials" or "30 minutes (wall clock: not reproducible)"."""
        if self.trials is not None:
            return f"{self.trials} trials"
        if self.examples is not None:
            return f"{self.examples:,} training examples"
        return f"{self.minutes:g} minutes (wall clock: not reproducible)"


DEPLOY_VARIANTS = ("torch_fp32", "torch_bf16", "onnx_fp32", "onnx_int8")


@dataclass
class DeployConfig:
    """Each method's selected run measured as it would be deployed on this CPU (`sendit.deploy_study`)."""

    # Any of torch_fp32, torch_bf16 (measured only where sendit.hardware times bf16 inference faster
    # here, else recorded as skipped with the timings), onnx_fp32, onnx_int8 (`sendit export`).
    variants: list[str] = field(default_factory=lambda: list(DEPLOY_VARIANTS))
    batch_size: int = 64  # examples per batch of the throughput measurement (length-sorted, as evaluation)
    latency_texts: int = 200  # test texts labelled one at a time for the p50/p99 latency
    # Validation accuracy points an export may lose against its run: onnx_int8's, and a QLoRA run's fp32 one
    # (computed in bf16 by the run); beyond, the variant is skipped with the reason (`sendit export --max-loss`).
    max_loss: float = 1.0
    threads: int | None = None  # torch and ONNX Runtime threads alike; None: torch's current count

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in DEPLOY_VARIANTS]
        if unknown or not self.variants:
            problem = f"unknown {', '.join(unknown)}" if unknown else "none listed"
            raise ConfigError(f"deploy.variants={self.variants!r}: {problem}; choose from {', '.join(DEPLOY_VARIANTS)}")
        for name in ("batch_size", "latency_texts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"deploy.{name}={getattr(self, name)}: must be at least 1")
        if not self.max_loss >= 0:
            raise ConfigError(f"deploy.max_loss={self.max_loss}: accuracy points, 0 or more")


@dataclass
class StudyConfig:
    """A comparative study: methods x grid x seeds x training-set sizes over one dataset and model.

    Per method and size, the configuration with the best mean validation score (`selection.metric`,
    over `seeds`) is chosen; test metrics are only reported, never used to choose.
    """

    name: str = "study"
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)  # passed into every run's config
    methods: list[StudyMethodConfig] = field(default_factory=lambda: [StudyMethodConfig()])
    seeds: list[int] = field(default_factory=lambda: [42])  # every grid configuration runs on each
    # Training-set sizes: stratified subsets of the train split, all evaluated on the same val and
    # test splits (e.g. [5000, 10000, 25000]). None: the whole train split.
    sizes: list[int] | None = None
    # Then re-run each method's best configuration (per size) on these seeds too, for the statistics.
    reseed_best: list[int] = field(default_factory=list)
    # A hyperparameter search (Optuna) over the `search` space of each method that has one; its
    # trials run on the first of `seeds`, and are runs like a grid's (see sendit.search).
    search: SearchConfig | None = None
    # The figures and HTML report at the end (tens of seconds of plotting); false leaves them to a
    # later `sendit report DIR`, which makes the same report from the study's files.
    report: bool = True
    # Measure each method's selected run deployed (torch fp32/bf16, ONNX fp32/int8) once the runs are done:
    # `<study>/deploy.csv`, drawn by the report. `deploy: {}` takes every default; None: not measured.
    deploy: DeployConfig | None = None

    def __post_init__(self):
        for index, method in enumerate(self.methods):
            check_transfer_set(self.data, method.transfer, f"methods[{index}] ({method.label or method.name}).")

    @property
    def directory(self) -> Path:
        return Path(self.output_dir) / self.name


@dataclass
class RunConfig:
    """Everything one training run needs; written as `config.yaml` in its run directory."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Runs saved before there was a choice have none in their config.yaml: they were kept on macro-F1.
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    distill: DistillConfig | None = None
    transfer: str = "none"  # none | labels | teacher: what it does with the data's transfer set (TRANSFER_MODES)

    def __post_init__(self):
        check_transfer(self.transfer, self.distill)
        check_transfer_set(self.data, self.transfer, "")


def _build(cls: type, values: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown fields with their dotted path."""
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:  # a dataclass's own check: name the file too
        raise ConfigError(f"{where}: {err}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if origin is list:
        if not isinstance(value, list):
            value = [value]
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is Any:
        return value
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool):  # int(True) == 1: a switch given where a number belongs
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if hint is int and isinstance(value, int):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if hint is float:
            return number
        if not number.is_integer():  # int(8.5) == 8 would silently train on another value
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return int(number)
    if hint is str:
        return str(value)
    return value


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return values


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a nested mapping."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=2")
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return values


def load_study(path: str | Path, overrides: list[str] = ()) -> StudyConfig:
    values = apply_overrides(load_yaml(path), list(overrides))
    try:
        return _build(StudyConfig, values, str(path))
    except TypeError as err:
        raise ConfigError(f"{path}: {err}") from None


def load_run(path: str | Path) -> RunConfig:
    """A saved run's config. Runs saved before patience counted validations without a gain stored the
    same behaviour as 0; it reads as today's 1 (a new config with 0 is refused)."""
    values = load_yaml(path)
    train = values.get("train")
    if isinstance(train, dict) and train.get("early_stopping_patience") == 0:
        train["early_stopping_patience"] = 1
    return _build(RunConfig, values, str(path))


def build(cls: type, values: dict, where: str = "config") -> Any:
    return _build(cls, values, where)


def save_yaml(config: Any, path: str | Path) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(config), sort_keys=False))
