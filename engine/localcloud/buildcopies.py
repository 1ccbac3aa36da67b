"""The immutable, private copies of builds that workers run from (`<home>/apps/<app>/builds/<id>`).

A copy is extracted from the build's archive (whose SHA-256 is the build id) under a temporary
name and renamed when complete, with a completion marker, so rebuilding the project does not
change a running endpoint until it is redeployed. What a crash leaves half made is removed at
the next start; copies no endpoint runs from any more are pruned, but for the newest one (a
redeploy of it after an undeploy, or a save undone in `flash-tui dev`, then copies nothing).

The build's bundled packages (`_flash_packages/`: our runtime and what upstream's images lack,
~130 files that never change between two saves) are not copied into every copy: they are
extracted once per content (the SHA-256 of their names, modes and bytes) into the app's
`runtimes/<key>` directory, made the same way (a temporary name, a marker, a rename: a half
extracted one is never used), and each copy's `_flash_packages` is a relative symlink to it.
A worker sees the same paths and bytes as before; a save then writes only the project's files.
A shared directory no copy links to any more goes when the copies are pruned.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
import tarfile
from collections.abc import Collection, Iterator
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from engine.handlergen import VENDOR_DIR
from engine.home import DIR_MODE, FILE_MODE, Home, ensure_private_dir
from engine.localcloud.store import Store
from engine.localcloud.wire import BuildSpec

__all__ = [
    "BUILD_MARKER",
    "RUNTIME_MARKER",
    "ensure_copy",
    "prune_copies",
    "prune_runtimes",
    "remove_partial_copies",
    "runtimes_dir",
    "shared_runtime",
]

BUILD_MARKER = ".flash-build-complete"
RUNTIME_MARKER = ".flash-runtime-complete"
# Under the app's directory, beside `builds/` (a copy's link climbs `<id>/..` and `builds/..`).
_RUNTIMES = "runtimes"


def runtimes_dir(home: Home, app: str) -> Path:
    """Where `app`'s shared bundled-package directories live (`<home>/apps/<app>/runtimes`)."""
    return home.root / "apps" / app / _RUNTIMES


def shared_runtime(copy: Path) -> Path | None:
    """The shared directory the build copy `copy` links its bundled packages to, or None (a
    copy without them, or one made before they were shared)."""
    link = copy / VENDOR_DIR
    if not link.is_symlink():
        return None
    return (copy / os.readlink(link)).resolve()


def ensure_copy(home: Home, app: str, build: BuildSpec) -> Path:
    """The complete copy of `app`'s `build`, made on first use; `ValueError` names what
    is wrong with the build."""
    build_id = build.build_id
    if not build_id:
        raise ValueError("deploy request without a build id")
    if any(c not in "0123456789abcdefABCDEF" for c in build_id):
        raise ValueError("malformed build id")
    target = home.builds_dir(app) / build_id
    if _complete(target):
        return target
    with _assembled(target, BUILD_MARKER, build_id) as tmp:
        archive_path = Path(build.archive) if build.archive else None
        if archive_path is not None and archive_path.is_file():
            if _sha256(archive_path) != build_id:
                raise ValueError(
                    f"{archive_path} no longer matches build {build_id[:12]} "
                    "(rebuilt meanwhile?); build and deploy again"
                )
            tmp.mkdir(mode=0o700)
            _extract(archive_path, tmp, runtimes_dir(home, app))
        elif build.build_dir and Path(build.build_dir).is_dir():
            shutil.copytree(
                build.build_dir,
                tmp,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        else:
            raise ValueError("the build has neither an archive nor a build directory")
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
        prune_runtimes(builds.parent)


def prune_copies(store: Store, app: str, keep: Collection[str] = (), spare: int = 1) -> None:
    """Delete the build copies of `app` no endpoint runs from any more (nor any of `keep`,
    builds a replaced worker still runs from), and their records; the newest `spare` of them
    stay, so deploying that build again (after an undeploy, a save undone) copies nothing."""
    used = {r.get("build_id") for r in store.list_endpoints(app)} | set(keep)
    unused = [b for b in store.list_builds(app) if b["build_id"] not in used]  # newest first
    for build in unused[spare:]:
        shutil.rmtree(build["path"], ignore_errors=True)
        store.delete_build(app, build["build_id"])


def prune_runtimes(app_dir: Path) -> None:
    """Delete the shared package directories under `app_dir` that no build copy links to
    (any more), and what an interrupted extraction left. Caller holds the app's lock (or the
    service is starting): a copy being made links its directory before the lock is released."""
    runtimes = app_dir / _RUNTIMES
    if not runtimes.is_dir():
        return
    used = set()
    builds = app_dir / "builds"
    if builds.is_dir():
        for copy in builds.iterdir():
            link = copy / VENDOR_DIR
            if link.is_symlink():
                used.add(PurePosixPath(os.readlink(link)).name)
    for path in runtimes.iterdir():
        if path.name not in used or not (path / RUNTIME_MARKER).is_file():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _complete(copy: Path) -> bool:
    """Whether `copy` is a finished build copy whose shared packages (if any) are there."""
    if not (copy / BUILD_MARKER).is_file():
        return False
    runtime = shared_runtime(copy)
    return runtime is None or (runtime / RUNTIME_MARKER).is_file()


class _Bundled(NamedTuple):
    """One file of the build's bundled packages, read from its archive."""

    path: str  # inside `_flash_packages/`
    executable: bool
    mtime: int
    data: bytes


def _extract(archive: Path, dest: Path, runtimes: Path) -> None:
    """Extract `archive` into `dest`, its bundled packages into (or from) the shared
    directory of their content under `runtimes`, linked as `dest/_flash_packages`."""
    bundled: list[_Bundled] = []
    digest = hashlib.sha256()
    odd = False  # a bundled entry that is not a plain file or directory: no sharing
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            top, _, rest = member.name.partition("/")
            if top != VENDOR_DIR:
                tar.extract(member, dest, filter="data")
                continue
            if member.isdir():
                continue  # made as its files need it
            parts = PurePosixPath(rest).parts
            if not member.isfile() or not parts or any(p in ("", ".", "..") for p in parts):
                odd = True
                continue
            handle = tar.extractfile(member)
            data = handle.read() if handle is not None else b""
            executable = bool(member.mode & stat.S_IXUSR)
            bundled.append(_Bundled("/".join(parts), executable, int(member.mtime), data))
            digest.update(f"{'/'.join(parts)}\0{int(executable)}\0{len(data)}\0".encode())
            digest.update(data)
    if odd:
        # Not a layout this build makes: extract it all into the copy, as copies always were.
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar if m.name.partition("/")[0] == VENDOR_DIR]
            tar.extractall(dest, members=members, filter="data")
        return
    if not bundled:
        return
    shared = _ensure_runtime(runtimes, digest.hexdigest(), bundled)
    os.symlink(os.path.relpath(shared, dest), dest / VENDOR_DIR)


def _ensure_runtime(runtimes: Path, key: str, files: list[_Bundled]) -> Path:
    """The complete shared directory `runtimes/<key>` holding `files`, written on first use
    under a temporary name and renamed once complete and private."""
    shared = runtimes / key
    if (shared / RUNTIME_MARKER).is_file():
        return shared
    ensure_private_dir(runtimes)
    with _assembled(shared, RUNTIME_MARKER, key) as tmp:
        tmp.mkdir(mode=DIR_MODE)
        for item in files:
            path = tmp / item.path
            path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            mode = DIR_MODE if item.executable else FILE_MODE
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(item.data)
            # The archive's times, as an extraction into the copy kept them.
            os.utime(path, (item.mtime, item.mtime))
    return shared


@contextlib.contextmanager
def _assembled(target: Path, marker: str, stamp: str) -> Iterator[Path]:
    """A temporary path beside `target` to fill; once filled it is stamped (`marker` holds
    `stamp`), made private (an archive's 0644/0755 modes, a umask's directories would open it
    to other users) and renamed to `target`, replacing one left unstamped. A crash part-way
    leaves only a temporary directory, which is removed, never a `target` that is trusted."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        (tmp / marker).write_text(stamp + "\n")
        _make_private(tmp)
        if target.exists():  # unstamped: incomplete, or a copy whose shared packages are gone
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
