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


def test_pruning_keeps_copies_in_use_draining_and_the_newest_spare(tmp_path: Path) -> None:
    from engine.localcloud.buildcopies import prune_copies
    from engine.localcloud.store import Store

    home = Home(tmp_path / "home")
    store = Store(tmp_path / "cloud.db")
    copies = {}
    for index, text in enumerate(["a = 1\n", "b = 2\n", "c = 3\n", "d = 4\n"]):
        archive = tmp_path / f"build{index}.tar.gz"
        build_id = _archive(archive, text)
        copies[text[0]] = (build_id, ensure_copy(home, "app", _build(build_id, archive)))
        store.record_build("app", build_id, str(archive), str(copies[text[0]][1]), {})
        # created_at orders them: a, b, c, d from oldest to newest
    store.upsert_endpoint("app", "api", build_id=copies["a"][0], status="healthy")

    prune_copies(store, "app", keep={copies["b"][0]})

    left = {b["build_id"] for b in store.list_builds("app")}
    # a: an endpoint runs it; b: a replaced worker still does; d: the newest spare; c goes.
    assert left == {copies["a"][0], copies["b"][0], copies["d"][0]}
    assert not copies["c"][1].exists()
    assert all(copies[k][1].is_dir() for k in "abd")
    store.delete_endpoint("app", "api")
    prune_copies(store, "app", spare=0)
    assert store.list_builds("app") == [] and not any(p.exists() for _, p in copies.values())
