"""Typed config: YAML in, overrides, clear errors naming the field; every shipped config expands."""
import math
from pathlib import Path

import pytest
import yaml

from typer.testing import CliRunner

from sendit.cli import app
from sendit.config import ConfigError, RunConfig, SelectionConfig, load_run, load_study, save_yaml, to_dict
from sendit.plan import plan

CONFIGS = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))


def test_yaml_round_trip_and_overrides(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ntrain: {epochs: 2}\nmethods: [{name: lora, lr: 1e-3, options: {r: 4}}]\n")
    cfg = load_study(path, ["train.batch_size=8", "model.name=tiny-bert"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.model.name) == (2.0, 8, "tiny-bert")
    assert cfg.methods[0].lr == 1e-3 and cfg.methods[0].options == {"r": 4}
    save_yaml(cfg, tmp_path / "again.yaml")
    assert load_study(tmp_path / "again.yaml") == cfg


@pytest.mark.parametrize("text, message", [
    ("train: {epoch: 2}", r"s.yaml.train: unknown field\(s\) epoch"),
    ("train: {epochs: many}", r"s.yaml.train.epochs: expected a number, got 'many'"),
    ("data: {clean: {lowercase: maybe}}", r"s.yaml.data.clean.lowercase: expected true/false"),
    ("- just a list", "the top level must be a mapping"),
    ("name: [unclosed", "not valid YAML"),
    ("train: {early_stopping_patience: 0}", r"s.yaml.*early_stopping_patience=0: must be at least 1.*old 0.*is now 1"),
    ("selection: {metric: f1}", r"s.yaml.selection: selection.metric='f1': one of f1_macro, accuracy, recall_macro"),
])
def test_bad_config_names_file_and_field(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_study(path)


def test_bad_override_is_explained(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\n")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_study(path, ["train.epochs"])


def study_from(tmp_path, text: str, overrides=()):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_study(path, list(overrides))


def test_numbers_keep_the_type_of_their_field(tmp_path):
    """An int field stays int (batch sizes index tensors), a float field float even from a YAML 1.1
    string such as 1e-4 (PyYAML reads it as a str)."""
    cfg = study_from(tmp_path, "train: {batch_size: 8, epochs: 2, max_steps: '100', weight_decay: 0}\n"
                               "methods: [{name: lora, lr: 1e-4}]\n", ["train.eval_batch_size=64.0"])
    assert type(cfg.train.batch_size) is int and cfg.train.batch_size == 8
    assert type(cfg.train.max_steps) is int and cfg.train.max_steps == 100
    assert type(cfg.train.eval_batch_size) is int and cfg.train.eval_batch_size == 64  # a whole float is fine
    assert type(cfg.train.epochs) is float and cfg.train.epochs == 2.0
    assert type(cfg.train.weight_decay) is float
    assert type(cfg.methods[0].lr) is float and cfg.methods[0].lr == 1e-4


@pytest.mark.parametrize("text, expected", [("'false'", False), ("'no'", False), ("'0'", False),
                                             ("'True'", True), ("'yes'", True), ("false", False), ("true", True)])
def test_a_switch_given_as_a_string_reads_as_the_word_says(tmp_path, text, expected):
    """A quoted 'false' in YAML (or from an environment template) must not become True."""
    cfg = study_from(tmp_path, f"data: {{clean: {{lowercase: {text}}}}}\n")
    assert cfg.data.clean.lowercase is expected


def test_grid_values_keep_their_types_through_planning(tmp_path):
    cfg = study_from(tmp_path, "methods: [{name: lora, grid: {batch_size: [8, 16], lr: ['1e-4'], epochs: [2]}}]\n")
    runs = plan(cfg)
    assert [r.run_id for r in runs] == ["lora-lr0.0001-bs8-ep2-seed42", "lora-lr0.0001-bs16-ep2-seed42"]
    assert [type(r.config.train.batch_size) for r in runs] == [int, int]
    assert [type(r.config.train.epochs) for r in runs] == [float, float]
    assert [type(r.config.method.lr) for r in runs] == [float, float] and runs[0].config.method.lr == 1e-4


@pytest.mark.parametrize("text, message", [
    ("train: {batch_size: 8.5}", r"s.yaml.train.batch_size: expected a whole number, got 8.5"),
    ("train: {batch_size: true}", r"s.yaml.train.batch_size: expected a number, got True"),
    ("train: {epochs: false}", r"s.yaml.train.epochs: expected a number, got False"),
    ("methods: [{name: lora, lr: yes}]", r"s.yaml.methods\[0\].lr: expected a number, got True"),
    ("methods: [{name: lora, grid: {batch_size: [8, 8.5]}}]",
     r"methods\[0\] \(lora\).grid.batch_size: expected a whole number, got 8.5"),
])
def test_a_number_of_the_wrong_kind_is_an_error_naming_the_field(tmp_path, text, message):
    """int(8.5) == 8 and int(True) == 1: a silent cast would train on a value nobody asked for."""
    with pytest.raises(ConfigError, match=message):
        plan(study_from(tmp_path, text))


@pytest.mark.parametrize("text, message", [
    ("methods: [{name: lora, options: {target: qkv}}]", r"methods.lora.options.target='qkv': unknown preset"),
    ("methods: [{name: dora, options: {target: all}}]", r"methods.dora.options.target='all': unknown preset"),
    ("methods: [{name: qlora, options: {quant_type: int4}}]", r"methods.qlora.options.quant_type 'int4' unknown"),
])
def test_a_method_option_value_it_cannot_use_fails_when_the_study_is_planned(tmp_path, text, message):
    """Before any data is prepared or model built: a typo in a study YAML costs a second, not a run."""
    with pytest.raises(ConfigError, match=message):
        plan(study_from(tmp_path, text))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_expands(path):
    """As many distinct runs as methods x grid points x sizes x seeds, counted from the YAML itself (a
    searched method's runs are its trials, planned as the search goes)."""
    raw = yaml.safe_load(path.read_text())
    points = sum(math.prod(len(v) if isinstance(v, list) else 1 for v in m.get("grid", {}).values())
                 for m in raw["methods"] if not m.get("search"))
    runs = plan(load_study(path))
    assert len({r.run_id for r in runs}) == points * len(raw.get("sizes") or [None]) * len(raw.get("seeds", [42]))


def test_quickstart_plans_its_five_methods_in_order():
    assert [r.run_id for r in plan(load_study(CONFIGS[0].with_name("quickstart.yaml")))] == [
        "zero_shot-bs32-ep1-seed42", "head-lr0.002-bs32-ep1-seed42", "bitfit-lr0.002-bs32-ep1-seed42",
        "lora-lr0.0005-bs32-ep1-seed42", "full-lr5e-05-bs32-ep1-seed42"]


def test_the_selection_metric_reaches_every_run_and_old_runs_load_as_macro_f1(tmp_path):
    cfg = study_from(tmp_path, "selection: {metric: recall_macro}\nmethods: [{name: lora, grid: {lr: [1e-3, 2e-3]}}]\n")
    assert [r.config.selection.metric for r in plan(cfg)] == ["recall_macro", "recall_macro"]
    saved = to_dict(RunConfig(selection=SelectionConfig("accuracy")))
    del saved["selection"]  # a run saved before the setting existed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert load_run(tmp_path / "config.yaml").selection.metric == "f1_macro"


def test_study_command_names_the_selection_metric_or_refuses_an_unknown_one(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nreseed_best: [2]\nmethods: [{name: lora}]\n")
    result = CliRunner().invoke(app, ["study", str(path), "--dry-run", "--set", "selection.metric=accuracy"])
    assert result.exit_code == 0
    assert "(chosen on validation accuracy once the grid is done)" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["study", str(path), "--set", "selection.metric=bogus"])
    assert result.exit_code == 2
    assert "selection.metric='bogus': one of f1_macro, accuracy, recall_macro" in " ".join(result.output.split())
