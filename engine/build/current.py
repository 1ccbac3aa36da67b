"""The project's current build: the one in `.flash/` when it is fresh, else a new one.

Both ways of building go through `current_build`: the TUI's build key (always rebuilding, to show
what the build did) and a deploy's implicit build (reusing a fresh one). Both get the same
`BuildProgress` events from `build_project`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.archive import BuildRef, file_sha256
from engine.build.checks import ImportChecker
from engine.build.files import collect_files
from engine.build.images import with_images
from engine.build.model import (
    ARCHIVE_NAME,
    BUILD_DIR,
    FLASH_DIR,
    MANIFEST_NAME,
    BuildProgress,
    BuildResult,
)
from engine.build.project import build_project
from engine.build.vendor import VENDOR_DIR, runtime_is_current
from engine.project import load_ignore

__all__ = ["CurrentBuild", "build_is_fresh", "current_build"]


def _manifest_without_time(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k != "generated_at"}


def build_is_fresh(root: Path, manifest: dict[str, Any]) -> bool:
    """True when `.flash/` holds a build of exactly the current sources and `manifest`.

    Fresh means: the archive and the build's manifest exist, the manifest equals the scanned
    one (timestamp aside, worker images added), the runtime it carries is this one, no shipped
    file is newer than the archive, and the set of shipped files is the one in the build
    directory.
    """
    archive = root / FLASH_DIR / ARCHIVE_NAME
    build_dir = root / BUILD_DIR
    try:
        built = json.loads((build_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
        archive_mtime = archive.stat().st_mtime_ns
    except (OSError, ValueError):
        return False
    # The build adds each resource's worker image (fixed for this interpreter).
    if _manifest_without_time(built) != _manifest_without_time(with_images(manifest)):
        return False
    if not runtime_is_current(build_dir):
        return False
    files, _warnings = collect_files(root, load_ignore(root).is_ignored)
    for path in files.values():
        try:
            if path.stat().st_mtime_ns > archive_mtime:
                return False
        except OSError:
            return False
    generated = {MANIFEST_NAME} | {
        str(entry.get("handler_file") or f"handler_{name}.py")
        for name, entry in (manifest.get("resources") or {}).items()
    }
    present: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(build_dir):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel_dir = Path(dirpath).relative_to(build_dir).as_posix()
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != VENDOR_DIR]  # the build's own packages
        prefix = "" if rel_dir == "." else rel_dir + "/"
        present.update(prefix + f for f in filenames if not f.endswith((".pyc", ".pyo")))
    return present - generated == set(files) - generated


@dataclass(frozen=True)
class CurrentBuild:
    """The build a deploy ships (`ref`); `result` is the `BuildResult` when this call built it."""

    ref: BuildRef
    result: BuildResult | None = None

    @property
    def built(self) -> bool:
        """True when this call built it (False: a fresh build was reused)."""
        return self.result is not None


def current_build(
    root: Path,
    manifest: dict[str, Any] | None = None,
    *,
    on_progress: Callable[[BuildProgress], None] | None = None,
    checker: ImportChecker | None = None,
) -> CurrentBuild:
    """The build in `.flash/` when it is fresh for `manifest`, else a new one (`build_project`,
    which raises `BuildError`). Without `manifest` it always builds."""
    if manifest is not None and build_is_fresh(root, manifest):
        archive = root / FLASH_DIR / ARCHIVE_NAME
        built_manifest = json.loads((root / BUILD_DIR / MANIFEST_NAME).read_text())
        ref = BuildRef(file_sha256(archive), archive, root / BUILD_DIR, built_manifest)
        return CurrentBuild(ref)
    result = build_project(root, on_progress=on_progress, checker=checker)
    ref = BuildRef(result.build_id, result.archive, result.build_dir, result.manifest)
    return CurrentBuild(ref, result=result)
