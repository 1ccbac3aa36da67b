"""Build copies: a copy is made only from the archive its build id names, and only under its id."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from engine.home import Home
from engine.localcloud.buildcopies import BUILD_MARKER, ensure_copy
from engine.localcloud.wire import BuildSpec


def _archive(path: Path, text: str) -> str:
    """A one-file build archive at `path`; returns its build id (the archive's SHA-256)."""
    data = text.encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("handler_api.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build(build_id: str, archive: Path) -> BuildSpec:
    return BuildSpec(build_id=build_id, archive=str(archive))


def test_copy_is_complete_and_marked(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    archive = tmp_path / "build.tar.gz"
    build_id = _archive(archive, "x = 1\n")
    target = ensure_copy(home, "app", _build(build_id, archive))
    assert target == home.builds_dir("app") / build_id
    assert (target / "handler_api.py").read_text() == "x = 1\n"
    assert (target / BUILD_MARKER).read_text() == build_id + "\n"


def test_rebuilt_archive_is_refused_naming_it_and_leaves_nothing(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    archive = tmp_path / "build.tar.gz"
    old_id = _archive(archive, "x = 1\n")
    _archive(archive, "x = 2\n")  # rebuilt between the plan and the deploy
    with pytest.raises(ValueError, match="no longer matches build") as raised:
        ensure_copy(home, "app", _build(old_id, archive))
    assert str(archive) in str(raised.value)
    assert list(home.builds_dir("app").iterdir()) == []


@pytest.mark.parametrize("build_id", ["", "../../escape", "abc/def"])
def test_build_id_that_is_not_hex_is_refused(tmp_path: Path, build_id: str) -> None:
    home = Home(tmp_path / "home")
    archive = tmp_path / "build.tar.gz"
    _archive(archive, "x = 1\n")
    with pytest.raises(ValueError, match="build id"):
        ensure_copy(home, "app", _build(build_id, archive))
    assert not (home.root / "escape").exists()
