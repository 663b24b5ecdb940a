"""Benchmark readers on tiny files written here (IMDb, SST-2, SemEval-2017, TweetEval, `$T$` target sets),
their errors, target and head+tail inputs, NAME:SPLIT, and a 3-class dataset through `prepare`."""
import os
import re
import stat

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import make_tar
from sendit.batching import head_tail_ids
from sendit.config import DataConfig
from sendit.data import SOURCES, DataError, dataset_splits, prepare, read_source, split_of
from sendit.data import download as download_module
from sendit.data.datasets import SEMEVAL_FILES, check_independent
from sendit.data.inputs import encode_inputs
from sendit.data.target import as_pairs, mark, unmark

NAMES_3 = ["negative", "neutral", "positive"]


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def read(dataset, path, **config):
    return read_source(DataConfig(dataset=dataset, path=str(path), **config), need_train=False)


def error(dataset, path, **config):
    with pytest.raises(DataError) as caught:
        read(dataset, path, **config)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_registry_names():
    expected = {"sentiment140", "csv", "jsonl", "imdb", "sst2", "semeval2017", "tweeteval", "dong2014",
                "semeval2014_laptops", "semeval2014_restaurants"}
    assert expected <= set(SOURCES)
    assert {name for name, source in SOURCES.items() if source.targeted} == {
        "dong2014", "semeval2014_laptops", "semeval2014_restaurants"}
    assert not any(SOURCES[name].clean for name in ("imdb", "sst2", "dong2014"))  # not tweets, or marked targets
    assert SOURCES["semeval2017"].clean and SOURCES["tweeteval"].clean


# ----------------------------------------------------------------------------- imdb

def review(split, folder, review_id, rating, text):
    return {f"aclImdb/{split}/{folder}/{review_id}_{rating}.txt": text}


def imdb_shards(folder, n=4, skip=()):
    """n reviews per split and label, in shards of 2 named like the shared ones."""
    for split in ("train", "test"):
        for label, rating in (("pos", 9), ("neg", 2)):
            for shard in range(0, n, 2):
                members = {}
                for i in range(shard, min(shard + 2, n)):
                    if (split, label, i) not in skip:
                        members |= review(split, label, i, rating, f"{split} {label} {i}<br /><br />end.")
                make_tar(folder / f"aclImdb_{split}_{label}_{shard // 2:02d}.tar.gz", members)
    write(folder / "train_urls_pos.txt", "http://www.imdb.com/title/tt0453418/usercomments\n")
    return folder


def test_imdb_shards(tmp_path):
    data = read("imdb", imdb_shards(tmp_path / "imdb"))
    train, test = data.splits["train"], data.splits["test"]
    assert data.label_names == ["negative", "positive"]
    assert train["text"].tolist()[:2] == ["train neg 0 end.", "train neg 1 end."]
    assert train["label"].tolist() == [0] * 4 + [1] * 4 and len(test) == 8


def test_imdb_original_archive_layout(tmp_path):
    members = {}
    for split in ("train", "test"):
        members |= review(split, "pos", 0, 10, "great<br/>film") | review(split, "neg", 0, 1, "awful")
    members |= review("train", "unsup", 0, 0, "unlabelled") | {"aclImdb/imdbEr.txt": "0.1\n"}
    archive = make_tar(tmp_path / "aclImdb_v1.tar.gz", members)
    data = read("imdb", archive)
    assert data.splits["train"].to_dict("list") == {"text": ["awful", "great film"], "label": [0, 1]}


@pytest.mark.parametrize("change, message", [
    (lambda d: make_tar(d / "aclImdb_train_pos_00.tar.gz",
                        review("train", "pos", 0, 5, "meh") | review("train", "pos", 1, 8, "ok")),
     r"aclImdb_train_pos_00.tar.gz:aclImdb/train/pos/0_5.txt: rating 5 in the file name, "
     r"but pos reviews are rated 7-10"),
    (lambda d: (d / "aclImdb_test_neg_00.tar.gz").unlink(),
     r"test/neg has review ids up to 3 but lacks 2 of them \(first: 0\): a shard is missing"),
    (lambda d: (d / "aclImdb_test_neg_01.tar.gz").unlink(),
     r"test has 2 neg but 4 pos reviews; the dataset is balanced"),
    (lambda d: make_tar(d / "copy.tar.gz", review("train", "neg", 3, 1, "again")),
     r"the same review id twice \(is the folder holding both the shards and the original archive"),
    (lambda d: [(d / f"aclImdb_test_{label}_{k:02d}.tar.gz").unlink() for label in ("pos", "neg") for k in (0, 1)],
     r"no test/neg reviews"),
    (lambda d: (d / "aclImdb_train_pos_00.tar.gz").write_bytes(b"\x1f\x8bgarbage"), "not a readable tar.gz archive"),
])
def test_imdb_errors(tmp_path, change, message):
    folder = imdb_shards(tmp_path / "imdb")
    change(folder)
    assert re.search(message, error("imdb", folder))


def test_imdb_test_sample_is_stratified_over_the_whole_test_split(tmp_path):
    """Repeated test reviews stay in the test split (it keeps its published size), so the sample draws from all."""
    folder = imdb_shards(tmp_path / "imdb", n=10)
    make_tar(folder / "aclImdb_test_neg_05.tar.gz", review("test", "neg", 10, 1, "test neg 0<br />end."))
    make_tar(folder / "aclImdb_test_pos_05.tar.gz", review("test", "pos", 10, 9, "test pos 0 end."))
    test = read("imdb", folder, test_sample=20, seed=1).splits["test"]
    assert len(test) == 20 and test["label"].value_counts().to_dict() == {0: 10, 1: 10}
    assert "data.test_sample=30 but the test split has 22" in error("imdb", folder, test_sample=30)


def test_test_sample_needs_a_test_split(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\na,0\nb,1\n")
    assert "data.test_sample: dataset 'csv' has no test split of its own" in error("csv", path, test_sample=1)


# ----------------------------------------------------------------------------- sst2

def sst2_folder(folder, train='it \'s "fine" , really \t1\nno good \t0\n', dev="a gem . \t1\nflat \t0\n"):
    write(folder / "train.tsv", "sentence\tlabel\n" + train)
    write(folder / "dev.tsv", "sentence\tlabel\n" + dev)
    return folder


def test_sst2_quotes_kept_and_dev_is_val(tmp_path):
    data = read("sst2", sst2_folder(tmp_path / "sst2"))
    assert sorted(data.splits) == ["train", "val"]
    assert data.splits["train"].to_dict("list") == {"text": ['it \'s "fine" , really', "no good"], "label": [1, 0]}
    assert data.splits["val"]["text"].tolist() == ["a gem .", "flat"]


@pytest.mark.parametrize("train, message", [
    ("fine\t2\n", r"train.tsv: line 2: label is '2', expected 0 \(negative\) or 1 \(positive\)"),
    ("ok\t1\nfine\t1\textra\n", r"train.tsv: line 3: 3 fields, expected 2"),
])
def test_sst2_errors(tmp_path, train, message):
    assert re.search(message, error("sst2", sst2_folder(tmp_path / "sst2", train=train)))


def test_sst2_header_and_missing_file(tmp_path):
    folder = sst2_folder(tmp_path / "sst2")
    write(folder / "dev.tsv", "label\tsentence\n1\tgood\n")
    assert "dev.tsv: line 1: header ['label', 'sentence'], expected sentence<TAB>label" in error("sst2", folder)
    (folder / "dev.tsv").unlink()
    assert re.search(r"dev.tsv: no such file", error("sst2", folder))


# ----------------------------------------------------------------------------- semeval2017

def semeval_folder(folder, **replace):
    """Every file of the SemEval layout: two tweets each (one per file name), or the given content."""
    for k, name in enumerate(SEMEVAL_FILES):
        lines = f"{k}1\tpositive\tgood {name}\n{k}2\tnegative\tbad {name}\n{k}3\tneutral\tso {name}\n"
        write(folder / name, replace.get(name.split("/")[-1], lines))
    return folder


def test_semeval2017_splits_and_escapes(tmp_path):
    folder = semeval_folder(tmp_path / "semeval", **{
        "twitter-2013train-A.tsv": ('1\tpositive\tI\\u2019m in\\u002c \\"yes\\" \\m/\n'
                                    '2\tnegative\tno\n3\tneutral\t\\ud83d\\ude0d\n'),
        "twitter-2016test-A.tsv": "4\tneutral\tdated\tWed Jul 29 12:01:22 +0000 2015\n5\tpositive\tundated\t\n",
    })
    data = read("semeval2017", folder)
    assert data.label_names == NAMES_3
    assert sorted(data.splits) == ["sarcasm", "test", "train", "val"]
    assert data.splits["train"]["text"].tolist()[:3] == ["I\u2019m in, \"yes\" \\m/", "no", "\U0001F60D"]
    assert len(data.splits["train"]) == 3 * 9
    assert data.splits["val"].to_dict("list") == {"text": ["dated", "undated"], "label": [1, 2]}
    assert data.splits["sarcasm"]["label"].tolist() == [2, 0, 1]


@pytest.mark.parametrize("content, message", [
    ("1\tpositive\tok\n2\tmixed\tno\n", r"twitter-2015train-A.tsv: line 2: label is 'mixed', expected positive"),
    ("1\tpositive\tok\nabc\tneutral\tno\n", r"twitter-2015train-A.tsv: line 2: tweet id 'abc' is not a number"),
    ("1\tpositive\n", r"twitter-2015train-A.tsv: line 1: no tweet text"),
])
def test_semeval2017_errors(tmp_path, content, message):
    folder = semeval_folder(tmp_path / "s", **{"twitter-2015train-A.tsv": content})
    assert re.search(message, error("semeval2017", folder))


def test_semeval2017_missing_file(tmp_path):
    folder = semeval_folder(tmp_path / "s")
    (folder / "test_2017/SemEval2017-task4-test.subtask-A.english.txt").unlink()
    assert "SemEval2017-task4-test.subtask-A.english.txt: no such file" in error("semeval2017", folder)


# ----------------------------------------------------------------------------- tweeteval

def tweeteval_folder(folder, with_train=False):
    write(folder / "mapping.txt", "0\tnegative\n1\tneutral\n2\tpositive\n")
    for split in ("train", "val", "test") if with_train else ("val", "test"):
        # U+2028 inside a tweet is not a line break of the file; JSON escapes as in the real val file
        write(folder / f"{split}_text.txt", f"@user I\\u2019m sad {split} \nso\u2028so {split}\nyay {split} \n")
        write(folder / f"{split}_labels.txt", "0\n1\n2\n")
    write(folder / "train_labels.txt", "0\n1\n2\n")
    return folder


def test_tweeteval_without_train_text_is_evaluation_only(tmp_path):
    folder = tweeteval_folder(tmp_path / "tweeteval")
    data = read("tweeteval", folder)
    assert sorted(data.splits) == ["test", "val"]
    assert data.splits["val"].to_dict("list") == {"text": ["@user I\u2019m sad val", "so\u2028so val", "yay val"],
                                                  "label": [0, 1, 2]}
    with pytest.raises(DataError, match="dataset 'tweeteval' has no train split here \\(only val, test\\)"):
        prepare(DataConfig(dataset="tweeteval", path=str(folder)))


def test_tweeteval_with_train_text(tmp_path):
    splits = prepare(DataConfig(dataset="tweeteval", path=str(tweeteval_folder(tmp_path / "t", with_train=True)),
                                split=[0.9, 0.1, 0.0]))
    assert splits.label_names == NAMES_3 and len(splits.val) == len(splits.test) == 3


@pytest.mark.parametrize("name, content, message", [
    ("val_labels.txt", "0\n1\n", r"val_text.txt: 3 lines, but val_labels.txt has 2"),
    ("test_labels.txt", "0\n3\n1\n", r"test_labels.txt: line 2: label is '3', expected 0 \(negative\)"),
    ("mapping.txt", "0\tnegative\n1\tpositive\n", r"mapping.txt: expected the lines"),
])
def test_tweeteval_errors(tmp_path, name, content, message):
    folder = tweeteval_folder(tmp_path / "t")
    write(folder / name, content)
    assert re.search(message, error("tweeteval", folder))


def test_semeval2017_and_tweeteval_overlap_is_refused():
    check_independent("semeval2017", "tweeteval", "test")  # the same 12,284 test tweets: fine
    check_independent("sst2", "imdb", "val")
    with pytest.raises(DataError, match="tweeteval:val: not independent of a run trained on semeval2017"):
        check_independent("semeval2017", "tweeteval", "val")
    with pytest.raises(DataError, match="semeval2017:sarcasm: not independent"):
        check_independent("tweeteval", "semeval2017", "sarcasm")


# ----------------------------------------------------------------------------- $T$ target datasets

DONG = ("i like $T$ and $T$ !\nbill gates\n1\n"
        "$T$ 's battery is dead\niphone\n-1\n"
        "the $T$ is here\nnews\n0\n"
        "the $T$ is old\nnews\n0\n")


def target_folder(tmp_path, train=DONG, test="meh $T$\nxbox\n0\nhate $T$\nxbox\n-1\nlove $T$\nxbox\n1"):
    folder = tmp_path / "dong"
    write(folder / "train.raw", train)
    write(folder / "test.raw", test)  # no final newline, as in the shared test.raw
    return folder


def test_target_file_marks_every_placeholder(tmp_path):
    data = read("dong2014", target_folder(tmp_path))
    assert data.label_names == NAMES_3
    train = data.splits["train"]
    assert train["text"].tolist()[:2] == ["i like [TGT] bill gates [/TGT] and [TGT] bill gates [/TGT] !",
                                          "[TGT] iphone [/TGT] 's battery is dead"]
    assert train["label"].tolist() == [2, 0, 1, 1] and data.splits["test"]["label"].tolist() == [1, 0, 2]


def test_absa_files_and_registry_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("SENDIT_DATA", str(tmp_path))
    for domain in ("Laptops", "Restaurants"):
        write(tmp_path / f"absa_semeval2014/{domain}_Train.xml.seg", f"the $T$ works\n{domain} screen\n1\n")
        write(tmp_path / f"absa_semeval2014/{domain}_Test_Gold.xml.seg", f"a $T$\n{domain} key\n-1\n")
    laptops = read_source(DataConfig(dataset="semeval2014_laptops"))
    assert laptops.splits["train"]["text"].tolist() == ["the [TGT] Laptops screen [/TGT] works"]
    restaurants = read_source(DataConfig(dataset="semeval2014_restaurants"))
    assert restaurants.splits["test"]["text"].tolist() == ["a [TGT] Restaurants key [/TGT]"]


@pytest.mark.parametrize("train, message", [
    ("good $T$\nx\n1\nno placeholder\ny\n0\n", r"train.raw: line 4: no \$T\$ in the sentence line"),
    ("good $T$\nx\n1\nbad $T$\ny\n2\n", r"train.raw: line 6: label is '2', expected -1 \(negative\), 0 \(neutral\)"),
    ("good $T$\n  \n1\n", r"train.raw: line 2: empty target"),
    ("good $T$\nx\n1\nbad $T$\ny\n", r"train.raw: 5 lines, not a multiple of 3: the instance at line 4 is incomplete"),
    ("a [TGT] b $T$\nx\n1\n", r"train.raw: line 1: the sentence already holds \[TGT\]"),
    ("\n", r"train.raw: empty file"),
])
def test_target_file_errors(tmp_path, train, message):
    assert re.search(message, error("dong2014", target_folder(tmp_path, train=train)))


def test_marking_round_trip():
    text = mark("i like $T$ and $T$ !", "bill gates")
    assert unmark(text, "t") == ("i like bill gates and bill gates !", "bill gates")
    assert as_pairs(["the [TGT]battery[/TGT] lasts"]) == (["the battery lasts"], ["battery"])
    with pytest.raises(DataError, match="text 2: expected one target marked"):
        as_pairs(["a [TGT] b [/TGT]", "no mark here"])
    with pytest.raises(DataError, match="several marks must name the same target"):
        unmark("[TGT] a [/TGT] and [TGT] b [/TGT]", "t")


@pytest.fixture(scope="module")
def tokenizer():
    from sendit.models import load_tokenizer

    return load_tokenizer("minilm")


def test_target_as_pair_or_inline(tmp_path, tokenizer):
    texts = ["the [TGT] battery [/TGT] lasts"]
    pair = encode_inputs(tokenizer, texts, [2], DataConfig(dataset="dong2014"), 64)
    assert tokenizer.decode(pair.input_ids[0]) == "[CLS] the battery lasts [SEP] battery [SEP]"
    assert pair.token_type_ids[0].tolist() == [0] * 5 + [1] * 2
    inline = encode_inputs(tokenizer, texts, [2], DataConfig(dataset="dong2014", target_mode="inline"), 64)
    assert tokenizer.decode(inline.input_ids[0]).startswith("[CLS] the [ tgt ] battery [ / tgt ] lasts")
    assert inline.token_type_ids is None
    plain = encode_inputs(tokenizer, ["no [TGT] here"], [0], DataConfig(dataset="csv"), 64)  # not a target dataset
    assert len(plain.input_ids[0]) == 8


def test_input_options_are_checked(tokenizer):
    with pytest.raises(DataError, match="data.target_mode: 'both', expected one of pair, inline"):
        encode_inputs(tokenizer, ["a"], [0], DataConfig(target_mode="both"), 64)
    with pytest.raises(DataError, match="data.truncation: 'tail', expected one of head, head_tail"):
        encode_inputs(tokenizer, ["a"], [0], DataConfig(truncation="tail"), 64)
    with pytest.raises(DataError, match="head_tail keeps both ends of one long text"):
        encode_inputs(tokenizer, ["[TGT] a [/TGT]"], [0], DataConfig(dataset="dong2014", truncation="head_tail"), 64)


# ----------------------------------------------------------------------------- head+tail truncation

def test_head_tail_keeps_first_128_and_last_382_at_512(tokenizer):
    words = [f"w{i}" for i in range(700)]  # "w123" is several word pieces: count pieces, not words
    pieces = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    ids = head_tail_ids(tokenizer, [" ".join(words), "short text"], 512)
    assert len(ids[0]) == 512
    assert ids[0][1:129].tolist() == pieces[:128] and ids[0][129:-1].tolist() == pieces[-382:]
    assert ids[1].tolist() == tokenizer("short text")["input_ids"]
    encoded = encode_inputs(tokenizer, [" ".join(words)], [1], DataConfig(truncation="head_tail"), 256)
    assert len(encoded.input_ids[0]) == 256 and encoded.labels.tolist() == [1]
    assert encoded.input_ids[0][1:65].tolist() == pieces[:64] and encoded.input_ids[0][65:-1].tolist() == pieces[-190:]


# ----------------------------------------------------------------------------- three classes, NAME:SPLIT, data info

def three_class_csv(tmp_path, n=30):
    rows = "".join(f"{word} tweet {i},{name}\n" for i in range(n)
                   for word, name in (("awful", "negative"), ("okay", "neutral"), ("great", "positive")))
    return write(tmp_path / "three.csv", "text,label\n" + rows)


def test_three_classes_through_prepare(tmp_path):
    splits = prepare(DataConfig(dataset="csv", path=str(three_class_csv(tmp_path))))
    assert splits.label_names == NAMES_3
    assert splits.stats["split_sizes"] == {"train": 72, "val": 9, "test": 9}
    assert splits.stats["label_counts"]["test"] == {"negative": 3, "neutral": 3, "positive": 3}
    assert sorted(splits.train["label"].unique()) == [0, 1, 2]


def test_data_info_shows_all_three_classes(tmp_path):
    from sendit.cli import app

    result = CliRunner().invoke(app, ["data", "info", "csv", "--path", str(three_class_csv(tmp_path))])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in NAMES_3)


def test_dataset_splits_and_split_names(tmp_path):
    semeval = DataConfig(dataset="semeval2017", path=str(semeval_folder(tmp_path / "s")))
    frames, names, stats = dataset_splits(semeval)
    assert list(frames) == ["train", "val", "test", "sarcasm"] and names == NAMES_3
    name = "train 2013 2016 twitter 2014sarcasm a tsv"  # the file name in the text, cleaned like training texts
    assert frames["sarcasm"]["text"].tolist() == [f"good {name}", f"bad {name}", f"so {name}"]
    assert stats["split_sizes"]["val"] == 3
    twenty = "".join(f"text {i} \t{i % 2}\n" for i in range(20))  # a test split (one per class) carved from train
    sst2 = DataConfig(dataset="sst2", path=str(sst2_folder(tmp_path / "sst2", train=twenty)))
    assert split_of(sst2, "dev")[0]["text"].tolist() == ["a gem .", "flat"]
    tweeteval = DataConfig(dataset="tweeteval", path=str(tweeteval_folder(tmp_path / "t")))
    test, _ = split_of(tweeteval, "test")
    assert test["text"].tolist() == ["im sad test", "so so test", "yay test"]
    with pytest.raises(DataError, match="tweeteval:train: no such split; tweeteval has val, test"):
        split_of(tweeteval, "train")


def test_semeval_sarcasm_is_scored_apart_from_test_and_reported(tmp_path):
    """Every run scores the sarcasm tweets as an extra set (never one it trained on); the report sets
    their accuracy beside test's."""
    import yaml

    from sendit.cli import app
    from sendit.report import analyse, load_study

    seen = "4\tpositive\tgood train_2013_2016/twitter-2013train-A.tsv\n"  # a training tweet, cleaned alike
    folder = semeval_folder(tmp_path / "semeval", **{"twitter-2014sarcasm-A.tsv": (
        "1\tpositive\tgreat, another monday\n2\tnegative\tsure, love it\n3\tneutral\tyeah right\n" + seen)})
    splits = prepare(DataConfig(dataset="semeval2017", path=str(folder)))
    assert splits.extra["sarcasm"]["text"].tolist() == ["great another monday", "sure love it", "yeah right"]
    assert splits.stats["extra_sizes"] == {"sarcasm": 3}
    config = {"name": "sarcasm", "output_dir": str(tmp_path / "runs"), "data": {"dataset": "semeval2017",
              "path": str(folder)}, "model": {"name": "tiny-bert", "max_length": 16},
              "methods": [{"name": "zero_shot"}, {"name": "head"}], "seeds": [1]}
    (tmp_path / "sarcasm.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["study", str(tmp_path / "sarcasm.yaml")])
    assert result.exit_code == 0, result.output
    study = load_study(tmp_path / "runs" / "sarcasm")
    extra = pd.read_csv(study.run_dir("head") / "extra_predictions.csv")
    assert extra["subset"].tolist() == ["sarcasm"] * 3 and extra["label"].tolist() == [2, 0, 1]
    subsets = analyse(study).subsets
    assert subsets["n"].columns.tolist() == ["test", "sarcasm"] and (subsets[("n", "sarcasm")] == 3).all()
    head = study.best.loc["head"]
    assert subsets.loc["head", ("accuracy", "sarcasm")] == head["sarcasm_accuracy"] == (extra["pred"] == extra["label"]).mean()
    assert "other evaluation sets" in (tmp_path / "runs" / "sarcasm" / "report.html").read_text()


def test_predefined_test_split_is_kept_and_val_carved(tmp_path):
    train = "".join(f"tweet {i} about $T$\nt{i}\n{i % 3 - 1}\n" for i in range(6))
    splits = prepare(DataConfig(dataset="dong2014", path=str(target_folder(tmp_path, train=train)),
                                split=[0.5, 0.5, 0.0]))
    assert len(splits.test) == 3 and len(splits.train) == len(splits.val) == 3
    assert sorted(splits.val["label"]) == [0, 1, 2] and splits.val["text"].str.contains("[TGT]", regex=False).all()


# ----------------------------------------------------------------------------- downloads (file:// URLs, no network)

def test_plain_file_download_is_verified_and_placed(tmp_path, monkeypatch):
    served = write(tmp_path / "served" / "train.raw", DONG)
    good = download_module.RemoteFile(served.as_uri(), "twitter_target_dong2014/train.raw", len(DONG), None)
    monkeypatch.setitem(download_module.FILES, "dong2014", [good])
    paths = download_module.download("dong2014", tmp_path / "data")
    assert paths == {"twitter_target_dong2014/train.raw": tmp_path / "data/twitter_target_dong2014/train.raw"}
    assert paths["twitter_target_dong2014/train.raw"].read_text() == DONG

    wrong = download_module.RemoteFile(served.as_uri(), "elsewhere/train.raw", None, "0" * 64)
    monkeypatch.setitem(download_module.FILES, "dong2014", [wrong])
    with pytest.raises(DataError, match=r"train.raw: sha256 [0-9a-f]{64}, expected 0{64}"):
        download_module.download("dong2014", tmp_path / "data")
    assert not any((tmp_path / "data" / "elsewhere").iterdir())  # no partial file left


def test_a_downloaded_file_gets_the_umask_permissions(tmp_path, monkeypatch):
    served = write(tmp_path / "served" / "train.raw", DONG)
    monkeypatch.setitem(download_module.FILES, "dong2014",
                        [download_module.RemoteFile(served.as_uri(), "dong/train.raw", len(DONG), None)])
    previous = os.umask(0o022)
    try:
        path = download_module.download("dong2014", tmp_path / "data")["dong/train.raw"]
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # a temporary file's 0600 hid it from the user's group


def test_every_dataset_has_a_download():
    assert set(SOURCES) - {"csv", "tsv", "jsonl"} == set(download_module.DOWNLOADS) | set(download_module.FILES)
    tweeteval = {remote.path: remote for remote in download_module.FILES["tweeteval"]}
    assert tweeteval["tweeteval_sentiment/train_text.txt"].sha256.startswith("368f0105")
    assert all(remote.url.startswith("https://raw.githubusercontent.com/songyouwei/ABSA-PyTorch/9a7c6c1")
               for remote in download_module.FILES["semeval2014_laptops"])


def test_merge_val_trains_on_the_sources_val_and_carves_validation_from_the_pool(tmp_path):
    """TweetEval's SemEval split: the 2016 test tweets (semeval2017's val) join train; val is carved."""
    folder = semeval_folder(tmp_path / "semeval")
    own, merged = (prepare(DataConfig(dataset="semeval2017", path=str(folder), split=[0.8, 0.2, 0.0], merge_val=m))
                   for m in (False, True))
    assert len(own.val) == 3 and own.val.text.str.contains("2016test").all()
    pool = pd.concat([merged.train, merged.val])
    assert set(own.val.text) <= set(pool.text) and len(pool) == len(own.train) + len(own.val)
    assert len(merged.val) == round(0.2 * len(pool)) and merged.test.equals(own.test)
    assert merged.train.text.str.contains("2016test").any()
