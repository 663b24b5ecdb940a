"""Typed config: YAML in, overrides, clear errors naming the field; every shipped config expands."""
from pathlib import Path

import pytest

from sendit.config import ConfigError, StudyConfig, load_study, save_yaml
from sendit.study import plan

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


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_expands(path):
    cfg = load_study(path)
    assert isinstance(cfg, StudyConfig)
    runs = plan(cfg)
    assert runs and len({r.run_id for r in runs}) == len(runs)
