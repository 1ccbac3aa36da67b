"""Reproducible `.tar.gz` archives: the same files give byte-identical archives.

Everything that normally leaks the build environment into a tarball is pinned:
- entries sorted by path, flat (`main.py`, not `./main.py`), regular files only (extraction
  creates the parent directories);
- every mtime is `FIXED_MTIME`, owner uid/gid 0 with empty user/group names;
- modes normalised to 0644, or 0755 when the source file has any execute bit;
- the gzip header has mtime 0 and no file name (gzip otherwise records both).

Members that do not change from one build to the next (a build's bundled packages) can be kept
compressed in a cache directory: the archive is then three gzip members (what sorts before
them, them, what sorts after them plus the tar trailer), which every gzip reader (tar, Python's
tarfile) reads as one stream. Only the project's files are compressed again; the same files
still give the same bytes.
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
    cache_dir: Path | None = None,
    cached_prefix: str | None = None,
) -> str:
    """Pack `files` (posix paths relative to `source_dir`; default: every regular file under it)
    into `archive_path` reproducibly, and return the archive's SHA-256 hex digest. The members
    under `cached_prefix` (a directory, `pkg/`) are compressed once per content, kept in
    `cache_dir` (see the module docstring).

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
    stable = [n for n in names if cached_prefix and n.startswith(cached_prefix)]
    fd, tmp_name = tempfile.mkstemp(prefix=".archive-", suffix=".tmp", dir=archive_path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            if stable and cache_dir is not None:
                _write_segmented(raw, source_dir, names, stable, cache_dir, compresslevel)
            else:
                # filename="" and mtime=0 keep the gzip header free of the temp name and clock.
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


# Bumped when the bytes a cached segment holds would change for the same members.
_SEGMENT_FORMAT = "tar-pax-1"


def _members_tar(source_dir: Path, names: list[str]) -> bytes:
    """The tar blocks of `names` (headers, data, padding) as `tarfile` writes them, without the
    archive's trailer."""
    parts = []
    for name in names:
        source = source_dir / name
        data = source.read_bytes()
        info = _tarinfo(name, source)
        info.size = len(data)
        parts.append(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        parts.append(data)
        parts.append(b"\0" * (-len(data) % tarfile.BLOCKSIZE))
    return b"".join(parts)


def _gzip(data: bytes, compresslevel: int) -> bytes:
    """`data` as one gzip member with no name and mtime 0."""
    return gzip.compress(data, compresslevel=compresslevel, mtime=0)


def _write_segmented(
    raw: Any,
    source_dir: Path,
    names: list[str],
    stable: list[str],
    cache_dir: Path,
    compresslevel: int,
) -> None:
    """Write the archive of `names` as three gzip members, the one of the `stable` run (a
    contiguous run of the sorted names) from `cache_dir` when it holds it."""
    first, last = names.index(stable[0]), names.index(stable[-1])
    if names[first : last + 1] != stable:
        raise ValueError("the cached members must sort together")
    key = hashlib.sha256(f"{_SEGMENT_FORMAT}\0{compresslevel}\0".encode())
    for name in stable:
        source = source_dir / name
        key.update(f"{name}\0{_tarinfo(name, source).mode}\0".encode())
        key.update(hashlib.sha256(source.read_bytes()).digest())
    cached = cache_dir / f"{key.hexdigest()}.gz"
    length_file = cached.with_suffix(".len")
    try:
        segment, length = cached.read_bytes(), int(length_file.read_text())
    except (OSError, ValueError):
        blocks = _members_tar(source_dir, stable)
        segment, length = _gzip(blocks, compresslevel), len(blocks)
        cache_dir.mkdir(parents=True, exist_ok=True)
        for old in cache_dir.glob("*.gz"):  # one build's segment at a time is enough
            old.unlink(missing_ok=True)
            old.with_suffix(".len").unlink(missing_ok=True)
        # The length first: a segment without its length is never read.
        _write_atomic(length_file, str(length).encode())
        _write_atomic(cached, segment)
    before = _members_tar(source_dir, names[:first])
    after = _members_tar(source_dir, names[last + 1 :])
    # The trailer: two zero blocks, then zeros up to a whole record, as tarfile ends one.
    size = len(before) + length + len(after) + 2 * tarfile.BLOCKSIZE
    trailer = b"\0" * (2 * tarfile.BLOCKSIZE + (-size % tarfile.RECORDSIZE))
    if before:
        raw.write(_gzip(before, compresslevel))
    raw.write(segment)
    raw.write(_gzip(after + trailer, compresslevel))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
