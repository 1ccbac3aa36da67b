"""Worker-to-worker calls over a worker's Unix socket (`runtime.worker_socket`): real worker
processes, the caller's real keep-alive pool and service registry."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import httpx
import pytest
from worker_harness import Worker, qb_manifest, write_qb_build

from runtime import calls
from runtime.httpwire import ConnectionPool
from runtime.registry import ServiceRegistry
from runtime.worker_socket import (
    SOCKET_HEADER,
    advertised_socket,
    bind_private,
    bind_worker_socket,
)

FUNCTIONS = ("square",)
MANIFEST = qb_manifest(FUNCTIONS)

USER_CODE = """
def square(x: int) -> int:
    return x * x
"""


def square(x: int) -> int:
    """The caller's view of the function (it runs on `sq`)."""
    return x * x


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_qb_build(tmp_path_factory.mktemp("build"), USER_CODE, FUNCTIONS)


def _start(
    build_dir: Path, tmp: Path, started: list[Worker], extra: list[str] | None = None, **env: str
) -> Worker:
    worker = Worker(
        build_dir, "sq", key="key-sq", env={"TMPDIR": str(tmp), **env}, extra_args=extra
    )
    started.append(worker)
    worker.wait_ready()
    return worker


def _sockets(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("flash-worker-*.sock"))


def _runsync_body(x: int) -> dict:
    from runtime.serialization import function_job

    return {"input": function_job("square", (x,))}


def test_a_worker_names_its_private_socket_and_removes_it_when_it_stops(
    build_dir: Path, short_tmp: Path, started: list[Worker]
) -> None:
    worker = _start(build_dir, short_tmp, started)
    answer = httpx.get(f"{worker.url}/ping")
    named = answer.headers[SOCKET_HEADER]
    assert [str(p) for p in _sockets(short_tmp)] == [named]
    mode = os.stat(named).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert advertised_socket(named) == named
    # The same app answers there: auth and all.
    transport = httpx.HTTPTransport(uds=named)
    with httpx.Client(transport=transport, base_url=worker.url) as client:
        assert client.post("/runsync", json=_runsync_body(3)).status_code == 401
        ok = client.post("/runsync", json=_runsync_body(3), headers=worker.headers)
        assert ok.status_code == 200 and ok.json()["status"] == "COMPLETED"
    assert worker.stop() == 0
    assert _sockets(short_tmp) == []


def test_a_worker_told_not_to_serves_tcp_only(
    build_dir: Path, short_tmp: Path, started: list[Worker]
) -> None:
    worker = _start(build_dir, short_tmp, started, FLASH_WORKER_SOCKET="off")
    assert SOCKET_HEADER not in httpx.get(f"{worker.url}/ping").headers
    assert _sockets(short_tmp) == []


def test_a_socket_path_too_long_is_not_bound(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    assert bind_worker_socket(1234, str(deep)) is None


def test_a_private_bind_is_open_to_this_user_only_and_keeps_the_umask(short_tmp: Path) -> None:
    # The worker's socket and the fork server's control socket are both bound this way.
    path = str(short_tmp / "private.sock")
    before = os.umask(0o022)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        bind_private(sock, path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert os.umask(before) == 0o022, "the process's umask is restored"
    finally:
        sock.close()


def test_only_a_worker_socket_of_this_user_is_adopted(short_tmp: Path) -> None:
    plain = short_tmp / "flash-worker-1-0123abcd.sock"
    plain.write_text("not a socket")
    assert advertised_socket(str(plain)) is None
    assert advertised_socket("/var/run/docker.sock") is None  # not a worker's name
    assert advertised_socket("flash-worker-1-0123abcd.sock") is None  # not absolute
    bound = bind_worker_socket(1, str(short_tmp))
    assert bound is not None
    try:
        assert advertised_socket(bound.path) == bound.path
    finally:
        bound.close()
    assert not os.path.exists(bound.path)


async def test_calls_move_to_the_socket_and_keep_one_connection(
    build_dir: Path, short_tmp: Path, started: list[Worker]
) -> None:
    worker = _start(build_dir, short_tmp, started)
    pool = ConnectionPool(timeout=10.0)
    try:
        url = f"{worker.url}/runsync"
        for i in range(12):
            answer = await pool.request("POST", url, json=_runsync_body(i), headers=worker.headers)
            assert answer.status_code == 200 and answer.json()["status"] == "COMPLETED", i
        # The first call over TCP (its answer named the socket), every later one over one
        # kept-alive connection to the socket.
        assert (pool.opened, pool.opened_unix) == (2, 1)
    finally:
        await pool.aclose()


async def test_a_worker_replaced_at_the_same_address_is_followed(
    build_dir: Path, short_tmp: Path, started: list[Worker]
) -> None:
    """SIGKILLed, its socket file stays behind with nobody listening; the next worker on the
    same port has another socket. The caller's kept connection and the old socket are dead:
    the call goes over TCP once, then over the new socket."""
    first = _start(build_dir, short_tmp, started)
    port = first.url.rsplit(":", 1)[1]
    pool = ConnectionPool(timeout=10.0)
    try:
        url = f"{first.url}/runsync"
        for i in range(2):
            answer = await pool.request("POST", url, json=_runsync_body(i), headers=first.headers)
            assert answer.status_code == 200
        assert pool.opened_unix == 1
        old_socket = _sockets(short_tmp)
        first.proc.kill()
        first.proc.wait(10)
        assert _sockets(short_tmp) == old_socket  # left behind by the SIGKILL
        second = _start(build_dir, short_tmp, started, extra=["--port", port])
        assert second.url == first.url
        for i in range(3):
            answer = await pool.request("POST", url, json=_runsync_body(i), headers=second.headers)
            assert answer.status_code == 200 and answer.json()["status"] == "COMPLETED", i
        assert pool.opened_unix == 2  # the new worker's socket, kept from then on
        new_socket = httpx.get(f"{second.url}/ping").headers[SOCKET_HEADER]
        assert [new_socket] == [str(p) for p in _sockets(short_tmp) if p not in old_socket]
    finally:
        await pool.aclose()


async def test_a_cross_endpoint_call_follows_a_worker_restarted_elsewhere(
    build_dir: Path, short_tmp: Path, started: list[Worker], tmp_path: Path
) -> None:
    """Through the registry, as a caller worker does: the endpoint table names a new port."""
    table = tmp_path / "endpoints.json"

    def publish(worker: Worker) -> None:
        entry = {"url": worker.url, "key": worker.key}
        table.write_text(json.dumps({"endpoints": {"sq": entry}}))

    first = _start(build_dir, short_tmp, started)
    publish(first)
    calls.set_registry(ServiceRegistry(MANIFEST, current_resource="gw", endpoints_file=table))
    try:
        assert [await calls.dispatch(square, "sq", (i,), {}) for i in range(3)] == [0, 1, 4]
        first.proc.kill()
        first.proc.wait(10)
        second = _start(build_dir, short_tmp, started)
        assert second.url != first.url
        publish(second)
        assert [await calls.dispatch(square, "sq", (i,), {}) for i in range(3, 6)] == [9, 16, 25]
        pool = next(p for _, p in calls._clients.values())
        frames = next(c for _, c in calls._frame_clients.values())
        # One socket connection per worker: its frame socket (runtime.local_frames), which
        # takes a QB worker's /runsync calls; no HTTP one.
        assert (pool.opened_unix, frames.opened) == (0, 2)
    finally:
        calls.reset()
