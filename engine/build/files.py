"""Build step 3: collect the project's files to ship and sync them into `.flash/.build/`.

Incremental: a file is copied only when its size, mtime or content differ; files that left the
project are deleted. On top of engine.project's ignore rules the build never ships secrets
(`.env`), other VCS data, tool caches or compiled files; symlinks that resolve outside the
project are refused with a warning.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from engine.archive import file_sha256
from engine.build.model import FLASH_DIR
from engine.diagnostics import Diagnostic

__all__ = ["collect_files", "prune", "remove_path", "sync_file"]

# On top of engine.project's rules (which already skip .git, .venv/venv and any directory with a
# pyvenv.cfg, .flash, .runpod, __pycache__, node_modules, site-packages): never shipped either,
# whatever the ignore files say — other VCS data, upstream's state dir, tool caches.
_BUILD_SKIP_DIRS = frozenset(
    {".hg", ".svn", ".tetra", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", ".nox"}
)
_NEVER_SUFFIXES = (".pyc", ".pyo")
# `.env.example` and friends document variables without values; they may ship.
_ENV_TEMPLATES = (".example", ".sample", ".template", ".dist")


def _is_secret_env(name: str) -> bool:
    if name == ".env":
        return True
    return name.startswith(".env.") and not name.endswith(_ENV_TEMPLATES)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def collect_files(
    root: Path, is_ignored: Callable[[str, bool], bool]
) -> tuple[dict[str, Path], list[Diagnostic]]:
    """Files to ship: relative posix path -> the real file to read, plus warnings.

    Symlinks are resolved: a link whose target is inside the project is followed (files are
    later copied as regular files); a link that escapes the project, or dangles, is skipped with
    a warning. Directory links are followed once per real directory, so loops end.
    """
    files: dict[str, Path] = {}
    warnings: list[Diagnostic] = []
    seen_dirs: set[Path] = {root}

    def warn(rel: str, message: str, code: str) -> None:
        warnings.append(Diagnostic("warning", rel, 0, message, code))

    def walk(directory: Path, prefix: str) -> None:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            warn(prefix or ".", f"cannot list directory: {exc.strerror or exc}", "build-unreadable")
            return
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            path = Path(entry.path)
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir()  # follows links
                is_file = entry.is_file()
            except OSError:
                continue
            if is_dir:
                if entry.name in _BUILD_SKIP_DIRS or is_ignored(rel, True):
                    continue
            elif _is_secret_env(entry.name) or entry.name.endswith(_NEVER_SUFFIXES):
                continue
            elif is_ignored(rel, False):
                continue
            target = path
            if is_link:
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    warn(rel, "broken or looping symlink; not included", "build-symlink-broken")
                    continue
                if not _inside(target, root) or _inside(target, root / FLASH_DIR):
                    warn(
                        rel,
                        f"symlink points outside the project ({target}); not included",
                        "build-symlink-escape",
                    )
                    continue
            if is_dir:
                real = target.resolve()
                if real in seen_dirs:
                    continue  # a loop, or a second link to a directory already shipped
                seen_dirs.add(real)
                walk(path, rel + "/")
            elif is_file:
                files[rel] = target
            # sockets, fifos, devices: never shipped

    walk(root, "")
    return files, warnings


def _same_content(a: Path, b: Path) -> bool:
    return file_sha256(a) == file_sha256(b)


def _copy_file(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.is_dir():
        remove_path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-flash")
    shutil.copyfile(source, tmp)  # reads through symlinks: a regular file in the build
    st = source.stat()
    executable = st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.chmod(tmp, 0o755 if executable else 0o644)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, dest)


def remove_path(path: Path) -> None:
    """Delete a file, a link or a whole directory."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def sync_file(source: Path, dest: Path) -> bool:
    """Make `dest` a copy of `source`; True if bytes were copied.

    Size + mtime equal -> unchanged without reading either file. Same size, different mtime ->
    compare hashes (a `touch` or a fresh git checkout must not force a copy) and only adopt the
    mtime when the content is the same.
    """
    try:
        src, dst = source.stat(), dest.lstat()
    except FileNotFoundError:
        _copy_file(source, dest)
        return True
    if stat.S_ISREG(dst.st_mode) and src.st_size == dst.st_size:
        if src.st_mtime_ns == dst.st_mtime_ns:
            return False
        if _same_content(source, dest):
            os.utime(dest, ns=(src.st_atime_ns, src.st_mtime_ns))
            return False
    _copy_file(source, dest)
    return True


def _existing_files(build_dir: Path) -> set[str]:
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(build_dir):
        rel_dir = Path(dirpath).relative_to(build_dir).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        found.update(prefix + name for name in filenames)
        # directory symlinks would be reported as dirs; a build never contains any
        found.update(prefix + d for d in dirnames if (Path(dirpath) / d).is_symlink())
    return found


def prune(build_dir: Path, keep: set[str]) -> int:
    """Delete files under `build_dir` not in `keep`, then empty directories; return the count."""
    removed = 0
    for rel in sorted(_existing_files(build_dir) - keep):
        remove_path(build_dir / rel)
        removed += 1
    for dirpath, _dirnames, _filenames in sorted(os.walk(build_dir), reverse=True):
        path = Path(dirpath)
        if path != build_dir and not any(path.iterdir()):
            path.rmdir()
    return removed
