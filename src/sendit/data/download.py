"""Fetch a dataset's original archive, verify it, and extract its files atomically.

The shared data folder (`make data`) holds no copy of the original Sentiment140 files; this
fetches them from the authors' site. An archive already placed by hand is used as it is.
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

from sendit.data.sources import DataError
from sendit.io import atomic_write

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
    members: dict[str, MemberCheck]
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
}


def download(name: str, dest_dir: str | Path) -> dict[str, Path]:
    """Fetch (unless already extracted), verify and extract dataset `name` under `dest_dir`.

    Returns the extracted files by member name.
    """
    spec = DOWNLOADS.get(name)
    if spec is None:
        raise DataError(f"download: no download known for {name!r}; known: {', '.join(sorted(DOWNLOADS))}")
    dest_dir = Path(dest_dir)
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
        archive, fetched, where = fetch(spec, placed), True, spec.url
    try:
        verify_archive(archive, spec, where)
        extract(archive, spec, paths, where)
    finally:
        if fetched:
            archive.unlink(missing_ok=True)
    return paths


def ensure_writable(folder: Path) -> None:
    """Fail before a long download, not after it (./data may be the read-only shared folder)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise DataError(f"{folder}: cannot write there ({err.strerror}); choose another destination folder") from None


def fetch(spec: Download, placed: Path) -> Path:
    """Stream `spec.url` to a temporary file beside `placed`; a failure says how to do without."""
    with tempfile.NamedTemporaryFile(dir=placed.parent, prefix=f".{spec.archive}.", suffix=".part",
                                     delete=False) as out:
        part = Path(out.name)
        try:
            log.info("downloading %s", spec.url)
            with urllib.request.urlopen(spec.url, timeout=60) as response:
                shutil.copyfileobj(response, out, CHUNK_BYTES)
        except OSError as err:  # URLError, HTTPError, timeouts, refused connections
            part.unlink(missing_ok=True)
            reason = getattr(err, "reason", err)
            raise DataError(f"{spec.url}: download failed ({reason}); run `make data`, or download "
                            f"{spec.archive} yourself and place it at {placed}") from None
    return part


def verify_archive(archive: Path, spec: Download, where: str) -> None:
    """Check size and sha256 against the published values (when there are any)."""
    size = archive.stat().st_size
    if spec.size is not None and size != spec.size:
        raise DataError(f"{where}: {size} bytes, expected {spec.size} (truncated or different file); "
                        f"download it again")
    if spec.sha256 is not None:
        digest = hashlib.sha256()
        with archive.open("rb") as file:
            for block in iter(lambda: file.read(CHUNK_BYTES), b""):
                digest.update(block)
        if digest.hexdigest() != spec.sha256:
            raise DataError(f"{where}: sha256 {digest.hexdigest()}, expected {spec.sha256}; "
                            f"download it again")


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


def copy_verified(zipped: zipfile.ZipFile, info: zipfile.ZipInfo, tmp: Path, where: str, check: MemberCheck) -> None:
    with zipped.open(info) as source, tmp.open("wb") as out:
        shutil.copyfileobj(source, out, CHUNK_BYTES)
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
