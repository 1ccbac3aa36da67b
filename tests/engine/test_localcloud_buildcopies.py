"""Build copies: a copy is made only from the archive its build id names, and only under its id."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
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


def _bundled_archive(path: Path, files: dict[str, str], runtime_text: str) -> str:
    """A build archive with the project's `files` and bundled packages (`_flash_packages/`:
    a module holding `runtime_text` and an executable file); returns its build id."""
    members = {f"_flash_packages/pkg/{n}.py": runtime_text + n for n in ("a", "b", "c")}
    members["_flash_packages/pkg/native.so"] = "binary"
    members.update(files)
    with tarfile.open(path, "w:gz") as tar:
        for name in sorted(members):
            data = members[name].encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".so") else 0o644
            info.mtime = 315532800  # 1980, as the build's archives
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy(home: Home, tmp_path: Path, name: str, files: dict[str, str], runtime: str) -> Path:
    archive = tmp_path / f"{name}.tar.gz"
    build_id = _bundled_archive(archive, files, runtime)
    return ensure_copy(home, "app", _build(build_id, archive))


def test_two_builds_share_one_directory_of_bundled_packages(tmp_path: Path) -> None:
    from engine.localcloud.buildcopies import RUNTIME_MARKER, runtimes_dir, shared_runtime

    home = Home(tmp_path / "home")
    first = _copy(home, tmp_path, "one", {"handler_api.py": "x = 1\n"}, "v1 ")
    second = _copy(home, tmp_path, "two", {"handler_api.py": "x = 2\n"}, "v1 ")
    assert first != second
    assert (first / "handler_api.py").read_text() == "x = 1\n"
    assert (second / "handler_api.py").read_text() == "x = 2\n"
    shared = shared_runtime(first)
    assert shared is not None and shared == shared_runtime(second)
    assert shared.parent == runtimes_dir(home, "app").resolve()
    assert [p.name for p in runtimes_dir(home, "app").iterdir()] == [shared.name]
    assert (shared / RUNTIME_MARKER).is_file()
    # What a worker reads through its copy is the archive's: names, bytes, times, exec bits.
    bundled = first / "_flash_packages"
    assert bundled.is_symlink() and not os.path.isabs(os.readlink(bundled))
    assert (bundled / "pkg" / "a.py").read_text() == "v1 a"
    assert sorted(p.name for p in (bundled / "pkg").iterdir()) == [
        "a.py",
        "b.py",
        "c.py",
        "native.so",
    ]
    assert (bundled / "pkg" / "a.py").stat().st_mtime == 315532800
    assert stat.S_IMODE((bundled / "pkg" / "native.so").stat().st_mode) == 0o700
    for path in [shared, *shared.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode in ((0o700,) if path.is_dir() else (0o600, 0o700)), (path, oct(mode))
    # Other bundled packages (another runtime) get their own directory.
    third = _copy(home, tmp_path, "three", {"handler_api.py": "x = 3\n"}, "v2 ")
    assert shared_runtime(third) != shared
    assert (third / "_flash_packages" / "pkg" / "a.py").read_text() == "v2 a"


def test_a_half_extracted_shared_directory_is_never_used_and_is_cleaned(tmp_path: Path) -> None:
    from engine.localcloud.buildcopies import (
        RUNTIME_MARKER,
        remove_partial_copies,
        runtimes_dir,
        shared_runtime,
    )

    home = Home(tmp_path / "home")
    made = _copy(home, tmp_path, "one", {"handler_api.py": "x = 1\n"}, "v1 ")
    shared = shared_runtime(made)
    assert shared is not None
    # A crash mid-extraction: the temporary directory, and the final name without its marker
    # (a directory made by hand, or by an older version) holding a truncated file.
    runtimes = runtimes_dir(home, "app")
    leftover = runtimes / f".{shared.name}.tmp-123-deadbeef"
    (leftover / "pkg").mkdir(parents=True)
    (leftover / "pkg" / "a.py").write_text("v1")
    shutil.rmtree(made)
    (shared / RUNTIME_MARKER).unlink()
    (shared / "pkg" / "a.py").write_text("v1")

    again = _copy(home, tmp_path, "one", {"handler_api.py": "x = 1\n"}, "v1 ")
    assert shared_runtime(again) == shared and (shared / RUNTIME_MARKER).is_file()
    assert (again / "_flash_packages" / "pkg" / "a.py").read_text() == "v1 a"
    assert leftover.is_dir()  # only a starting service (or a prune) may know it is stale
    remove_partial_copies(home.root / "apps", {str(again)})
    assert not leftover.exists() and (shared / "pkg" / "a.py").is_file()

    # A complete copy whose shared directory went missing is not trusted either: made again.
    shutil.rmtree(shared)
    third = _copy(home, tmp_path, "one", {"handler_api.py": "x = 1\n"}, "v1 ")
    assert third == again and (third / "_flash_packages" / "pkg" / "b.py").read_text() == "v1 b"


def test_pruning_removes_shared_directories_no_copy_uses_and_keeps_those_in_use(
    tmp_path: Path,
) -> None:
    from engine.localcloud.buildcopies import (
        prune_copies,
        prune_runtimes,
        runtimes_dir,
        shared_runtime,
    )
    from engine.localcloud.store import Store

    home = Home(tmp_path / "home")
    store = Store(tmp_path / "cloud.db")
    copies = {}
    for name, runtime in (("old", "v1 "), ("mid", "v1 "), ("new", "v2 ")):
        copy = _copy(home, tmp_path, name, {"handler_api.py": f"# {name}\n"}, runtime)
        store.record_build("app", copy.name, None, str(copy), {})
        copies[name] = copy
    v1, v2 = shared_runtime(copies["old"]), shared_runtime(copies["new"])
    assert v1 is not None and v2 is not None and v1 != v2
    store.upsert_endpoint("app", "api", build_id=copies["mid"].name, status="healthy")

    prune_copies(store, "app", spare=0)
    prune_runtimes(home.app_dir("app"))
    # "old" went, but "mid" (running) still links v1; "new" went and took v2 with it.
    assert not copies["old"].exists() and not copies["new"].exists()
    assert v1.is_dir() and not v2.exists()
    assert (copies["mid"] / "_flash_packages" / "pkg" / "a.py").read_text() == "v1 a"
    store.delete_endpoint("app", "api")
    prune_copies(store, "app", spare=0)
    prune_runtimes(home.app_dir("app"))
    assert list(runtimes_dir(home, "app").iterdir()) == []
