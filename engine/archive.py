"""Reproducible `.tar.gz` archives: the same files give byte-identical archives.

Everything that normally leaks the build environment into a tarball is pinned:
- entries sorted by path, flat (`main.py`, not `./main.py`), regular files only (extraction
  creates the parent directories);
- every mtime is `FIXED_MTIME`, owner uid/gid 0 with empty user/group names;
- modes normalised to 0644, or 0755 when the source file has any execute bit;
- the gzip header has mtime 0 and no file name (gzip otherwise records both).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FIXED_MTIME", "MAX_ARCHIVE_BYTES", "BuildRef", "file_sha256", "write_archive"]

# 1980-01-01T00:00:00Z: the reproducible-builds convention (the earliest time ZIP can encode,
# used by wheel and others); unlike 0 it does not look like a missing timestamp once extracted.
FIXED_MTIME = 315_532_800

# RunPod refuses uploads above 500 MB: the build warns past this size.
MAX_ARCHIVE_BYTES = 500 * 1024 * 1024


@dataclass(frozen=True)
class BuildRef:
    """The build a deploy ships: its id (archive SHA-256), archive, build dir and manifest."""

    build_id: str
    archive: Path
    build_dir: Path
    manifest: dict[str, Any]


_CHUNK = 1024 * 1024


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _tarinfo(arcname: str, source: Path) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    st = source.stat()
    info.size = st.st_size
    info.mtime = FIXED_MTIME
    info.mode = 0o755 if st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_archive(
    source_dir: Path,
    archive_path: Path,
    files: Iterable[str] | None = None,
    *,
    compresslevel: int = 6,
) -> str:
    """Pack `files` (posix paths relative to `source_dir`; default: every regular file under it)
    into `archive_path` reproducibly, and return the archive's SHA-256 hex digest.

    The archive is written to a temporary file next to the target and renamed into place, so a
    crash never leaves a truncated archive where a good one was.
    """
    source_dir = Path(source_dir)
    archive_path = Path(archive_path)
    if files is None:
        names = [
            p.relative_to(source_dir).as_posix()
            for p in source_dir.rglob("*")
            if p.is_file() and not p.is_symlink()
        ]
    else:
        names = list(files)
    names = sorted(set(names))
    for name in names:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"archive member {name!r} must be a relative path inside the build")

    archive_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".archive-", suffix=".tmp", dir=archive_path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            # filename="" and mtime=0 keep the gzip header free of the temp name and the clock.
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=compresslevel
            ) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for name in names:
                        source = source_dir / name
                        with source.open("rb") as handle:
                            tar.addfile(_tarinfo(name, source), handle)
        os.replace(tmp, archive_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return file_sha256(archive_path)
