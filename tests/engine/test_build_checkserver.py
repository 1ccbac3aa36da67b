"""Import checks in children forked from a pre-imported check server: real processes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.build.checks import ImportChecker
from engine.build.checkserver import CheckServer
from engine.handlergen import check_handler_imports


@pytest.fixture()
def server() -> Iterator[CheckServer]:
    running = CheckServer(sys.executable)
    yield running
    running.close()


def test_forked_checks_report_as_fresh_interpreters_do(tmp_path: Path, server: CheckServer) -> None:
    (tmp_path / "helper.py").write_text("VALUE = 1\n")
    (tmp_path / "handler_good.py").write_text("import helper\nprint('hello from import')\n")
    (tmp_path / "handler_bad.py").write_text("import nonexistent_module_for_flash_test\n")
    (tmp_path / "handler_boom.py").write_text("raise RuntimeError('boom at import')\n")
    names = ["handler_good.py", "handler_bad.py", "handler_boom.py"]
    seen: list[str] = []
    forked = server.check(tmp_path, names, timeout=60, on_done=lambda c: seen.append(c.handler))
    fresh = check_handler_imports(tmp_path, names)
    assert sorted(seen) == sorted(names)
    assert [(c.handler, c.ok, c.error) for c in forked] == [
        (c.handler, c.ok, c.error) for c in fresh
    ]
    good, bad, boom = forked
    assert "hello from import" in good.output
    assert str((tmp_path / "helper.py").resolve()) in good.loaded
    assert "nonexistent_module_for_flash_test" in bad.error
    assert boom.error == "RuntimeError: boom at import" and "Traceback" in boom.output
    assert not (tmp_path / "__pycache__").exists()


def test_a_file_written_between_checks_is_seen(tmp_path: Path, server: CheckServer) -> None:
    (tmp_path / "handler_x.py").write_text("import later_module\n")
    (first,) = server.check(tmp_path, ["handler_x.py"], timeout=60)
    assert not first.ok
    (tmp_path / "later_module.py").write_text("X = 1\n")
    (second,) = server.check(tmp_path, ["handler_x.py"], timeout=60)
    assert second.ok, second.output


def test_a_hanging_import_times_out_and_the_server_goes_on(
    tmp_path: Path, server: CheckServer
) -> None:
    (tmp_path / "handler_slow.py").write_text("import time\ntime.sleep(30)\n")
    (tmp_path / "handler_ok.py").write_text("")
    slow, ok = server.check(tmp_path, ["handler_slow.py", "handler_ok.py"], timeout=1.0)
    assert not slow.ok and "within 1s" in slow.error
    assert ok.ok
    (again,) = server.check(tmp_path, ["handler_ok.py"], timeout=60)
    assert again.ok


def test_a_project_module_shadowing_a_preloaded_one_is_checked_fresh(tmp_path: Path) -> None:
    # In a fresh interpreter the build dir comes first, so the project's cloudpickle.py wins
    # over the installed one that the server has already imported.
    (tmp_path / "cloudpickle.py").write_text("raise ImportError('the project module ran')\n")
    (tmp_path / "handler_x.py").write_text("import cloudpickle\n")
    checker = ImportChecker()
    try:
        members = ["cloudpickle.py", "handler_x.py"]
        (check,) = checker.check(tmp_path, ["handler_x.py"], members=members, timeout=60)
    finally:
        checker.close()
    assert not check.ok and "the project module ran" in check.error


def test_a_missing_interpreter_is_reported(tmp_path: Path) -> None:
    (tmp_path / "handler_x.py").write_text("")
    checker = ImportChecker()
    try:
        (check,) = checker.check(
            tmp_path,
            ["handler_x.py"],
            members=["handler_x.py"],
            timeout=60,
            python=str(tmp_path / "nopython"),
        )
    finally:
        checker.close()
    assert not check.ok and "cannot run" in check.error


def test_one_server_serves_every_build_and_close_stops_it(tmp_path: Path) -> None:
    (tmp_path / "handler_x.py").write_text("")
    checker = ImportChecker()
    try:
        for _ in range(2):
            (tmp_path / "handler_x.py").write_text((tmp_path / "handler_x.py").read_text() + "#\n")
            (check,) = checker.check(
                tmp_path, ["handler_x.py"], members=["handler_x.py"], timeout=60
            )
            assert check.ok and not check.reused
        servers = list(checker._servers.values())
        assert len(servers) == 1
        proc = servers[0]._proc
        assert proc is not None and proc.poll() is None
    finally:
        checker.close()
    assert proc.wait(timeout=10) is not None
