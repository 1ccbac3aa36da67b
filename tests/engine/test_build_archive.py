"""engine.archive: reproducible tar.gz (sorted, flat, fixed metadata, clean gzip header)."""

from __future__ import annotations

import gzip
import os
import struct
import tarfile
from pathlib import Path

import pytest

from engine.archive import FIXED_MTIME, file_sha256, write_archive


def _tree(root: Path) -> Path:
    """A small source tree (nested package, an executable, binary data, a non-ASCII name) at
    `root`; returns `root`."""
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "main.py").write_text("print('hi')\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "mod.py").write_text("X = 1\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o700)
    (root / "data.bin").write_bytes(bytes(range(256)) * 10)
    (root / "ünïcode.txt").write_text("é\n")
    return root


def test_same_files_give_byte_identical_archives(tmp_path: Path) -> None:
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    # Different mtimes and modes on the second copy must not matter.
    for path in b.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    (b / "main.py").chmod(0o600)
    digest_a = write_archive(a, tmp_path / "out" / "a.tar.gz")
    digest_b = write_archive(b, tmp_path / "out" / "b.tar.gz")
    assert digest_a == digest_b
    out = tmp_path / "out"
    assert (out / "a.tar.gz").read_bytes() == (out / "b.tar.gz").read_bytes()
    assert digest_a == file_sha256(tmp_path / "out" / "a.tar.gz")


def test_members_are_sorted_flat_and_normalised(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    archive = tmp_path / "x.tar.gz"
    write_archive(src, archive)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert "main.py" in names and "pkg/sub/mod.py" in names and "ünïcode.txt" in names
    assert not any(n.startswith(("./", "/")) for n in names)
    for m in members:
        assert m.isfile()
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (FIXED_MTIME, 0, 0, "", "")
        assert m.mode == (0o755 if m.name == "run.sh" else 0o644)


def test_gzip_header_has_no_name_and_no_mtime(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    archive = tmp_path / "named-archive.tar.gz"
    write_archive(src, archive)
    header = archive.read_bytes()[:10]
    magic, _method, flags, mtime = struct.unpack("<HBBI", header[:8])
    assert magic == 0x8B1F
    assert flags & 0x08 == 0, "FNAME flag set: the file name leaked into the header"
    assert mtime == 0
    assert gzip.decompress(archive.read_bytes())  # still a valid gzip stream


def test_explicit_file_list_and_path_safety(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    archive = tmp_path / "x.tar.gz"
    write_archive(src, archive, ["pkg/sub/mod.py", "main.py", "main.py"])
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["main.py", "pkg/sub/mod.py"]
    with pytest.raises(ValueError, match="inside the build"):
        write_archive(src, archive, ["../escape.py"])
    # the failed call left the previous good archive in place, and no temp files
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["main.py", "pkg/sub/mod.py"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "x.tar.gz"]


def test_cached_members_give_the_same_tar_and_are_compressed_once(tmp_path: Path) -> None:
    import gzip
    import tarfile

    src = _tree(tmp_path / "src")
    for index in range(5):
        path = src / "_pkgs" / "lib" / f"m{index}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"value = {index}\n" * 50)
    (src / "_pkgs" / "lib" / "native.so").write_bytes(b"\x7fELF" * 100)
    (src / "_pkgs" / "lib" / "native.so").chmod(0o755)
    (src / "Zfirst.txt").write_text("sorts before the cached members\n")
    cache = tmp_path / "cache"
    plain = tmp_path / "plain.tar.gz"
    write_archive(src, plain)
    cached = tmp_path / "cached.tar.gz"
    digest = write_archive(src, cached, cache_dir=cache, cached_prefix="_pkgs/")
    # The same tar stream (byte for byte, trailer included) in several gzip members.
    assert gzip.decompress(cached.read_bytes()) == gzip.decompress(plain.read_bytes())
    with tarfile.open(cached, "r:gz") as tar:
        assert [m.name for m in tar] == [m.name for m in tarfile.open(plain, "r:gz")]
    (segment,) = cache.glob("*.gz")
    assert digest == file_sha256(cached)

    # Again, with a project file changed: the segment is reused as it is, and the archive is
    # the one the same files always give.
    (src / "main.py").write_text("print('changed')\n")
    again = tmp_path / "again.tar.gz"
    stamp = segment.stat().st_mtime_ns
    write_archive(src, again, cache_dir=cache, cached_prefix="_pkgs/")
    assert list(cache.glob("*.gz")) == [segment] and segment.stat().st_mtime_ns == stamp
    assert segment.read_bytes() in again.read_bytes()
    write_archive(src, plain)
    assert gzip.decompress(again.read_bytes()) == gzip.decompress(plain.read_bytes())
    fresh = tmp_path / "fresh.tar.gz"
    write_archive(src, fresh, cache_dir=tmp_path / "cold", cached_prefix="_pkgs/")
    assert fresh.read_bytes() == again.read_bytes()

    # A cached member changed: a new segment, not the stale one.
    (src / "_pkgs" / "lib" / "m0.py").write_text("value = 'new'\n")
    newer = tmp_path / "newer.tar.gz"
    write_archive(src, newer, cache_dir=cache, cached_prefix="_pkgs/")
    write_archive(src, plain)
    assert gzip.decompress(newer.read_bytes()) == gzip.decompress(plain.read_bytes())
    assert list(cache.glob("*.gz")) != [segment]
