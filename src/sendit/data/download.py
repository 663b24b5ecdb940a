"""Fetch a dataset from its canonical URLs, verify it, and put its files where its reader looks.

For users with a network and without the shared data folder (`make data`), which also lacks the
original Sentiment140 files and TweetEval's train text. Archives (`DOWNLOADS`) are verified and
their members extracted atomically; an archive already placed by hand is used as it is. Plain
files (`FILES`) are fetched one by one; those from GitHub are pinned to the commit the shared data
came from, so their content is fixed. Checksums are only ever copied from a published record.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sendit.data.errors import DataError
from sendit.io import atomic_write, new_file_beside

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class MemberCheck:
    """What one extracted CSV must contain (first column = label), so a wrong file never lands."""

    rows: int
    label_counts: dict[str, int] | None = None
    encoding: str = "latin-1"


@dataclass(frozen=True)
class Download:
    url: str
    archive: str  # file name of the archive, also where a hand-placed copy is looked for
    folder: str  # extraction folder under dest_dir
    members: dict[str, MemberCheck | None]  # None: the published archive checksum vouches for it
    size: int | None = None  # bytes, from a published record only
    sha256: str | None = None  # from a published record only


@dataclass(frozen=True)
class RemoteFile:
    url: str
    path: str  # under the destination folder: where the dataset's reader looks for it
    size: int | None = None  # bytes, from a published record only
    sha256: str | None = None  # from a published record only


DOWNLOADS = {
    "sentiment140": Download(
        url="http://cs.stanford.edu/people/alecmgo/trainingandtestdata.zip",
        archive="trainingandtestdata.zip",
        folder="sentiment140/original",
        members={
            "training.1600000.processed.noemoticon.csv": MemberCheck(1_600_000, {"0": 800_000, "4": 800_000}),
            "testdata.manual.2009.06.14.csv": MemberCheck(498),
        },
        # Size and sha256 as published in the Hugging Face `datasets` loader record for this URL:
        # huggingface/datasets, datasets/sentiment140/dataset_infos.json ("download_checksums"),
        # commit 040102f100964a33fd334e2695f1c493fa6b92db; also on the Hub at
        # https://huggingface.co/datasets/sentiment140/blob/15a04a2a20010bcbb5642d248153825856326225/dataset_infos.json
        size=81_363_704,
        sha256="004a3772c8a7ff9bbfeb875880f47f0679d93fc63e5cf9cff72d54a8a6162e57",
    ),
    "sst2": Download(
        url="https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
        archive="SST-2.zip",
        folder="sst2",
        members={"train.tsv": None, "dev.tsv": None},
        # huggingface/datasets, datasets/glue/dataset_infos.json ("sst2" -> "download_checksums"),
        # commit cf0523d4c9c176271cad44cd0d9dd595d233e817
        size=7_439_277,
        sha256="d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa",
    ),
}


def github_files(repo: str, commit: str, folder: str, names: list[str], dest: str,
                 published: dict[str, tuple[int, str]] | None = None) -> list[RemoteFile]:
    """Files of a GitHub repository at a fixed commit, saved as `dest/<name>`; `published`: (size, sha256)."""
    return [RemoteFile(f"https://raw.githubusercontent.com/{repo}/{commit}/{folder}/{name}", f"{dest}/{name}",
                       *(published or {}).get(name, (None, None)))
            for name in names]


ABSA_PYTORCH = ("songyouwei/ABSA-PyTorch", "9a7c6c1c993ad772d5f439d32af4899b6698ea67")
SEMEVAL2017_REPO = ("cbaziotis/datastories-semeval2017-task4", "faeee5fd1c2cf38e32179a4676dff53ae01adfa8")
TWEETEVAL_REPO = ("cardiffnlp/tweeteval", "4fbd22cd78421f05b1ecdb4fc5725bc7a7bd8f66")
# Size and sha256 of TweetEval's sentiment files as published in huggingface/datasets,
# datasets/tweet_eval/dataset_infos.json ("sentiment" -> "download_checksums"), commit
# 040102f100964a33fd334e2695f1c493fa6b92db (recorded for the same files on the `main` branch; the
# val, test and train-label checksums there equal those of the shared copies, see their SOURCE.md).
TWEETEVAL_PUBLISHED = {
    "train_text.txt": (4_970_029, "368f01052ea6fd8ffc408a2a2e6ac9669e31542581a0396ef16591ea26eb98a6"),
    "train_labels.txt": (91_230, "122bfb1732fb6995b0e5c5f726c0ba457c469c3b6e60513007ce5037f23e65d4"),
    "val_text.txt": (219_137, "e5b021e6fc45064c260b09814b803d8f56cada519c4d952d72f43d48a350a964"),
    "val_labels.txt": (4_000, "b4566926c72e2e4e2916c864def94e76c4cdde52446af2c7ba4fc2006e057e51"),
    "test_text.txt": (1_156_877, "09a93a55c63fd93f97485ef7302889d7edb4091cd49733aa37da094f0bfa0675"),
    "test_labels.txt": (24_568, "6afb4afe9374d1f983bcf9a7c79b108d0f37fdf020a83f30488309bed215db9d"),
}
SEMEVAL2017_TRAIN = ["twitter-2013train-A.tsv", "twitter-2013dev-A.tsv", "twitter-2013test-A.tsv",
                     "twitter-2014test-A.tsv", "twitter-2014sarcasm-A.tsv", "twitter-2015train-A.tsv",
                     "twitter-2015test-A.tsv", "twitter-2016train-A.tsv", "twitter-2016dev-A.tsv",
                     "twitter-2016devtest-A.tsv", "twitter-2016test-A.tsv"]


def absa_files(domain: str) -> list[RemoteFile]:
    return github_files(*ABSA_PYTORCH, "datasets/semeval14", [f"{domain}_Train.xml.seg", f"{domain}_Test_Gold.xml.seg"],
                        "absa_semeval2014")


FILES = {
    "imdb": [RemoteFile(
        "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz", "imdb/aclImdb_v1.tar.gz",
        # huggingface/datasets, datasets/imdb/dataset_infos.json ("download_checksums"),
        # commit 22d3b80586cab756b70d6c939ceace94bb356a8c
        size=84_125_825, sha256="c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe")],
    "tweeteval": github_files(*TWEETEVAL_REPO, "datasets/sentiment", list(TWEETEVAL_PUBLISHED), "tweeteval_sentiment",
                              TWEETEVAL_PUBLISHED),
    "semeval2017": [*github_files(*SEMEVAL2017_REPO, "dataset/Subtask_A/downloaded", SEMEVAL2017_TRAIN,
                                  "semeval2017_task4a/train_2013_2016"),
                    *github_files(*SEMEVAL2017_REPO, "dataset/Subtask_A/gold",
                                  ["SemEval2017-task4-test.subtask-A.english.txt"], "semeval2017_task4a/test_2017")],
    "dong2014": github_files(*ABSA_PYTORCH, "datasets/acl-14-short-data", ["train.raw", "test.raw"],
                             "twitter_target_dong2014"),
    "semeval2014_laptops": absa_files("Laptops"),
    "semeval2014_restaurants": absa_files("Restaurants"),
}

# The same datasets on the Hugging Face Hub, named when a download fails.
HUB = {
    "sentiment140": "stanfordnlp/sentiment140",
    "imdb": "stanfordnlp/imdb",
    "sst2": "nyu-mll/glue (config sst2)",
    "tweeteval": "cardiffnlp/tweet_eval (config sentiment)",
}


def download(name: str, dest_dir: str | Path) -> dict[str, Path]:
    """Fetch (unless already there), verify and place dataset `name`'s files under `dest_dir`.

    Returns the files by member name (archives) or by path under `dest_dir` (plain files).
    """
    dest_dir = Path(dest_dir)
    if name in FILES:
        return {remote.path: fetch_file(remote, dest_dir, name) for remote in FILES[name]}
    spec = DOWNLOADS.get(name)
    if spec is None:
        raise DataError(f"download: no download known for {name!r}; known: {', '.join(sorted(DOWNLOADS | FILES))}")
    target = dest_dir / spec.folder
    paths = {member: target / member for member in spec.members}
    if all(path.is_file() for path in paths.values()):
        log.info("%s: already extracted in %s", name, target)
        return paths

    ensure_writable(target)
    placed = target / spec.archive
    if placed.is_file():
        archive, fetched, where = placed, False, str(placed)
    else:
        archive, fetched, where = fetch(spec.url, placed, name), True, spec.url
    try:
        verify(archive, spec.size, spec.sha256, where)
        extract(archive, spec, paths, where)
    finally:
        if fetched:
            archive.unlink(missing_ok=True)
    return paths


def fetch_file(remote: RemoteFile, dest_dir: Path, name: str) -> Path:
    """One plain file, renamed into place only once verified."""
    path = dest_dir / remote.path
    if path.is_file():
        return path
    ensure_writable(path.parent)
    part = fetch(remote.url, path, name)
    try:
        verify(part, remote.size, remote.sha256, remote.url)
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)
    log.info("fetched %s", path)
    return path


def ensure_writable(folder: Path) -> None:
    """Fail before a long download, not after it (./data may be the read-only shared folder)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise DataError(f"{folder}: cannot write there ({err.strerror}); choose another destination folder") from None


def fetch(url: str, placed: Path, name: str) -> Path:
    """Stream `url` to a temporary file beside `placed`; a failure says how to do without."""
    part = new_file_beside(placed, ".part")
    with open(part, "wb") as out:
        try:
            log.info("downloading %s", url)
            with urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, out, CHUNK_BYTES)
        except OSError as err:  # URLError, HTTPError, timeouts, refused connections
            part.unlink(missing_ok=True)
            reason = getattr(err, "reason", err)
            hub = f"; it is also on the Hugging Face Hub as {HUB[name]}" if name in HUB else ""
            raise DataError(f"{url}: download failed ({reason}); run `make data`, or download "
                            f"{placed.name} yourself and place it at {placed}{hub}") from None
    return part


def verify(path: Path, size: int | None, sha256: str | None, where: str) -> None:
    """Check size and sha256 against the published values (when there are any)."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DataError(f"{where}: {actual} bytes, expected {size} (truncated or different file); "
                        f"download it again")
    if sha256 is not None:
        digest = hashlib.sha256()
        with path.open("rb") as file:
            for block in iter(lambda: file.read(CHUNK_BYTES), b""):
                digest.update(block)
        if digest.hexdigest() != sha256:
            raise DataError(f"{where}: sha256 {digest.hexdigest()}, expected {sha256}; download it again")


def extract(archive: Path, spec: Download, paths: dict[str, Path], where: str) -> None:
    """Extract each member through a temporary file that is only renamed into place once verified."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            by_basename = {Path(info.filename).name: info for info in zipped.infolist() if not info.is_dir()}
            for member, check in spec.members.items():
                if member not in by_basename:
                    raise DataError(f"{where}: no member {member}; members: {', '.join(sorted(by_basename))}")
                atomic_write(paths[member], lambda tmp: copy_verified(zipped, by_basename[member], tmp,
                                                                      f"{where}:{member}", check))
                log.info("extracted %s", paths[member])
    except (zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{where}: not a valid zip archive ({err}); download it again") from None


def copy_verified(zipped: zipfile.ZipFile, info: zipfile.ZipInfo, tmp: Path, where: str,
                  check: MemberCheck | None) -> None:
    with zipped.open(info) as source, tmp.open("wb") as out:
        shutil.copyfileobj(source, out, CHUNK_BYTES)
    if check is not None:
        verify_member(tmp, where, check)


def verify_member(path: Path, where: str, check: MemberCheck) -> None:
    try:
        labels = pd.read_csv(path, header=None, usecols=[0], dtype=str, encoding=check.encoding)[0]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise DataError(f"{where}: not a readable CSV ({err})") from None
    if len(labels) != check.rows:
        raise DataError(f"{where}: {len(labels)} rows, expected {check.rows}")
    if check.label_counts is not None:
        counts = {str(label): int(n) for label, n in labels.value_counts().items()}
        if counts != check.label_counts:
            raise DataError(f"{where}: label counts {counts}, expected {check.label_counts}")
