"""The worker pool on the real local cloud: workers forked by a pre-imported fork server.

A worker started through the pool is a child of the fork server (not of the service), reads
as `python -m runtime.worker ...`, answers, logs to its endpoint's log, runs in its sandbox and
with exactly its own environment; its exit status reaches the crash handler; a killed fork
server is replaced; a restarted service adopts pooled workers; nothing outlives `cloud stop`.
The pool itself: a start on a dead server falls back (None) and starts another server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import psutil
import pytest
from waiting import wait_for
from worker_harness import deploy_lb_build, home_workers, lb_build_archive

from engine.home import Home
from engine.localcloud.client import CloudClient
from engine.localcloud.discovery import (
    CloudInfo,
    ensure_cloud,
    kill_home_workers,
    read_state,
    stop_cloud,
)
from engine.localcloud.workerpool import WorkerPool
from runtime.sandbox import landlock_abi

APP = "pooled"
POOLED = "gamma"  # the endpoint the `pooled` fixture deploys

HANDLER = """
import os
import threading

from runtime.lb_app import create_lb_app


async def info() -> dict:
    with open("/proc/self/status") as handle:
        status = handle.read()
    lines = status.splitlines()
    no_new_privs = [line.split()[1] for line in lines if line.startswith("NoNewPrivs")]
    token = "not asked"
    if "POOL_TOKEN_PATH" in os.environ:
        try:
            with open(os.environ["POOL_TOKEN_PATH"]) as handle:
                handle.read(1)
            token = "read"
        except PermissionError:
            token = "denied"
    print(f"pooled worker {os.getpid()} says hello", flush=True)
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "no_new_privs": no_new_privs[0] if no_new_privs else None,
        "token": token,
        "mark": os.environ.get("POOL_MARK"),
        "home_env": os.environ.get("FLASH_TUI_HOME"),
        "cwd": os.getcwd(),
    }


async def escape() -> dict:
    # Ask the fork server for a worker without a sandbox policy: it must refuse.
    import json
    import socket

    request = {"argv": ["python", "-m", "runtime.worker"], "env": {}, "cwd": "/"}
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.settimeout(10)
        try:
            conn.connect(os.environ["POOL_SOCKET"])
            socket.send_fds(conn, [json.dumps(request).encode()], [1])
            return {"reply": conn.recv(4096).decode()}
        except OSError as exc:
            return {"reply": "", "error": type(exc).__name__}


async def crash() -> dict:
    threading.Timer(0.05, os._exit, args=(7,)).start()
    return {"exiting": 7}


app = create_lb_app(
    {("GET", "/info"): info, ("POST", "/crash"): crash, ("POST", "/escape"): escape}
)
"""


def _build(root: Path, name: str) -> tuple[Path, str, dict[str, Any]]:
    """A one-endpoint LB build as an archive: (archive, build id, manifest)."""
    return lb_build_archive(root, name, HANDLER)


def _deploy(info: CloudInfo, root: Path, name: str, env: dict[str, str], config: str) -> int:
    """Deploy endpoint `name` (`config` names its build); the pid of the worker it runs in."""
    asyncio.run(deploy_lb_build(info, APP, _build(root / config, name), env, config_hash=config))
    return _record(info, name)["pid"]


def _record(info: CloudInfo, name: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with CloudClient(info) as client:
            return (await client.endpoint(APP, name)).model_dump()

    return asyncio.run(go())


def _events(info: CloudInfo) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async with CloudClient(info) as client:
            return [event.model_dump() for event in await client.events(APP)]

    return asyncio.run(go())


def _call(info: CloudInfo, name: str, method: str, path: str) -> dict[str, Any]:
    async def key_url() -> tuple[str, str]:
        async with CloudClient(info) as client:
            return await client.endpoint_key(APP, name), str((await client.endpoint(APP, name)).url)

    key, url = asyncio.run(key_url())
    response = httpx.request(
        method,
        f"{url}{path}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    return response.json()


def _fork_servers(service_pid: int) -> list[psutil.Process]:
    """The fork servers a service started (its children running `runtime.forkserver`)."""
    with contextlib.suppress(psutil.Error):
        return [
            child
            for child in psutil.Process(service_pid).children()
            if "runtime.forkserver" in child.cmdline()
        ]
    return []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop_everything(home: Home) -> None:
    info = read_state(home)
    servers = _fork_servers(info.pid) if info is not None else []
    with contextlib.suppress(Exception):
        stop_cloud(home, timeout=10.0)
    with contextlib.suppress(Exception):
        kill_home_workers(home)
    # They go with their service; one still running would be a leak (after a bounded wait).
    _gone, alive = psutil.wait_procs(servers, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert not alive, f"fork servers outlived their service: {alive}"


@pytest.fixture
def cloud(cloud_home: Path) -> Iterator[tuple[Home, CloudInfo]]:
    """A local cloud of a fresh home (pool on), stopped with everything it started."""
    home = Home(cloud_home)
    try:
        yield home, ensure_cloud(home, extra_env={"FLASH_WORKER_POOL": "on"})
    finally:
        _stop_everything(home)


def _server_of(info: CloudInfo) -> psutil.Process:
    servers = wait_for(lambda: _fork_servers(info.pid), 30, "the fork server")
    assert len(servers) == 1, servers
    return servers[0]


class _Pooled(NamedTuple):
    home: Home
    info: CloudInfo
    pid: int  # the worker's
    server: psutil.Process  # the fork server it was forked by


@pytest.fixture
def pooled(cloud: tuple[Home, CloudInfo], tmp_path: Path) -> _Pooled:
    """Endpoint `POOLED` deployed on the pool cloud (build `c1`, no env), its worker forked."""
    home, info = cloud
    pid = _deploy(info, tmp_path, POOLED, {}, "c1")
    return _Pooled(home, info, pid, _server_of(info))


def test_a_pooled_worker_is_forked_answers_logs_and_is_sandboxed(
    cloud: tuple[Home, CloudInfo], tmp_path: Path
) -> None:
    home, info = cloud
    server = _server_of(info)
    cmdline = server.cmdline()
    env = {"POOL_TOKEN_PATH": str(home.token_file), "POOL_MARK": "first"}
    env["POOL_SOCKET"] = cmdline[cmdline.index("--socket") + 1]
    _deploy(info, tmp_path, "alpha", env, "c1")
    record = _record(info, "alpha")
    worker = psutil.Process(record["pid"])
    # Forked by the fork server (itself the service's child), not started by the service.
    assert worker.ppid() == server.pid and server.ppid() == info.pid
    assert abs(worker.create_time() - record["pid_started"]) < 0.05
    cmdline = [part for part in worker.cmdline() if part]
    assert cmdline[:3] == [sys.executable, "-m", "runtime.worker"]
    assert cmdline[cmdline.index("--resource") + 1] == "alpha"
    assert os.getpgid(worker.pid) == worker.pid  # its own session, as a spawned worker
    # What other processes read of its environment is its own too (the home's worker marker).
    environ = worker.environ()
    assert environ["FLASH_LOCALCLOUD_WORKER"] == f"{APP}/alpha" and environ["POOL_MARK"] == "first"
    assert "FLASH_FORKSERVER_ROOM" not in environ

    answer = _call(info, "alpha", "GET", "/info")
    assert answer["pid"] == worker.pid and answer["ppid"] == server.pid
    # Exactly its own environment and working directory: not the fork server's.
    assert answer["mark"] == "first" and answer["home_env"] is None
    assert answer["cwd"] == record["build_path"]
    if landlock_abi() > 0:
        assert answer["no_new_privs"] == "1" and answer["token"] == "denied"
    log = home.logs_dir(APP) / "alpha.log"
    wait_for(
        lambda: f"pooled worker {worker.pid} says hello" in log.read_text(),
        10,
        "the worker's line in its endpoint log",
    )
    # A worker that finds the fork server's socket cannot start anything through it.
    before = {child.pid for child in server.children()}
    assert _call(info, "alpha", "POST", "/escape")["reply"] == ""
    assert {child.pid for child in server.children()} == before
    # The fork server itself is not sandboxed (it serves every endpoint) and holds no key.
    assert open(f"/proc/{server.pid}/status").read().count("NoNewPrivs:\t0") == 1


def test_exit_status_reaches_the_crash_handler_and_the_restart_is_forked(
    cloud: tuple[Home, CloudInfo], tmp_path: Path
) -> None:
    home, info = cloud
    first = _deploy(info, tmp_path, "beta", {}, "c1")
    assert _call(info, "beta", "POST", "/crash") == {"exiting": 7}
    crashed = wait_for(
        lambda: [e for e in _events(info) if e["kind"] == "crashed"], 20, "the crash event"
    )
    assert crashed[0]["data"]["exit_code"] == 7 and crashed[0]["data"]["pid"] == first
    restarted = wait_for(
        lambda: (r := _record(info, "beta"))["status"] == "healthy" and r["pid"] != first and r,
        30,
        "the restarted worker",
    )
    assert psutil.Process(restarted["pid"]).ppid() == _server_of(info).pid
    assert _call(info, "beta", "GET", "/info")["pid"] == restarted["pid"]


def test_a_killed_fork_server_is_replaced_and_its_workers_live_on(
    pooled: _Pooled, tmp_path: Path
) -> None:
    home, info, worker_pid, old_server = pooled
    old_server.kill()
    # The service reaps it only when it next looks: dead is a zombie until then.
    wait_for(lambda: not _alive(old_server), 10, "the killed fork server to die", retry_errors=True)
    # Its worker runs on (its own session), watched by pid now that its exits are not reported.
    assert _call(info, POOLED, "GET", "/info")["pid"] == worker_pid
    _deploy(info, tmp_path, POOLED, {"POOL_MARK": "second"}, "c2")
    record = _record(info, POOLED)
    assert record["status"] == "healthy" and record["pid"] != worker_pid
    # The old worker was stopped (once the update's drain grace is over).
    old_worker = None
    with contextlib.suppress(psutil.NoSuchProcess):
        old_worker = psutil.Process(worker_pid)
    if old_worker is not None:
        wait_for(
            lambda: not _alive(old_worker), 30, "the replaced worker to stop", retry_errors=True
        )
    new_server = _server_of(info)
    assert new_server.pid != old_server.pid
    assert psutil.Process(record["pid"]).ppid() == new_server.pid
    assert _call(info, POOLED, "GET", "/info")["mark"] == "second"
    service_log = home.service_log.read_text()
    assert f"fork server of {sys.executable} (pid {old_server.pid}) exited" in service_log


def test_a_restarted_service_adopts_pooled_workers(pooled: _Pooled) -> None:
    home, info, pid, server = pooled
    stop_cloud(home, stop_workers=False, timeout=15.0)
    # The fork server went with its service; the worker did not.
    wait_for(lambda: not server.is_running(), 10, "the fork server to exit with its service")
    assert psutil.Process(pid).is_running()
    info = ensure_cloud(home)
    assert read_state(home) is not None
    record = wait_for(
        lambda: (r := _record(info, POOLED))["status"] == "healthy" and r, 30, "re-adoption"
    )
    assert record["pid"] == pid
    assert any(e["kind"] == "adopted" for e in _events(info))
    assert not any(e["kind"] == "killed_unknown" for e in _events(info))
    assert _call(info, POOLED, "GET", "/info")["pid"] == pid
    server = _server_of(info)
    stop_cloud(home, timeout=15.0)
    wait_for(lambda: not psutil.pid_exists(pid), 10, "the adopted worker to stop")
    assert not home_workers(home.root)
    wait_for(lambda: not server.is_running(), 10, "the fork server to go with its service")


def test_pool_off_starts_fresh_interpreters(tmp_path: Path, cloud_home: Path) -> None:
    home = Home(cloud_home)
    try:
        info = ensure_cloud(home, extra_env={"FLASH_WORKER_POOL": "off"})
        _deploy(info, tmp_path, "eps", {}, "c1")
        pid = _record(info, "eps")["pid"]
        assert psutil.Process(pid).ppid() == info.pid
        assert not _fork_servers(info.pid)
    finally:
        _stop_everything(home)


def _spawn_refused(pool: WorkerPool, argv: list[str], cwd: Path) -> bool:
    """Whether the pool refuses to fork `argv` (no fork server): its caller starts it fresh."""
    read_end, write_end = os.pipe()
    try:
        return pool.spawn(argv, write_end, cwd=str(cwd), env={}) is None
    finally:
        os.close(read_end)
        os.close(write_end)


def test_pool_start_on_a_dead_server_falls_back_and_restarts_it(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    pool = WorkerPool(home, enabled=True)
    env = {"PATH": os.environ.get("PATH", "")}
    try:
        pool.start(sys.executable, env)
        assert asyncio.run(pool.ready(sys.executable, 30))
        first = pool.server_pid(sys.executable)
        assert first is not None
        # A worker whose build is missing exits at once with status 1, saying why in its log.
        argv = [sys.executable, "-m", "runtime.worker", "--build-dir", str(tmp_path / "none")]
        argv += ["--resource", "x", "--port", "0"]
        read_end, write_end = os.pipe()
        child = pool.spawn(argv, write_end, cwd=str(tmp_path), env={"FLASH_ENDPOINT_KEY": "k"})
        os.close(write_end)
        assert child is not None
        assert child.wait(30) == 1 and not child.lost
        with os.fdopen(read_end, "rb") as output:
            assert b"does not exist" in output.read()

        os.kill(first, signal.SIGKILL)
        wait_for(lambda: pool.server_pid(sys.executable) is None, 10, "the server to die")
        assert _spawn_refused(pool, argv, tmp_path)
        assert asyncio.run(pool.ready(sys.executable, 30))
        assert pool.server_pid(sys.executable) not in (None, first)
    finally:
        pool.close()
    assert not _fork_servers(os.getpid())


def test_a_fork_server_that_cannot_start_leaves_starts_to_fresh_interpreters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = WorkerPool(Home(tmp_path / "home"), enabled=True)
    try:
        # An interpreter that cannot find its standard library dies at once.
        pool.start(sys.executable, {"PYTHONHOME": str(tmp_path / "nowhere")})
        assert not asyncio.run(pool.ready(sys.executable, 30))
        argv = [sys.executable, "-m", "runtime.worker", "--resource", "x", "--port", "0"]
        assert _spawn_refused(pool, argv, tmp_path)
        assert "fork server unavailable: worker 'x' starts a fresh interpreter" in (
            capsys.readouterr().err
        )
        # Not started again at once (it would only fail again): no server process runs.
        assert pool.server_pid(sys.executable) is None
    finally:
        pool.close()
