"""Shared fixtures: small synthetic sentiment data and quiet libraries."""
import contextlib
import logging
import os
import tempfile
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The session's own cache of precision decisions and built models: a decision timed while the tests load the
# machine must not become the user's (~/.cache/sendit, which `make demo` then reads), nor the user's a test's.
os.environ["SENDIT_CACHE"] = tempfile.mkdtemp(prefix="sendit-test-cache-")
# Tiny models gain nothing from a second thread, and one thread keeps results independent of load.
torch.set_num_threads(1)
warnings.filterwarnings("ignore")
for name in ("transformers", "peft", "accelerate", "bitsandbytes"):
    logging.getLogger(name).setLevel(logging.ERROR)

# Where the tests that name a device train: the CPU, or $SENDIT_TEST_DEVICE (`make gpu-check` sets cuda).
TEST_DEVICE = os.environ.get("SENDIT_TEST_DEVICE", "cpu")
TINY_ARCHS = ["tiny-bert", "tiny-distilbert", "tiny-roberta", "tiny-opt", "tiny-gpt2", "tiny-gpt-neo"]
POSITIVE = ["i love this", "what a great day", "so happy right now", "awesome news", "best movie ever"]
NEGATIVE = ["i hate this", "what an awful day", "so sad right now", "terrible news", "worst movie ever"]


def synthetic_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Learnable two-class tweets of varied length, each text unique."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    texts = [f"{(POSITIVE if y else NEGATIVE)[rng.integers(5)]} {' '.join(['tweet'] * int(rng.integers(0, 12)))} n{i}"
             for i, y in enumerate(labels)]
    return pd.DataFrame({"text": texts, "label": labels})


def separable_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Texts whose first word alone gives the label ("good"/"bad", then noise words): a task a tiny random
    model that adapts its encoder solves within a few epochs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    noise = ["tweet", "today", "the", "a", "it", "was", "and", "so"]
    texts = [f"{'good' if y else 'bad'} {' '.join(rng.choice(noise, int(rng.integers(1, 8))))} n{i}"
             for i, y in enumerate(labels)]
    return pd.DataFrame({"text": texts, "label": labels})


@pytest.fixture(scope="module")
def separable_splits(tmp_path_factory):
    """300 separable texts split 240 / 30 / 30."""
    from sendit.config import DataConfig
    from sendit.data import prepare

    path = tmp_path_factory.mktemp("separable") / "texts.csv"
    separable_frame(300).to_csv(path, index=False)
    return prepare(DataConfig(dataset="csv", path=str(path), label_names=LABELS))


@pytest.fixture
def tweets_csv(tmp_path):
    path = tmp_path / "tweets.csv"
    synthetic_frame(400).to_csv(path, index=False)
    return path


@pytest.fixture
def splits(tweets_csv):
    from sendit.config import DataConfig
    from sendit.data import prepare

    return prepare(DataConfig(dataset="csv", path=str(tweets_csv), label_names=["negative", "positive"]))


@pytest.fixture(scope="module")
def encoded_tweets(tmp_path_factory):
    """Splits of 400 synthetic tweets, encoded once: every tiny model shares the MiniLM tokenizer."""
    from sendit.batching import encode
    from sendit.config import DataConfig
    from sendit.data import prepare
    from sendit.models import load_tokenizer

    path = tmp_path_factory.mktemp("data") / "tweets.csv"
    synthetic_frame(400).to_csv(path, index=False)
    splits = prepare(DataConfig(dataset="csv", path=str(path), label_names=LABELS))
    tokenizer = load_tokenizer("tiny-bert")
    encoded = {name: encode(tokenizer, frame["text"].tolist(), frame["label"].to_numpy(), 32)
               for name, frame in (("train", splits.train), ("val", splits.val), ("test", splits.test))}
    return splits, encoded, tokenizer.pad_token_id


def make_tar(path, members):
    """A USTAR tar.gz like the data shards: members added in the given (deliberately scrambled) order."""
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


# Saved tiny runs for predict and serve: three fp32 steps of tiny-bert on 400 synthetic tweets.
LABELS = ["negative", "positive"]


def tiny_data(directory):
    from sendit.config import DataConfig

    path = directory / "tweets.csv"
    synthetic_frame(400).to_csv(path, index=False)
    return DataConfig(dataset="csv", path=str(path), label_names=LABELS)


def tiny_run(directory, data, method="lora", lr=1e-2, seed=1, model="tiny-bert", padding_side=None, options=None,
             **train):
    """A three-step fp32 tiny run (tiny-bert unless `model` says; `options`: the method's; `train`: TrainConfig
    fields to change) on `data`, saved as a study saves it (so `sendit eval` finds its data)."""
    from sendit.config import MethodConfig, ModelConfig, RunConfig, TrainConfig
    from sendit.data import prepare
    from sendit.run import execute

    cfg = RunConfig(data=data, model=ModelConfig(name=model, max_length=32, padding_side=padding_side),
                    method=MethodConfig(name=method, lr=lr, options=options or {}),
                    train=TrainConfig(**{"max_steps": 3, "batch_size": 16, "precision": "fp32", "eval_precision": "fp32",
                                         "threads": 1, "seed": seed, **train}))
    execute(cfg, directory, prepare(data))
    return directory


def eval_probabilities(run) -> tuple[pd.DataFrame, np.ndarray]:
    """The evaluation's test predictions (`predictions.csv`) and their probabilities in label order."""
    frame = pd.read_csv(run / "predictions.csv", dtype={"text": str}, keep_default_na=False)
    return frame, frame[[f"prob_{name}" for name in LABELS]].to_numpy()


def seed_interval(directory, run_ids, metric: str, alpha: float = 0.05, num_classes: int = 2) -> list[float]:
    """By hand: the alpha/2 and 1 - alpha/2 percentiles of 2000 bootstrap replicates of the runs' mean
    metric, from the runs' predictions.csv in a study directory (the interval a summary should show)."""
    from sendit.stats import bootstrap

    frames = [pd.read_csv(directory / "runs" / r / "predictions.csv") for r in run_ids]
    replicates = bootstrap(frames[0].label, [f.pred for f in frames], metric, n_boot=2000, num_classes=num_classes)
    return list(np.percentile(replicates, [100 * alpha / 2, 100 * (1 - alpha / 2)]))


def seeds_and_test_interval(directory, run_ids, metric: str, scores) -> list[float]:
    """By hand: `seed_interval`'s sides each widened by the seeds' Student-t half-width of the mean of their
    `scores` (scipy's t quantile, k - 1 degrees of freedom), added in quadrature, clipped to [0, 1]; centred
    on the mean of the runs' metric on their predictions."""
    from scipy.stats import t
    from sklearn.metrics import accuracy_score, f1_score

    low, high = seed_interval(directory, run_ids, metric)
    frames = [pd.read_csv(directory / "runs" / r / "predictions.csv") for r in run_ids]
    score = accuracy_score if metric == "accuracy" else lambda y, p: f1_score(y, p, average="macro")
    mean = np.mean([score(f.label, f.pred) for f in frames])
    scores = np.asarray(scores, dtype=float)
    seeds_half = t.ppf(0.975, len(scores) - 1) * scores.std(ddof=1) / np.sqrt(len(scores))
    return [max(0.0, mean - np.sqrt((mean - low) ** 2 + seeds_half ** 2)),
            min(1.0, mean + np.sqrt((high - mean) ** 2 + seeds_half ** 2))]


class Killed(Exception):
    """Stands for a SIGKILL right after a checkpoint: nothing the process did after it survives."""


@contextlib.contextmanager
def dying_after_save(when):
    """Inside, the first checkpoint whose state satisfies `when` is the last thing a run does."""
    from sendit.checkpoint import Checkpoints

    save = Checkpoints.save

    def save_then_die(self, checkpoint):
        save(self, checkpoint)
        if when(checkpoint.state):
            raise Killed

    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        patch.setattr(Checkpoints, "save", save_then_die)
        yield
