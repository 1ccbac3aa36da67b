"""The immutable, private copies of builds that workers run from (`<home>/apps/<app>/builds/<id>`).

A copy is extracted from the build's archive (whose SHA-256 is the build id) under a temporary
name and renamed when complete, with a completion marker, so rebuilding the project does not
change a running endpoint until it is redeployed. What a crash leaves half made is removed at
the next start; copies no endpoint runs from any more are pruned, but for the newest one (a
redeploy of it after an undeploy, or a save undone in `flash-tui dev`, then copies nothing).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import tarfile
from collections.abc import Collection
from pathlib import Path

from engine.home import DIR_MODE, FILE_MODE, Home
from engine.localcloud.store import Store
from engine.localcloud.wire import BuildSpec

__all__ = ["BUILD_MARKER", "ensure_copy", "prune_copies", "remove_partial_copies"]

BUILD_MARKER = ".flash-build-complete"


def ensure_copy(home: Home, app: str, build: BuildSpec) -> Path:
    """The complete copy of `app`'s `build`, made on first use; `ValueError` names what
    is wrong with the build."""
    build_id = build.build_id
    if not build_id:
        raise ValueError("deploy request without a build id")
    if any(c not in "0123456789abcdefABCDEF" for c in build_id):
        raise ValueError("malformed build id")
    target = home.builds_dir(app) / build_id
    if (target / BUILD_MARKER).is_file():
        return target
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        archive_path = Path(build.archive) if build.archive else None
        if archive_path is not None and archive_path.is_file():
            if _sha256(archive_path) != build_id:
                raise ValueError(
                    f"{archive_path} no longer matches build {build_id[:12]} "
                    "(rebuilt meanwhile?); build and deploy again"
                )
            tmp.mkdir(mode=0o700)
            with tarfile.open(archive_path, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
        elif build.build_dir and Path(build.build_dir).is_dir():
            shutil.copytree(
                build.build_dir,
                tmp,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        else:
            raise ValueError("the build has neither an archive nor a build directory")
        (tmp / BUILD_MARKER).write_text(build_id + "\n")
        # The archive's modes (0644/0755) would open the copy to other users.
        _make_private(tmp)
        if target.exists():  # an incomplete copy from an interrupted deploy
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def remove_partial_copies(apps: Path, used: set[str | None]) -> None:
    """Delete build copies under `apps` a crash left half made: temporary extraction
    directories, and copies without their completion marker whose path is not in `used`."""
    if not apps.is_dir():
        return
    for builds in apps.glob("*/builds"):
        for path in builds.iterdir():
            if not path.is_dir() or path.is_symlink():
                continue
            partial = path.name.startswith(".") and ".tmp-" in path.name
            unmarked = not (path / BUILD_MARKER).is_file() and str(path) not in used
            if partial or unmarked:
                shutil.rmtree(path, ignore_errors=True)
            elif stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
                _make_private(path)  # a copy made before copies were private


def prune_copies(store: Store, app: str, keep: Collection[str] = (), spare: int = 1) -> None:
    """Delete the build copies of `app` no endpoint runs from any more (nor any of `keep`,
    builds a replaced worker still runs from), and their records; the newest `spare` of them
    stay, so deploying that build again (after an undeploy, a save undone) copies nothing."""
    used = {r.get("build_id") for r in store.list_endpoints(app)} | set(keep)
    unused = [b for b in store.list_builds(app) if b["build_id"] not in used]  # newest first
    for build in unused[spare:]:
        shutil.rmtree(build["path"], ignore_errors=True)
        store.delete_build(app, build["build_id"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _make_private(root: Path) -> None:
    """Directories 0700 and files 0600 (0700 if executable) under `root`, `root` included."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue  # the data filter keeps symlinks inside the copy; their mode is unused
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            os.chmod(path, DIR_MODE)
        else:
            os.chmod(path, DIR_MODE if mode & stat.S_IXUSR else FILE_MODE)
