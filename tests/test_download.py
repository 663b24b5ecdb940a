"""The Sentiment140 download: a small zip served from a file:// URL stands in for the real archive."""
import dataclasses
import hashlib
import zipfile

import pytest

from sendit.data import DataError
from sendit.data import download as download_module
from sendit.data.download import DOWNLOADS, MemberCheck, download

TRAIN = "training.1600000.processed.noemoticon.csv"
TEST = "testdata.manual.2009.06.14.csv"


def raw6(polarity, text):
    return f'"{polarity}","1","Mon Apr 06 22:19:45 PDT 2009","NO_QUERY","u","{text}"\n'


def make_zip(path, train_rows=(0, 0, 4, 4), test_rows=(0, 2, 4)):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(TRAIN, "".join(raw6(p, f"caf\xe9 {i}") for i, p in enumerate(train_rows)).encode("latin-1"))
        archive.writestr(TEST, "".join(raw6(p, f"t {i}") for i, p in enumerate(test_rows)))
    return path


@pytest.fixture
def small_spec(tmp_path, monkeypatch):
    """The real spec with counts patched small and the URL pointing at a local zip."""
    archive = make_zip(tmp_path / "served.zip")
    spec = dataclasses.replace(
        DOWNLOADS["sentiment140"], url=archive.as_uri(), size=archive.stat().st_size,
        sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
        members={TRAIN: MemberCheck(4, {"0": 2, "4": 2}), TEST: MemberCheck(3)})
    monkeypatch.setitem(DOWNLOADS, "sentiment140", spec)
    return spec


def test_download_extracts_and_verifies(tmp_path, small_spec):
    paths = download("sentiment140", tmp_path / "data")
    folder = tmp_path / "data" / "sentiment140" / "original"
    assert paths == {TRAIN: folder / TRAIN, TEST: folder / TEST}
    assert (folder / TRAIN).read_bytes().count(b"\n") == 4
    assert sorted(p.name for p in folder.iterdir()) == sorted([TEST, TRAIN])  # no archive or temp file left
    assert download("sentiment140", tmp_path / "data") == paths  # already there: nothing fetched


def test_hand_placed_archive_is_used_without_network(tmp_path, small_spec, monkeypatch):
    folder = tmp_path / "data" / "sentiment140" / "original"
    folder.mkdir(parents=True)
    make_zip(folder / "trainingandtestdata.zip")
    monkeypatch.setattr(download_module, "fetch", lambda *args: pytest.fail("fetched despite a placed archive"))
    download("sentiment140", tmp_path / "data")
    assert (folder / TEST).is_file()


def test_wrong_counts_leave_nothing_behind(tmp_path, small_spec, monkeypatch):
    spec = dataclasses.replace(small_spec, members={TRAIN: MemberCheck(4, {"0": 3, "4": 1}), TEST: MemberCheck(3)})
    monkeypatch.setitem(DOWNLOADS, "sentiment140", spec)
    with pytest.raises(DataError, match=rf"{TRAIN}: label counts \{{'0': 2, '4': 2\}}, expected"):
        download("sentiment140", tmp_path / "data")
    assert not any((tmp_path / "data" / "sentiment140" / "original").iterdir())


def test_truncated_archive_fails_the_size_check(tmp_path, small_spec, monkeypatch):
    short = tmp_path / "short.zip"
    short.write_bytes((tmp_path / "served.zip").read_bytes()[:100])
    monkeypatch.setitem(DOWNLOADS, "sentiment140", dataclasses.replace(small_spec, url=short.as_uri()))
    with pytest.raises(DataError, match=r"short\.zip: 100 bytes, expected \d+ \(truncated"):
        download("sentiment140", tmp_path / "data")


def test_corrupt_archive_without_published_size(tmp_path, small_spec, monkeypatch):
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    monkeypatch.setitem(DOWNLOADS, "sentiment140",
                        dataclasses.replace(small_spec, url=corrupt.as_uri(), size=None, sha256=None))
    with pytest.raises(DataError, match=r"corrupt\.zip: not a valid zip archive"):
        download("sentiment140", tmp_path / "data")


def test_checksum_mismatch(tmp_path, small_spec, monkeypatch):
    monkeypatch.setitem(DOWNLOADS, "sentiment140", dataclasses.replace(small_spec, sha256="0" * 64))
    with pytest.raises(DataError, match=r"served\.zip: sha256 [0-9a-f]{64}, expected 0{64}"):
        download("sentiment140", tmp_path / "data")


def test_network_failure_says_where_to_place_the_file(tmp_path, small_spec, monkeypatch):
    gone = (tmp_path / "gone.zip").as_uri()
    monkeypatch.setitem(DOWNLOADS, "sentiment140", dataclasses.replace(small_spec, url=gone))
    with pytest.raises(DataError) as caught:
        download("sentiment140", tmp_path / "data")
    message = str(caught.value)
    assert "download failed" in message and "make data" in message
    assert str(tmp_path / "data" / "sentiment140" / "original" / "trainingandtestdata.zip") in message


def test_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="no download known for 'nope'"):
        download("nope", tmp_path)


def test_published_values_for_the_real_archive():
    spec = DOWNLOADS["sentiment140"]
    assert spec.url == "http://cs.stanford.edu/people/alecmgo/trainingandtestdata.zip"
    assert spec.members[TRAIN] == MemberCheck(1_600_000, {"0": 800_000, "4": 800_000})
    assert spec.members[TEST].rows == 498


def test_unwritable_destination_fails_before_fetching(tmp_path, small_spec, monkeypatch):
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("a file where the folder should be")  # chmod would not stop root
    monkeypatch.setattr(download_module, "fetch", lambda *args: pytest.fail("fetched into an unwritable folder"))
    with pytest.raises(DataError, match=r"data/sentiment140/original: cannot write there"):
        download("sentiment140", not_a_folder)
