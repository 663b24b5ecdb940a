"""CLI option defaults are the config dataclasses' defaults: change one place, every verb follows."""
import dataclasses

import pytest
import typer

from sendit.cli import app
from sendit.config import DataConfig, DistillConfig, MethodConfig, ModelConfig, TrainConfig

TRAIN = {"dataset": (DataConfig, "dataset"), "data_path": (DataConfig, "path"), "sample": (DataConfig, "sample"),
         "model": (ModelConfig, "name"), "max_length": (ModelConfig, "max_length"),
         "method": (MethodConfig, "name"), "lr": (MethodConfig, "lr"), "epochs": (TrainConfig, "epochs"),
         "batch_size": (TrainConfig, "batch_size"), "seed": (TrainConfig, "seed")}
# (command path, option) -> the config field the option sets; its default must be the field's.
FIELDS = {
    **{(("train",), option): field for option, field in TRAIN.items()},
    **{(("distill",), option): field for option, field in TRAIN.items() if option in ("lr", "epochs", "batch_size")},
    (("distill",), "temperature"): (DistillConfig, "temperature"), (("distill",), "alpha"): (DistillConfig, "alpha"),
    (("methods",), "model"): (ModelConfig, "name"),
    (("doctor",), "model"): (ModelConfig, "name"), (("doctor",), "batch_size"): (TrainConfig, "batch_size"),
    (("data", "prepare"), "path"): (DataConfig, "path"), (("data", "prepare"), "sample"): (DataConfig, "sample"),
    (("data", "prepare"), "seed"): (DataConfig, "seed"), (("data", "info"), "path"): (DataConfig, "path"),
}


def field_default(cls, name):
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def option(path, name):
    command = typer.main.get_command(app)
    for part in path:
        command = command.commands[part]
    return next(p for p in command.params if p.name == name)


@pytest.mark.parametrize("path, name", FIELDS, ids=[f"{' '.join(p)} --{n}" for p, n in FIELDS])
def test_option_default_is_the_config_default(path, name):
    assert option(path, name).default == field_default(*FIELDS[path, name])


def test_split_default_is_the_config_split():
    percentages = option(("data", "prepare"), "split").default
    assert [float(p) / 100 for p in percentages.split("/")] == field_default(DataConfig, "split")


def test_every_train_option_that_sets_a_config_field_is_checked():
    """A new `sendit train` option must be mapped above (or be one of the few that set no field)."""
    names = {p.name for p in typer.main.get_command(app).commands["train"].params}
    assert names - set(TRAIN) == {"out", "overrides"}
