"""sendit.io: atomic writes leave no partial file and give the permissions a plain write would."""
import os
import stat

import pytest

from sendit.io import atomic_write, atomic_write_text


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_the_umask_permissions(tmp_path, umask_022):
    path = tmp_path / "results" / "summary.csv"
    atomic_write_text(path, "a,b\n")
    assert path.read_text() == "a,b\n"
    assert mode(path) == 0o644  # tempfile's 0600 kept results from the user's group


def test_a_replaced_file_keeps_its_permissions(tmp_path, umask_022):
    path = tmp_path / "report.md"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and mode(path) == 0o640


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("finished")

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, crash)
    assert path.read_text() == "finished"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
