"""Trust under stress, on the real local cloud: bounded error texts, the log cap under a burst,
crash handling on a full disk, no `healthy` with a dead pid, a lost state file, a corrupt database.

Two clouds (two homes) serve the module: a normal one, and a "blind" one whose supervisor looks
at its workers once an hour, so a test can kill a worker and ask before the supervisor notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from headless import cli_env, run_cli
from waiting import wait_for
from worker_harness import home_workers

from engine.home import Home
from engine.identity import app_slug, canonical_path
from engine.localcloud import logfiles
from engine.localcloud.discovery import (
    kill_home_workers,
    read_state,
    stop_cloud,
)
from engine.localcloud.settings import SupervisorSettings
from engine.localcloud.store import Store
from engine.localcloud.supervisor import Supervisor
from engine.localcloud.workers import Worker

FOLDER = "robustapp"
# The app key of the module's project (keyed by its path); set by the `project` fixture.
APP = ""
LOG_MAX = 256 * 1024
LOG_KEEP = 2
# Service marker lines ("[flash HH:MM:SS] ...") are appended beside the writer's own bytes.
LOG_SLACK = 16 * 1024
BURST_MB = 300

ENDPOINTS = '''"""Endpoints that misbehave on purpose (switched on by their env)."""

import os
import threading
import time

from tetra_rp import CpuLiveServerless, remote

steady_config = CpuLiveServerless(name="steady")
bigerr_config = CpuLiveServerless(name="bigerr", env={"ROBUST_BIG_ERROR": "1"})
chatty_config = CpuLiveServerless(
    name="chatty", env={"ROBUST_BURST": "BURST_MB", "ROBUST_BURST_GO": "BURST_GO"}
)

if os.environ.get("ROBUST_BIG_ERROR"):
    # One 30 MB line: the exception's message, the last line of the traceback.
    raise RuntimeError("x" * 30_000_000 + " and the useful end: the model file is missing")

if os.environ.get("ROBUST_BURST"):

    def _burst(total: int) -> None:
        # The burst starts when the test says so (the worker is deployed and ready by then).
        while not os.path.exists(os.environ["ROBUST_BURST_GO"]):
            time.sleep(0.01)
        chunk = (b"y" * 1023 + b"\\n") * 64
        for _ in range(total // len(chunk)):
            os.write(1, chunk)
        os.write(1, b"burst done\\n")

    threading.Thread(
        target=_burst, args=(int(os.environ["ROBUST_BURST"]) << 20,), daemon=True
    ).start()


@remote(steady_config)
def steady() -> int:
    return 1


@remote(bigerr_config)
def bigerr() -> int:
    return 2


@remote(chatty_config)
def chatty() -> int:
    return 3
'''.replace("BURST_MB", str(BURST_MB))


def _run(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(args, env, cwd=cwd)


def _run_service(root: Path) -> subprocess.CompletedProcess[str]:
    """The service run directly (`python -m engine.localcloud`), as a supervisor would."""
    return subprocess.run(
        [sys.executable, "-m", "engine.localcloud", "--home", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _cleanup(root: Path) -> None:
    home = Home(root)
    try:
        stop_cloud(home, timeout=10.0)
    except Exception:  # noqa: BLE001 - best effort, whatever state a test left
        pass
    # The lock holder, if the state file was lost.
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if "engine.localcloud" in cmdline and str(root) in cmdline:
            with contextlib.suppress(psutil.Error):
                process.kill()
    kill_home_workers(home)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    global APP
    root = tmp_path_factory.mktemp("robust") / FOLDER
    root.mkdir()
    APP = app_slug(canonical_path(root))
    (root / "endpoints.py").write_text(ENDPOINTS.replace("BURST_GO", str(root / "burst.go")))
    return root


def _home(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    root = tmp_path_factory.mktemp(name)
    try:
        yield root
    finally:
        _cleanup(root)


@pytest.fixture(scope="module")
def fast_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from _home(tmp_path_factory, "fast-home")


@pytest.fixture(scope="module")
def blind_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from _home(tmp_path_factory, "blind-home")


@pytest.fixture(scope="module")
def fast_env(fast_home: Path) -> dict[str, str]:
    # One crash fails an endpoint: the big error is recorded once.
    return cli_env(
        fast_home,
        FLASH_LOCALCLOUD_CRASH_LIMIT="1",
        FLASH_LOCALCLOUD_LOG_MAX_BYTES=str(LOG_MAX),
        FLASH_LOCALCLOUD_LOG_KEEP=str(LOG_KEEP),
    )


@pytest.fixture(scope="module")
def blind_env(blind_home: Path) -> dict[str, str]:
    return cli_env(blind_home, FLASH_LOCALCLOUD_MONITOR_INTERVAL="3600")


def _api(root: Path) -> httpx.Client:
    info = read_state(Home(root))
    assert info is not None
    return httpx.Client(base_url=info.url, headers=info.headers(), timeout=10, trust_env=False)


def _record(root: Path, name: str) -> dict[str, Any]:
    with _api(root) as api:
        response = api.get(f"/v1/apps/{APP}/endpoints/{name}")
    response.raise_for_status()
    return response.json()


# -- bounded texts ----------------------------------------------------------------------------


def test_a_30mb_error_line_keeps_status_small(project: Path, fast_env: dict[str, str]) -> None:
    fast_home = Path(fast_env["FLASH_TUI_HOME"])
    _run(fast_env, "deploy", "bigerr", "--yes", "--json", "--project", str(project))
    wait_for(
        lambda: _record(fast_home, "bigerr")["status"] == "failed",
        30,
        "bigerr failed",
        retry_errors=True,
    )
    proc = _run(fast_env, "status", "--json", "--project", str(project))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout) < 64 * 1024, f"status --json is {len(proc.stdout)} bytes"
    bigerr = next(e for e in json.loads(proc.stdout)["endpoints"] if e["name"] == "bigerr")
    assert "the model file is missing" in bigerr["last_error"]  # the useful end survives
    assert "bytes cut" in bigerr["last_error"]
    with _api(fast_home) as api:
        body = api.get(f"/v1/apps/{APP}/events").text
    assert len(body) < 256 * 1024, f"the event log is {len(body)} bytes"


# -- the log cap under a burst ----------------------------------------------------------------


def _log_total(logs: Path, name: str) -> int:
    total = 0
    for path in logs.glob(f"{name}.log*"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass  # rotated away between the listing and the stat
    return total


def test_log_cap_holds_under_a_burst(project: Path, fast_env: dict[str, str]) -> None:
    """A worker writes BURST_MB as fast as it can: at no sampled moment do its log files pass
    the cap (plus the service's marker lines), and the control plane answers throughout."""
    fast_home = Path(fast_env["FLASH_TUI_HOME"])
    logs = Home(fast_home).logs_dir(APP)
    proc = _run(fast_env, "deploy", "chatty", "--yes", "--json", "--project", str(project))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    info = read_state(Home(fast_home))
    assert info is not None
    current = logfiles.log_path(logs, "chatty")
    biggest, samples, answered = 0, 0, 0
    (project / "burst.go").touch()
    deadline = time.monotonic() + 120
    with httpx.Client(
        base_url=info.url, headers=info.headers(), timeout=10, trust_env=False
    ) as api:
        while time.monotonic() < deadline:
            biggest = max(biggest, _log_total(logs, "chatty"))
            samples += 1
            if samples % 5 == 1:
                # The control plane keeps answering while the worker floods its log.
                assert api.get("/v1/health").status_code == 200
                answered += 1
            if "burst done" in "\n".join(logfiles.tail_lines(current, 3)):
                break
            time.sleep(0.005)
        else:
            raise AssertionError("the burst did not finish")
    biggest = max(biggest, _log_total(logs, "chatty"))
    cap = LOG_MAX * (LOG_KEEP + 1) + LOG_SLACK
    assert biggest <= cap, f"{biggest} bytes of logs, cap {cap} ({samples} samples)"
    assert answered >= 1
    print(f"{samples} samples, largest total {biggest} bytes, {answered} health answers")
    assert not logs.joinpath(f"chatty.log.{LOG_KEEP + 1}").exists()


# -- no `healthy` with a dead pid -------------------------------------------------------------


def test_a_killed_worker_is_never_reported_healthy(
    project: Path, blind_env: dict[str, str]
) -> None:
    blind_home = Path(blind_env["FLASH_TUI_HOME"])
    proc = _run(blind_env, "deploy", "steady", "--yes", "--json", "--project", str(project))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    record = wait_for(
        lambda: (r := _record(blind_home, "steady"))["status"] == "healthy" and r,
        30,
        "steady healthy",
        retry_errors=True,
    )
    os.kill(record["pid"], signal.SIGKILL)
    wait_for(
        lambda: (
            not psutil.pid_exists(record["pid"])
            or psutil.Process(record["pid"]).status() == psutil.STATUS_ZOMBIE
        ),
        30,
        "the killed worker gone",
        retry_errors=True,
    )
    # The blind supervisor has not noticed (it looks once an hour): the record must not lie.
    after = _record(blind_home, "steady")
    assert after["status"] != "healthy", after
    with _api(blind_home) as api:
        listing = api.get(f"/v1/apps/{APP}/endpoints").json()["endpoints"]
    assert next(e for e in listing if e["name"] == "steady")["status"] != "healthy"


# -- crash handling on a full disk ------------------------------------------------------------


def test_crash_handling_survives_a_full_disk(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    store = Store(home.db_path)
    settings = SupervisorSettings(crash_limit=1, monitor_interval=0.02)
    store.upsert_app("app", str(tmp_path))
    failures = {"upsert_endpoint": 1, "add_event": 1}

    def failing(method_name: str) -> Callable[..., Any]:
        real = getattr(store, method_name)

        def method(*args: Any, **kwargs: Any) -> Any:
            if failures[method_name] > 0 and kwargs.get("status") != "healthy":
                failures[method_name] -= 1
                if method_name == "add_event":
                    raise OSError(errno.ENOSPC, "No space left on device")
                raise sqlite3.OperationalError("database or disk is full")
            return real(*args, **kwargs)

        return method

    async def scenario() -> dict[str, Any]:
        supervisor = Supervisor(home, store, settings)
        await supervisor.start()
        try:
            log = logfiles.log_path(home.logs_dir("app"), "ep")
            fd = logfiles.open_for_worker(log)
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-c", "print('dying: disk trouble'); raise SystemExit(7)"],
                    stdout=fd,
                    stderr=fd,
                    start_new_session=True,
                )
            finally:
                os.close(fd)
            create_time = psutil.Process(proc.pid).create_time()
            store.upsert_endpoint(
                "app", "ep", status="healthy", pid=proc.pid, pid_started=create_time, port=1
            )
            # From now on the disk is full: the first writes of crash handling fail.
            store.upsert_endpoint = failing("upsert_endpoint")  # type: ignore[method-assign]
            store.add_event = failing("add_event")  # type: ignore[method-assign]
            supervisor.workers[("app", "ep")] = Worker("app", "ep", proc.pid, create_time, 1, proc)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                record = store.get_endpoint("app", "ep")
                assert record is not None
                if record["status"] == "failed":
                    break
                assert supervisor._monitor is not None and not supervisor._monitor.done()
                await asyncio.sleep(0.02)
            assert supervisor._monitor is not None and not supervisor._monitor.done()
            return record
        finally:
            await supervisor.close(stop_workers=True)

    try:
        record = asyncio.run(scenario())
    finally:
        store.close()
    assert record["status"] == "failed" and record["pid"] is None
    assert "dying: disk trouble" in (record["last_error"] or "")
    assert failures == {"upsert_endpoint": 0, "add_event": 0}  # both faults were hit
    kinds = [e["kind"] for e in Store(home.db_path).events("app")]
    assert kinds.count("crashed") == 1 and kinds.count("failed") == 1


# -- a lost state file, a corrupt database, exit codes ----------------------------------------


def test_lost_state_file_the_cli_finds_and_stops_the_cloud(
    project: Path, fast_env: dict[str, str]
) -> None:
    fast_home = Path(fast_env["FLASH_TUI_HOME"])
    home = Home(fast_home)
    # A running cloud with a worker (whatever the tests before left running).
    proc = _run(fast_env, "deploy", "steady", "--yes", "--json", "--project", str(project))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    info = read_state(home)
    assert info is not None
    workers = [p.pid for p in home_workers(home.root)]
    assert workers, "no worker runs after a deploy"
    home.state_file.write_text("{not json")
    proc = _run(fast_env, "deploy", "--yes", "--project", str(project))
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text
    assert f"pid {info.pid}" in text and f"{home.state_file} is unreadable" in text, text
    assert _alive(info.pid)  # found, not replaced by a second service
    home.state_file.unlink()

    proc = _run(fast_env, "cloud", "status")
    text = proc.stdout + proc.stderr
    assert f"pid {info.pid}" in text and str(home.state_file) in text, text
    assert "Traceback" not in text

    proc = _run(fast_env, "cloud", "stop", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["was_running"] is True
    assert not _alive(info.pid)
    for pid in workers:
        assert not _alive(pid), f"worker {pid} survived `cloud stop`"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_corrupt_database_is_named_and_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "home"
    home = Home(root)
    garbage = b"this is not a database, it is garbage \x00\x01\x02" * 100
    home.db_path.write_bytes(garbage)
    try:
        proc = _run(cli_env(root), "cloud", "start")
        assert proc.returncode == 4, (proc.returncode, proc.stdout, proc.stderr)
        text = proc.stdout + proc.stderr
        assert f"cloud.db at {home.db_path} is not a SQLite database" in text, text
        assert "Traceback" not in text
        assert home.db_path.read_bytes() == garbage

        direct = _run_service(root)
        assert direct.returncode == 4, direct.stderr
        assert "is not a SQLite database" in direct.stderr and "Traceback" not in direct.stderr
        assert home.db_path.read_bytes() == garbage
    finally:
        _cleanup(root)


def test_exit_codes_started_and_already_running(tmp_path: Path) -> None:
    root = tmp_path / "home"
    env = cli_env(root)
    try:
        assert _run(env, "cloud", "start").returncode == 0
        again = _run(env, "cloud", "start", "--json")
        assert again.returncode == 3 and json.loads(again.stdout)["already_running"] is True
        direct = _run_service(root)
        assert direct.returncode == 3, direct.stderr
        help_text = _run(env, "cloud", "--help").stdout
        assert "3" in help_text and "4" in help_text and "already running" in help_text
    finally:
        _cleanup(root)


def test_log_writer_rotates_without_losing_a_line(tmp_path: Path) -> None:
    """Through the real writer process: every file within the cap, and the files together
    hold the newest output in order, nothing missing (rotation renames, it does not copy)."""
    log = tmp_path / "logs" / "ep.log"
    writer, fd = logfiles.start_writer(log, max_bytes=4096, keep=3)
    try:
        lines = [f"line {i:05d}\n".encode() for i in range(1500)]  # 16.5 KB
        for line in lines:
            os.write(fd, line)
    finally:
        os.close(fd)
    assert writer.wait(timeout=30) == 0  # exits once the pipe is closed and drained
    files = [log.with_name(f"ep.log.{i}") for i in (3, 2, 1)] + [log]
    assert all(path.stat().st_size <= 4096 for path in files)
    assert not log.with_name("ep.log.4").exists()
    kept = b"".join(path.read_bytes() for path in files)
    stream = b"".join(lines)
    assert stream.endswith(kept) and len(kept) > 3 * 4096 - 100  # the newest bytes, in order


def test_log_lines_leave_the_files_bounded(tmp_path: Path) -> None:
    """A huge line in a log file reaches the logs screen cut (head, marker, the useful end)."""
    log = tmp_path / "ep.log"
    log.write_bytes(b"before\n" + b"z" * 2_000_000 + b" the end of it\nafter\n")
    for lines in (logfiles.tail_lines(log, 10), logfiles.read_new(log, 0)[0]):
        assert lines[0] == "before" and lines[-1] == "after"
        assert len(lines[1].encode()) <= logfiles.MAX_LINE_BYTES + 64
        assert lines[1].endswith("the end of it") and "bytes cut" in lines[1]
