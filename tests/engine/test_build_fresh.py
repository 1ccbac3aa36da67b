"""`build_is_fresh`: when a deploy may reuse `.flash/` instead of rebuilding.

Modification times are set explicitly with os.utime, so each case tests one rule (mtime, file
set, manifest) and does not depend on the file system's timestamp granularity.
"""

from __future__ import annotations

import hashlib
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from engine.build import (
    ARCHIVE_NAME,
    FLASH_DIR,
    BuildProgress,
    build_is_fresh,
    build_project,
    current_build,
)
from engine.scan import scan_project

MAIN = """
    from tetra_rp import CpuLiveServerless, remote

    cfg = CpuLiveServerless(name="worker", workersMax=1)


    @remote(cfg)
    async def hello(name: str = "x") -> dict:
        return {"hello": name}
    """


def _manifest(root: Path) -> dict[str, Any]:
    """The manifest a deploy would compare against: a fresh scan (new generated_at)."""
    return scan_project(root).manifest


def _archive_mtime(root: Path) -> int:
    return (root / FLASH_DIR / ARCHIVE_NAME).stat().st_mtime_ns


def _set_mtime(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture()
def built(tmp_path: Path) -> Path:
    """A small project, built (the import check is skipped: freshness doesn't depend on it)."""
    root = tmp_path / "app"
    (root / "lib").mkdir(parents=True)
    (root / "main.py").write_text(textwrap.dedent(MAIN))
    (root / "lib" / "util.py").write_text("VALUE = 1\n")
    build_project(root, import_check=False)
    # Sources older than the archive, whatever the clock granularity.
    past = _archive_mtime(root) - 10**9
    for path in (root / "main.py", root / "lib" / "util.py"):
        _set_mtime(path, past)
    return root


def test_unbuilt_project_is_not_fresh(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(textwrap.dedent(MAIN))
    assert not build_is_fresh(tmp_path, _manifest(tmp_path))


def test_unchanged_project_is_fresh(built: Path) -> None:
    assert build_is_fresh(built, _manifest(built))


def test_edited_source_is_stale(built: Path) -> None:
    util = built / "lib" / "util.py"
    util.write_text("VALUE = 2\n")
    _set_mtime(util, _archive_mtime(built) + 10**9)
    assert not build_is_fresh(built, _manifest(built))


def test_added_file_is_stale(built: Path) -> None:
    # Older than the archive (e.g. copied in with its times kept): only the file set shows it.
    extra = built / "lib" / "extra.py"
    extra.write_text("X = 1\n")
    _set_mtime(extra, _archive_mtime(built) - 10**9)
    assert not build_is_fresh(built, _manifest(built))


def test_removed_file_is_stale(built: Path) -> None:
    (built / "lib" / "util.py").unlink()
    assert not build_is_fresh(built, _manifest(built))


def test_manifest_only_change_is_stale(built: Path) -> None:
    # A config edit whose file time stays old: only the manifest comparison catches it.
    main = built / "main.py"
    main.write_text(textwrap.dedent(MAIN).replace("workersMax=1", "workersMax=3"))
    _set_mtime(main, _archive_mtime(built) - 10**9)
    manifest = _manifest(built)
    assert manifest["resources"]["worker"]["config"]["workersMax"] == 3
    assert not build_is_fresh(built, manifest)


def test_current_build_reuses_a_fresh_build_silently(built: Path) -> None:
    events: list[BuildProgress] = []
    current = current_build(built, _manifest(built), on_progress=events.append)
    assert not current.built and current.result is None and events == []
    assert current.ref.archive == built / FLASH_DIR / ARCHIVE_NAME
    assert current.ref.build_id == hashlib.sha256(current.ref.archive.read_bytes()).hexdigest()


def test_current_build_rebuilds_a_stale_build_with_progress(built: Path) -> None:
    (built / "lib" / "util.py").write_text("VALUE = 2\n")
    events: list[BuildProgress] = []
    current = current_build(built, _manifest(built), on_progress=events.append)
    assert current.built and current.result is not None
    assert current.ref.build_id == current.result.build_id
    assert [e.step for e in events][0] == "scan" and "archive" in {e.step for e in events}
    assert build_is_fresh(built, _manifest(built))


def test_current_build_without_a_manifest_always_builds(built: Path) -> None:
    """The TUI's build key: a build every time, even when `.flash/` is fresh."""
    events: list[BuildProgress] = []
    current = current_build(built, on_progress=events.append)
    assert current.built and events
