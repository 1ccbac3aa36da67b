"""engine.scan: the per-file cache (edit, add, delete, rename, touch), hints, and bad input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from projectfiles import write_files

from engine.scan import MAX_PARSE_BYTES, Scanner

CONFIG = """
from tetra_rp import LiveServerless
from consts import MAX

cfg = LiveServerless(name="worker", workersMax=MAX)
"""

FUNCS = """
from tetra_rp import remote
from config import cfg


@remote(cfg)
async def alpha(x: int) -> int:
    return x
"""


def _age(root: Path, seconds: int = 60) -> None:
    # Files modified in the last moments are re-hashed on every scan (their mtime may not have
    # ticked yet, see engine.project.RACY_NS); tests that count reads use older files.
    past = os.stat(root).st_mtime_ns - seconds * 1_000_000_000
    for path in [root, *root.rglob("*")]:
        os.utime(path, ns=(past, past), follow_symlinks=False)


def _bump(path: Path) -> None:
    # Same-second edits keep mtime_ns on some file systems; size may match too. Force a change.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    write_files(
        tmp_path,
        {
            "consts.py": "MAX = 3\n",
            "config.py": CONFIG,
            "funcs.py": FUNCS,
            **{f"lib/plain_{i}.py": f"VALUE_{i} = {i}\n" for i in range(10)},
        },
    )
    _age(tmp_path)
    return tmp_path


def test_first_scan_parses_only_candidates(project: Path) -> None:
    scanner = Scanner(project)
    result = scanner.scan()
    assert result.manifest["function_registry"] == {"alpha": "worker"}
    # funcs.py has a trigger word; config.py and consts.py are parsed on demand
    assert (result.stats.files, result.stats.candidates, result.stats.parsed) == (13, 1, 3)
    assert result.manifest["resources"]["worker"]["config"]["workersMax"] == 3


def test_rescan_without_changes_reads_nothing(project: Path) -> None:
    scanner = Scanner(project)
    first = scanner.scan(generated_at="A")
    again = scanner.scan(generated_at="B")
    assert (again.stats.read, again.stats.parsed, again.stats.resolved) == (0, 0, 0)
    assert again.manifest["generated_at"] == "B"
    assert {**again.manifest, "generated_at": "A"} == first.manifest


def test_touch_without_change_reuses_the_parse(project: Path) -> None:
    scanner = Scanner(project)
    scanner.scan()
    _bump(project / "funcs.py")
    result = scanner.scan()
    assert (result.stats.read, result.stats.parsed, result.stats.resolved) == (1, 0, 0)
    assert result.manifest["function_registry"] == {"alpha": "worker"}


def test_edit_reparses_one_file(project: Path) -> None:
    scanner = Scanner(project)
    scanner.scan()
    (project / "funcs.py").write_text(FUNCS.replace("async def alpha", "def beta"))
    _bump(project / "funcs.py")
    result = scanner.scan()
    assert (result.stats.read, result.stats.parsed) == (1, 1)
    assert result.manifest["function_registry"] == {"beta": "worker"}
    assert _fn_async(result, "beta") is False


def _fn_async(result, name: str) -> bool:
    return result.manifest["resources"]["worker"]["functions"][0]["is_async"]


def test_editing_an_imported_constant_reresolves_dependents(project: Path) -> None:
    scanner = Scanner(project)
    scanner.scan()
    (project / "consts.py").write_text("MAX = 7\n")
    _bump(project / "consts.py")
    result = scanner.scan()
    assert result.manifest["resources"]["worker"]["config"]["workersMax"] == 7
    assert result.stats.resolved == 1  # funcs.py (it consulted consts via config); not others


def test_shared_config_users_all_see_a_constant_change(project: Path) -> None:
    # Two files resolve the same config through consts.py: both must depend on it.
    write_files(project, {"more.py": FUNCS.replace("alpha", "omega")})
    scanner = Scanner(project)
    scanner.scan()
    (project / "consts.py").write_text("MAX = 9\n")
    _bump(project / "consts.py")
    result = scanner.scan()
    assert result.stats.resolved == 2
    assert result.manifest["resources"]["worker"]["config"]["workersMax"] == 9
    assert result.diagnostics == []


def test_same_size_edit_within_one_mtime_tick_is_seen(project: Path) -> None:
    # The "racy git" case: content changes, size and mtime do not.
    scanner = Scanner(project)
    path = project / "funcs.py"
    path.write_text(FUNCS)
    stamp = path.stat().st_mtime_ns
    assert scanner.scan().manifest["function_registry"] == {"alpha": "worker"}
    path.write_text(FUNCS.replace("alpha", "omega"))
    os.utime(path, ns=(stamp, stamp))
    assert scanner.scan().manifest["function_registry"] == {"omega": "worker"}


def test_unchanged_directories_are_not_listed_again(project: Path) -> None:
    scanner = Scanner(project)
    scanner.scan()
    write_files(project, {"lib/late.py": FUNCS.replace("alpha", "late")})  # lib/ mtime changes
    assert set(scanner.scan().manifest["function_registry"]) == {"alpha", "late"}
    write_files(project, {"newdir/sub/x.py": FUNCS.replace("alpha", "deep")})  # a new directory
    assert set(scanner.scan().manifest["function_registry"]) == {"alpha", "late", "deep"}
    shutil.rmtree(project / "newdir")
    assert set(scanner.scan().manifest["function_registry"]) == {"alpha", "late"}


def test_a_recently_modified_directory_is_listed_again(tmp_path: Path) -> None:
    write_files(tmp_path, {"pkg/a.py": FUNCS.replace("from config import cfg", "cfg = None")})
    scanner = Scanner(tmp_path)
    scanner.scan()
    stamp = (tmp_path / "pkg").stat().st_mtime_ns
    write_files(tmp_path, {"pkg/b.py": "from tetra_rp import remote\n"})
    os.utime(tmp_path / "pkg", ns=(stamp, stamp))  # as if the mtime had not ticked
    assert scanner.scan().stats.files == 2


def test_add_delete_and_rename(project: Path) -> None:
    scanner = Scanner(project)
    scanner.scan()
    write_files(project, {"more.py": FUNCS.replace("alpha", "gamma")})
    result = scanner.scan()
    assert set(result.manifest["function_registry"]) == {"alpha", "gamma"}

    (project / "more.py").rename(project / "renamed.py")
    result = scanner.scan()
    assert set(result.manifest["function_registry"]) == {"alpha", "gamma"}
    assert result.manifest["resources"]["worker"]["functions"][1]["module"] == "renamed"

    (project / "renamed.py").unlink()
    result = scanner.scan()
    assert set(result.manifest["function_registry"]) == {"alpha"}

    # the config module disappears: its users now reference an unknown config
    (project / "config.py").unlink()
    result = scanner.scan()
    assert result.manifest["resources"] == {}
    assert [d.code for d in result.diagnostics] == ["scan-unknown-config"]
    write_files(project, {"config.py": CONFIG})
    assert scanner.scan().manifest["function_registry"] == {"alpha": "worker"}


def test_gitignore_change_is_noticed(project: Path) -> None:
    scanner = Scanner(project)
    scanner.scan()
    (project / ".gitignore").write_text("funcs.py\n")
    assert scanner.scan().manifest["resources"] == {}
    (project / ".gitignore").write_text("# nothing\n")
    _bump(project / ".gitignore")
    assert scanner.scan().manifest["function_registry"] == {"alpha": "worker"}


def test_changed_paths_hint(project: Path) -> None:
    scanner = Scanner(project)
    scanner.scan()
    (project / "funcs.py").write_text(FUNCS.replace("alpha", "delta"))
    _bump(project / "funcs.py")
    result = scanner.scan(changed_paths=[project / "funcs.py"])
    assert result.manifest["function_registry"] == {"delta": "worker"}
    assert result.stats.read == 1

    write_files(project, {"pkg/new.py": FUNCS.replace("alpha", "epsilon")})
    (project / "funcs.py").unlink()
    result = scanner.scan(changed_paths=[project / "pkg" / "new.py", project / "funcs.py"])
    assert result.manifest["function_registry"] == {"epsilon": "worker"}
    # ignored and outside paths are skipped; a directory falls back to a full walk
    write_files(project, {".venv/x.py": FUNCS.replace("alpha", "hidden"), "extra.py": FUNCS})
    result = scanner.scan(changed_paths=[project / ".venv" / "x.py", "/elsewhere/y.py"])
    assert set(result.manifest["function_registry"]) == {"epsilon"}
    result = scanner.scan(changed_paths=[project])
    assert set(result.manifest["function_registry"]) == {"epsilon", "alpha"}


def test_bad_files_never_crash(project: Path) -> None:
    big = "x = 1  # remote\n" * (MAX_PARSE_BYTES // 16 + 10)
    (project / "binary.py").write_bytes(b"remote\x00\x01\x02\xff" * 100)
    (project / "latin.py").write_bytes("from tetra_rp import remote\n# caf\xe9\n".encode("latin-1"))
    (project / "declared.py").write_bytes(
        b"# -*- coding: latin-1 -*-\nfrom tetra_rp import LiveServerless, remote\n"
        b"c = LiveServerless(name='caf\xe9')\n@remote(c)\ndef f(): ...\n"
    )
    (project / "broken.py").write_text("from tetra_rp import remote\ndef oops(:\n")
    (project / "big.py").write_text(big)
    (project / "plain_big.py").write_text("y = 2\n" * 900_000)  # ~5 MB, no trigger: not parsed
    (project / "deep.py").write_text("remote = " + "(" * 5000 + ")" * 5000 + "\n")
    (project / "loop").symlink_to(project, target_is_directory=True)
    (project / "self.py").symlink_to(project / "self.py")
    result = Scanner(project).scan()
    by_file = {d.file: d for d in result.diagnostics}
    assert by_file["binary.py"].code == "scan-undecodable"
    assert by_file["latin.py"].code == "scan-undecodable"
    assert by_file["broken.py"].code == "scan-syntax-error"
    assert by_file["broken.py"].severity == "error" and by_file["broken.py"].line == 2
    assert by_file["big.py"].code == "scan-too-large"
    assert by_file["deep.py"].code in ("scan-too-large", "scan-syntax-error")
    assert "plain_big.py" not in by_file
    assert result.manifest["function_registry"] == {"alpha": "worker", "f": "café"}


def test_problems_in_a_module_parsed_on_demand_are_reported(project: Path) -> None:
    scanner = Scanner(project)
    (project / "config.py").write_text(CONFIG + "def broken(:\n")
    result = scanner.scan()
    codes = sorted((d.code, d.file) for d in result.diagnostics)
    assert codes == [("scan-syntax-error", "config.py"), ("scan-unknown-config", "funcs.py")]
    (project / "config.py").write_text(CONFIG)
    _bump(project / "config.py")
    result = scanner.scan()
    assert result.diagnostics == [] and result.manifest["function_registry"] == {"alpha": "worker"}


def test_unreadable_file(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = project / "secret.py"
    target.write_text(FUNCS.replace("alpha", "hidden"))
    _age(project)
    target.chmod(0)
    if os.geteuid() == 0:  # root reads anything: simulate the permission error
        real_read = Scanner._read

        def deny(self: Scanner, path: str, size: int = 0) -> bytes:
            if path.endswith("secret.py"):
                raise PermissionError(13, "Permission denied")
            return real_read(self, path, size)

        monkeypatch.setattr(Scanner, "_read", deny)
    try:
        scanner = Scanner(project)
        result = scanner.scan()
        (diag,) = result.diagnostics
        assert (diag.code, diag.file, diag.severity) == ("scan-unreadable", "secret.py", "warning")
        assert "Permission denied" in diag.message
        again = scanner.scan()  # not retried while its stat is unchanged, still reported
        assert again.stats.read == 0 and [d.code for d in again.diagnostics] == ["scan-unreadable"]
    finally:
        target.chmod(0o644)


def test_a_scanner_bug_becomes_a_diagnostic(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.scan.resources import FileResolution

    def boom(self: FileResolution) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(FileResolution, "run", boom)
    result = Scanner(project).scan()
    (diag,) = result.diagnostics
    assert (diag.code, diag.file) == ("scan-internal-error", "funcs.py")
    assert "RuntimeError: boom" in diag.message


def test_scans_from_several_threads_are_serialised(project: Path) -> None:
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    scanner = Scanner(project)
    stamp = "2026-01-01T00:00:00Z"
    expected = scanner.scan(generated_at=stamp).manifest
    (project / "funcs.py").write_text(FUNCS + "\n\n@remote(cfg)\ndef beta() -> None: ...\n")
    inner, guard = scanner._scan, threading.Lock()
    running, most = 0, 0

    def counted(*args: object) -> object:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.005)  # hand the GIL over: an unserialised scan would overlap here
        try:
            return inner(*args)
        finally:
            with guard:
                running -= 1

    scanner._scan = counted  # type: ignore[method-assign]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: scanner.scan(generated_at=stamp).manifest, range(16)))
    assert most == 1, "two scans ran at once"
    assert results[0] != expected, "the edit is seen"
    assert all(r == results[0] for r in results)


async def test_an_engine_session_scans_through_the_scanner_it_is_given(project: Path) -> None:
    from engine.operations import Engine

    scanner = Scanner(project)
    scanner.scan()
    async with Engine(project, scanner=scanner) as engine:
        assert engine.scanner is scanner
        result = await engine.scan()
    assert scanner.stats.parsed == 0, "the session's rescan reused the scanner's cache"
    assert sorted(result.manifest["resources"]) == sorted(scanner.scan().manifest["resources"])
