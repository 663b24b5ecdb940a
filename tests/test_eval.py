"""`sendit eval` on a labelled file of one's own: the whole file by default (not a tenth carved as a test
split), its row count, per-class metrics beside the confusion matrix, per-example predictions with -o."""
import pandas as pd
import pytest
from conftest import LABELS, synthetic_frame, tiny_data, tiny_run
from test_datasets import imdb_shards
from typer.testing import CliRunner

from sendit.cli import app
from sendit.config import DataConfig

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return tiny_run(root / "lora", tiny_data(root))


@pytest.fixture
def labelled(tmp_path):
    path = tmp_path / "labelled.csv"
    synthetic_frame(359, seed=7).assign(label=lambda f: f.label.map(dict(enumerate(LABELS)))).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("dataset", ["csv", "csv:all"])
def test_another_file_is_scored_whole_with_per_class_metrics(run, labelled, tmp_path, dataset):
    predictions = tmp_path / "predictions.csv"
    result = runner.invoke(app, ["eval", str(run), "--dataset", dataset, "--data-path", str(labelled),
                                 "-o", str(predictions)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"on csv:all: 359 examples from {labelled}" in said
    written = pd.read_csv(predictions)
    assert len(written) == 359
    truth = pd.read_csv(labelled)
    assert written.label_name.tolist() == truth.label.tolist()
    for name in LABELS:  # the per-class row: support, then that class's row of the confusion matrix
        mine = written[written.label_name == name]
        counts = [int((mine.pred_name == other).sum()) for other in LABELS]
        recall = (mine.pred_name == name).mean()
        assert f"{len(mine)} │ {counts[0]} │ {counts[1]} │" in said
        assert f"│ {recall:.4f} │" in said


def test_the_runs_own_dataset_still_defaults_to_its_test_split(run):
    result = runner.invoke(app, ["eval", str(run)])
    assert result.exit_code == 0, result.output
    test_size = len(pd.read_csv(run / "predictions.csv"))
    assert f"on csv:test: {test_size} examples" in " ".join(result.output.split())


def test_unknown_split_lists_all(run, labelled):
    result = runner.invoke(app, ["eval", str(run), "--dataset", "csv:everything", "--data-path", str(labelled)])
    assert result.exit_code == 2
    assert "csv:everything: no such split; csv has train, val, test, all" in " ".join(result.output.split())


def test_a_named_test_split_is_the_published_one_whole_not_the_runs_sample(tmp_path):
    """A run scored on a sample of IMDb's test reviews (data.test_sample, for speed) is scored on all of them by
    `--dataset imdb:test` (seed 003's largest sizes); without --dataset, on its own sample, as it was tested."""
    folder = imdb_shards(tmp_path / "imdb", n=20)
    data = DataConfig(dataset="imdb", path=str(folder), split=[0.9, 0.1, 0.0], test_sample=10)
    run = tiny_run(tmp_path / "run", data)
    for args, examples in (([], 10), (["--dataset", "imdb:test"], 40)):
        result = runner.invoke(app, ["eval", str(run), *args])
        assert result.exit_code == 0, result.output
        assert f"on imdb:test: {examples} examples" in " ".join(result.output.split())
