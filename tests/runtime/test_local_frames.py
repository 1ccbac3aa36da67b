"""Same-machine `/runsync` calls as frames on a queue-based worker's socket
(`runtime.local_frames`): real worker processes, the caller's real registry, pool and frame
client, as an LB worker calling a QB function uses them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from waiting import eventually
from worker_harness import Worker, qb_manifest, serve_asgi, write_qb_build

from runtime import calls
from runtime.errors import RemoteExecutionError
from runtime.httpwire import ConnectionPool
from runtime.local_frames import FrameClient
from runtime.registry import ServiceRegistry
from runtime.worker_socket import (
    FRAMES_HEADER,
    FRAMES_KIND,
    advertised_socket,
    bind_worker_socket,
)

FUNCTIONS = ("square", "fail", "hold", "size")
MANIFEST = qb_manifest(FUNCTIONS)

USER_CODE = """
import asyncio

running = 0
peak = 0


def square(x: int) -> int:
    return x * x


def fail(text: str) -> None:
    raise ValueError(f"bad input: {text}")


def size(text: str) -> int:
    return len(text)


async def hold(seconds: float) -> int:
    global running, peak
    running += 1
    peak = max(peak, running)
    try:
        await asyncio.sleep(seconds)
    finally:
        running -= 1
    return peak
"""


# The caller's view of the functions (they run on `sq`).
def square(x: int) -> int:
    """x squared, on `sq`."""
    return x * x


def fail(text: str) -> None:
    """Raises on `sq`."""
    raise AssertionError("runs remotely")


async def hold(seconds: float) -> int:
    """Sleeps on `sq`; returns the most calls it saw running at once."""
    raise AssertionError("runs remotely")


def size(text: str) -> int:
    """The text's length, on `sq`."""
    raise AssertionError("runs remotely")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_qb_build(tmp_path_factory.mktemp("build"), USER_CODE, FUNCTIONS)


@pytest.fixture
async def caller(tmp_path: Path) -> AsyncIterator[Path]:
    """The endpoint table a caller worker reads (`publish` writes it); calls reset after."""
    table = tmp_path / "endpoints.json"
    calls.set_registry(ServiceRegistry(MANIFEST, current_resource="gw", endpoints_file=table))
    yield table
    for _, pool in list(calls._clients.values()):
        await pool.aclose()
    calls.reset()


def _start(build_dir: Path, tmp: Path, started: list[Worker], **env: str) -> Worker:
    extra = env.pop("extra", None)
    worker = Worker(
        build_dir,
        "sq",
        key="key-sq",
        env={"TMPDIR": str(tmp), **env},
        extra_args=extra.split() if extra else None,
    )
    started.append(worker)
    worker.wait_ready()
    return worker


def _publish(table: Path, worker: Worker) -> None:
    entry = {"url": worker.url, "key": worker.key}
    table.write_text(json.dumps({"endpoints": {"sq": entry}}))


def _named(worker: Worker) -> str:
    """The frame socket the worker names to a caller with its key."""
    answer = httpx.get(f"{worker.url}/health", headers=worker.headers)
    assert answer.status_code == 200
    return answer.headers[FRAMES_HEADER]


def _pool() -> ConnectionPool:
    return next(pool for _, pool in calls._clients.values())


def _frames() -> FrameClient:
    return next(client for _, client in calls._frame_clients.values())


def _runsync_lines(worker: Worker) -> int:
    return sum(1 for line in worker.stdout if "POST /runsync 200 " in line)


async def test_calls_go_over_one_frame_connection_and_are_logged(
    build_dir: Path, short_tmp: Path, started: list[Worker], caller: Path
) -> None:
    worker = _start(build_dir, short_tmp, started)
    _publish(caller, worker)
    assert [await calls.dispatch(square, "sq", (i,), {}) for i in range(20)] == [
        i * i for i in range(20)
    ]
    # The first call over TCP (its answer named the frame socket), every later one as a frame
    # on one connection: no other HTTP connection was opened.
    assert (_pool().opened, _frames().opened) == (1, 1)
    named = _named(worker)
    assert os.path.basename(named).startswith("flash-frames-")
    assert stat.S_IMODE(os.stat(named).st_mode) == 0o600
    # Every call, frame or HTTP, has its request log line and counts in /health.
    await eventually(lambda: _runsync_lines(worker) == 20, 10, "20 request log lines")
    health = httpx.get(f"{worker.url}/health", headers=worker.headers).json()
    assert health["jobs"]["completed"] == 20


async def test_many_calls_in_flight_share_the_connection_and_get_their_own_answers(
    build_dir: Path, short_tmp: Path, started: list[Worker], caller: Path
) -> None:
    worker = _start(build_dir, short_tmp, started)
    _publish(caller, worker)
    assert await calls.dispatch(square, "sq", (2,), {}) == 4  # learns the socket
    results = await asyncio.gather(*(calls.dispatch(square, "sq", (i,), {}) for i in range(300)))
    assert results == [i * i for i in range(300)]
    assert (_pool().opened, _frames().opened) == (1, 1)


async def test_a_job_over_the_concurrency_limit_queues_as_over_http(
    build_dir: Path, short_tmp: Path, started: list[Worker], caller: Path
) -> None:
    worker = _start(build_dir, short_tmp, started, FLASH_WORKER_CONCURRENCY="2")
    _publish(caller, worker)
    assert await calls.dispatch(square, "sq", (1,), {}) == 1
    seen_queued = False

    def queued() -> bool:
        nonlocal seen_queued
        jobs = httpx.get(f"{worker.url}/health", headers=worker.headers).json()["jobs"]
        seen_queued = seen_queued or (jobs["inProgress"] == 2 and jobs["inQueue"] >= 1)
        return seen_queued

    calls_in_flight = asyncio.gather(*(calls.dispatch(hold, "sq", (0.4,), {}) for _ in range(6)))
    await eventually(lambda: queued() or calls_in_flight.done(), 10, "jobs waiting in the queue")
    peaks = await calls_in_flight
    assert seen_queued
    assert max(peaks) == 2  # never more than the limit at once
    assert _frames().opened == 1


async def test_a_full_queue_answers_429_to_the_caller(
    build_dir: Path, short_tmp: Path, started: list[Worker], caller: Path
) -> None:
    worker = _start(
        build_dir, short_tmp, started, FLASH_WORKER_CONCURRENCY="1", FLASH_QUEUE_MAX_JOBS="1"
    )
    _publish(caller, worker)
    assert await calls.dispatch(square, "sq", (1,), {}) == 1
    outcomes = await asyncio.gather(
        *(calls.dispatch(hold, "sq", (0.3,), {}) for _ in range(4)), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, RemoteExecutionError)]
    assert len(refused) == 2 and all(o.status == 429 for o in refused), outcomes
    assert all("queue is full" in str(o) for o in refused)
    assert [o for o in outcomes if not isinstance(o, Exception)] == [1, 1]
    assert _frames().opened == 1


async def test_a_body_over_the_workers_limit_is_refused_as_over_http(
    build_dir: Path, short_tmp: Path, started: list[Worker], caller: Path
) -> None:
    worker = _start(build_dir, short_tmp, started, FLASH_MAX_BODY_BYTES="2000")
    _publish(caller, worker)
    assert [await calls.dispatch(square, "sq", (i,), {}) for i in range(2)] == [0, 1]
    with pytest.raises(RemoteExecutionError) as refused:
        await calls.dispatch(fail, "sq", ("x" * 5000,), {})
    assert refused.value.status == 413
    assert "request body too large (limit 2000 bytes)" in str(refused.value)
    assert _frames().opened == 1
    await eventually(
        lambda: any("POST /runsync 413 " in line for line in worker.stdout), 10, "the 413 logged"
    )


async def test_an_error_in_the_callee_arrives_with_its_type_message_and_line(
    build_dir: Path, short_tmp: Path, started: list[Worker], caller: Path
) -> None:
    worker = _start(build_dir, short_tmp, started)
    _publish(caller, worker)
    assert await calls.dispatch(square, "sq", (3,), {}) == 9
    with pytest.raises(RemoteExecutionError) as failed:
        await calls.dispatch(fail, "sq", ("xyz",), {})
    assert _frames().opened == 1  # it came as a frame
    text = str(failed.value)
    assert "ValueError: bad input: xyz" in text
    line = USER_CODE.splitlines().index('    raise ValueError(f"bad input: {text}")') + 1
    assert f'userfns.py", line {line}' in failed.value.remote_traceback
    # The callee's log has the traceback too.
    await eventually(
        lambda: any("ValueError: bad input: xyz" in e for e in worker.stderr + worker.stdout),
        10,
        "the traceback in the worker's log",
    )


async def test_a_caller_that_gives_up_cancels_the_job(
    build_dir: Path, short_tmp: Path, started: list[Worker], caller: Path
) -> None:
    worker = _start(build_dir, short_tmp, started, FLASH_WORKER_CONCURRENCY="1")
    _publish(caller, worker)
    assert await calls.dispatch(square, "sq", (3,), {}) == 9
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(calls.dispatch(hold, "sq", (60.0,), {}), 0.5)

    def running() -> int:
        jobs = httpx.get(f"{worker.url}/health", headers=worker.headers).json()["jobs"]
        return int(jobs["inProgress"])

    # Its one slot is free again long before the job's 60 s: the next call runs at once.
    await eventually(lambda: running() == 0, 10, "the abandoned job cancelled")
    assert await asyncio.wait_for(calls.dispatch(square, "sq", (4,), {}), 10) == 16


async def test_a_call_past_the_call_timeout_raises_and_its_job_is_cancelled(
    build_dir: Path,
    short_tmp: Path,
    started: list[Worker],
    caller: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASH_CALL_TIMEOUT", "1")
    worker = _start(build_dir, short_tmp, started, FLASH_WORKER_CONCURRENCY="1")
    _publish(caller, worker)
    assert [await calls.dispatch(square, "sq", (i,), {}) for i in range(2)] == [0, 1]
    with pytest.raises(TimeoutError, match="hold on sq did not"):
        await calls.dispatch(hold, "sq", (60.0,), {})

    def running() -> int:
        jobs = httpx.get(f"{worker.url}/health", headers=worker.headers).json()["jobs"]
        return int(jobs["inProgress"])

    await eventually(lambda: running() == 0, 10, "the timed-out job cancelled")
    assert await calls.dispatch(square, "sq", (5,), {}) == 25
    assert _frames().opened == 1


async def test_a_worker_killed_and_replaced_is_followed(
    build_dir: Path, short_tmp: Path, started: list[Worker], caller: Path
) -> None:
    """SIGKILLed: its socket file stays with nobody listening. The kept connection is found
    dead, one new connection is tried, then HTTP, whose answer names the new worker's socket."""
    first = _start(build_dir, short_tmp, started)
    _publish(caller, first)
    assert [await calls.dispatch(square, "sq", (i,), {}) for i in range(3)] == [0, 1, 4]
    port = first.url.rsplit(":", 1)[1]
    old = _named(first)
    first.proc.kill()
    first.proc.wait(10)
    assert os.path.exists(old)  # left behind by the SIGKILL
    second = _start(build_dir, short_tmp, started, extra=f"--port {port}")
    assert second.url == first.url
    _publish(caller, second)
    assert [await calls.dispatch(square, "sq", (i,), {}) for i in range(3, 8)] == [
        9,
        16,
        25,
        36,
        49,
    ]
    new = _named(second)
    assert new != old
    # Two HTTP connections (one per worker), two frame connections (one per worker).
    assert (_pool().opened, _frames().opened) == (2, 2)
    assert _runsync_lines(second) == 5


async def test_a_stopping_worker_answers_the_calls_in_flight(
    build_dir: Path, short_tmp: Path, started: list[Worker], caller: Path
) -> None:
    """SIGTERM: the running job finishes within the shutdown grace and its answer arrives;
    the connection ends with the process."""
    worker = _start(build_dir, short_tmp, started)
    _publish(caller, worker)
    assert [await calls.dispatch(square, "sq", (i,), {}) for i in range(2)] == [0, 1]
    (connection,) = _frames()._connections.values()
    in_flight = asyncio.ensure_future(calls.dispatch(hold, "sq", (0.5,), {}))

    def running() -> int:
        jobs = httpx.get(f"{worker.url}/health", headers=worker.headers).json()["jobs"]
        return int(jobs["inProgress"])

    await eventually(lambda: running() == 1, 10, "the call running on the worker")
    worker.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(in_flight, 10) == 1
    assert worker.proc.wait(10) == 0
    await eventually(lambda: connection.closed, 10, "the frame connection ended")


async def test_over_tcp_only_the_calls_stay_http(
    build_dir: Path, short_tmp: Path, started: list[Worker], caller: Path
) -> None:
    worker = _start(build_dir, short_tmp, started, FLASH_WORKER_SOCKET="off")
    _publish(caller, worker)
    assert FRAMES_HEADER not in httpx.get(f"{worker.url}/ping").headers
    assert [await calls.dispatch(square, "sq", (i,), {}) for i in range(4)] == [0, 1, 4, 9]
    assert calls._frame_clients == {} or _frames().opened == 0
    assert sorted(short_tmp.glob("flash-*.sock")) == []


def test_a_socket_open_to_others_is_not_adopted(short_tmp: Path) -> None:
    bound = bind_worker_socket(1, str(short_tmp), kind=FRAMES_KIND)
    assert bound is not None
    try:
        assert advertised_socket(bound.path) == bound.path
        os.chmod(bound.path, 0o660)
        assert advertised_socket(bound.path) is None
        os.chmod(bound.path, 0o600)
        if os.getuid() == 0:  # only root can give a file to another user
            os.chown(bound.path, 65534, -1)
            assert advertised_socket(bound.path) is None
    finally:
        bound.close()


async def test_a_pool_adopts_no_frame_socket_another_user_owns(
    build_dir: Path, short_tmp: Path, started: list[Worker], caller: Path
) -> None:
    worker = _start(build_dir, short_tmp, started)
    _publish(caller, worker)
    named = _named(worker)
    os.chmod(named, 0o666)  # as if another user's process had made it reachable
    assert [await calls.dispatch(square, "sq", (i,), {}) for i in range(3)] == [0, 1, 4]
    assert calls._frame_clients == {} or _frames().opened == 0
    assert _pool().frame_socket(worker.url) is None


@pytest.mark.skipif(
    os.getuid() != 0 or not hasattr(socket, "SO_PEERCRED"), reason="needs root and SO_PEERCRED"
)
def test_the_worker_refuses_a_caller_of_another_user(
    build_dir: Path, short_tmp: Path, started: list[Worker]
) -> None:
    """Even if its mode let them in, a connection of another user gets no answer."""
    worker = _start(build_dir, short_tmp, started)
    named = _named(worker)
    os.chmod(short_tmp, 0o755)
    os.chmod(named, 0o666)
    frame = _hello(b"key-sq") + _call_frame(7, 3)
    probe = textwrap.dedent(
        f"""
        import os, socket, sys
        os.setgid(65534); os.setuid(65534)
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        try:
            s.connect({named!r})
            s.sendall(bytes.fromhex({frame.hex()!r}))
            data = s.recv(65536)
        except OSError:  # refused, reset or closed: no answer either way
            data = b""
        print("answer" if data else "no answer")
        """
    )
    as_self = probe.replace("os.setgid(65534); os.setuid(65534)", "")
    mine = subprocess.run(
        [sys.executable, "-c", as_self], capture_output=True, text=True, timeout=30
    )
    other = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30
    )
    assert mine.stdout.strip() == "answer", mine.stderr
    assert other.stdout.strip() == "no answer", other.stderr
    worker.wait_for_output(lambda entry: "POST /runsync 200" in entry)
    assert _runsync_lines(worker) == 1  # the call of this user only


def _raw_frames(path: str, data: bytes) -> bytes:
    """What the worker at `path` answers to `data` before it closes (10 s at most)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError:  # reset: closed unanswered
            pass
        return received


def _call_frame(call_id: int, x: int) -> bytes:
    from runtime.serialization import function_job

    body = json.dumps({"input": function_job("square", (x,))}).encode()
    return struct.pack("!IIB", 4 + len(body), call_id, 1) + struct.pack("!I", 0xFFFFFFFF) + body


def _hello(key: bytes) -> bytes:
    return struct.pack("!IIB", len(key), 0, 3) + key


async def test_a_caller_with_a_wrong_key_gets_no_frame_service(
    build_dir: Path, short_tmp: Path, started: list[Worker], caller: Path
) -> None:
    """Every project's workers run as the same user: the frame socket checks the key too, and
    a caller with the wrong one gets HTTP's 401, even next to a connection opened with the
    right key."""
    worker = _start(build_dir, short_tmp, started)
    _publish(caller, worker)
    assert [await calls.dispatch(square, "sq", (i,), {}) for i in range(3)] == [0, 1, 4]
    assert _frames().opened == 1
    caller.write_text(json.dumps({"endpoints": {"sq": {"url": worker.url, "key": "not-sq"}}}))
    with pytest.raises(RemoteExecutionError) as refused:
        await calls.dispatch(square, "sq", (5,), {})
    assert refused.value.status == 401
    assert _frames().opened == 1  # the wrong key's connection was refused
    health = httpx.get(f"{worker.url}/health", headers=worker.headers).json()
    assert health["jobs"]["completed"] == 3
    # The frame client alone: refused, nothing sent, so the caller may use HTTP.
    client = FrameClient(timeout=10)
    try:
        body = json.dumps({"input": {"function_name": "square"}}).encode()
        assert await client.runsync(_named(worker), body, None, key="not-sq") is None
        assert await client.runsync(_named(worker), body, None, key=None) is None
        assert client.opened == 0
    finally:
        client.close()


def test_the_frame_socket_serves_nothing_before_a_hello_with_the_key(
    build_dir: Path, short_tmp: Path, started: list[Worker]
) -> None:
    worker = _start(build_dir, short_tmp, started)
    named = _named(worker)
    assert _raw_frames(named, _call_frame(1, 3)) == b""  # no hello: closed unanswered
    assert _raw_frames(named, _hello(b"key-sX") + _call_frame(1, 3)) == b""
    assert _raw_frames(named, _hello(b"key-sq" * 1000) + _call_frame(1, 3)) == b""
    health = httpx.get(f"{worker.url}/health", headers=worker.headers).json()
    assert health["jobs"]["completed"] == 0
    # The right key: welcomed (id 0, 204), then the call's answer.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(named)
        sock.sendall(_hello(b"key-sq") + _call_frame(1, 3))
        received = b""
        while len(received) < 20 or len(received) < 20 + struct.unpack("!I", received[10:14])[0]:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    assert struct.unpack("!IIH", received[:10]) == (0, 0, 204)
    length, call_id, status = struct.unpack("!IIH", received[10:20])
    assert (call_id, status) == (1, 200)
    assert json.loads(received[20 : 20 + length])["status"] == "COMPLETED"


def test_the_frame_socket_is_named_only_on_authenticated_answers(
    build_dir: Path, short_tmp: Path, started: list[Worker]
) -> None:
    worker = _start(build_dir, short_tmp, started)
    ping = httpx.get(f"{worker.url}/ping")
    assert ping.status_code == 200 and FRAMES_HEADER not in ping.headers
    unauthorized = httpx.get(f"{worker.url}/health", headers={"Authorization": "Bearer no"})
    assert unauthorized.status_code == 401 and FRAMES_HEADER not in unauthorized.headers
    assert advertised_socket(_named(worker)) is not None


async def test_a_pool_adopts_a_frame_socket_only_from_a_successful_answer(
    build_dir: Path, short_tmp: Path, started: list[Worker]
) -> None:
    """A 401 naming a socket (another project's worker now on the port) is not followed."""
    worker = _start(build_dir, short_tmp, started)
    named = _named(worker)

    async def refusing(scope: dict[str, object], receive: object, send: object) -> None:
        assert scope["type"] == "http"
        headers = [(FRAMES_HEADER.encode(), named.encode()), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 401, "headers": headers})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"{}"})  # type: ignore[operator]

    with serve_asgi(refusing, lifespan="off") as url:
        pool = ConnectionPool(timeout=10)
        try:
            answer = await pool.request("GET", f"{url}/health")
            assert answer.status_code == 401
            assert pool.frame_socket(url) is None
        finally:
            await pool.aclose()


async def test_a_call_over_the_frame_limit_goes_over_http_under_the_workers_limit(
    build_dir: Path, short_tmp: Path, started: list[Worker], caller: Path
) -> None:
    """A worker allowing more than a frame carries (20 MB) takes a bigger call over HTTP."""
    worker = _start(build_dir, short_tmp, started, FLASH_MAX_BODY_BYTES="40000000")
    _publish(caller, worker)
    assert [await calls.dispatch(square, "sq", (i,), {}) for i in range(2)] == [0, 1]
    text = "x" * 19_000_000  # about 25 MB once pickled and base64-encoded
    assert await calls.dispatch(size, "sq", (text,), {}) == len(text)
    assert await calls.dispatch(square, "sq", (3,), {}) == 9  # frames again after it
    assert _frames().opened == 1
    await eventually(lambda: _runsync_lines(worker) == 4, 10, "4 request log lines")
    # A frame over the limit sent anyway is refused, and the refusal is logged as over HTTP.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(_named(worker))
        sock.sendall(_hello(b"key-sq") + struct.pack("!IIB", 30_000_000, 5, 1) + b"x" * 1000)
        received = b""
        while len(received) < 20:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    assert struct.unpack("!IIH", received[10:20])[1:] == (5, 413)
    await eventually(
        lambda: any("POST /runsync 413 " in line for line in worker.stdout), 10, "the 413 logged"
    )


async def test_a_call_on_a_connection_lost_before_it_is_refused_at_once(
    build_dir: Path, short_tmp: Path, started: list[Worker]
) -> None:
    """Calls resumed after their connection was lost (between its opening and their turn) are
    not written into a closed connection to wait for the call timeout: they fail at once,
    as not sent, and the client sends them over HTTP."""
    worker = _start(build_dir, short_tmp, started)
    client = FrameClient(timeout=120)
    body = json.dumps({"input": {"function_name": "square"}}).encode()
    try:
        first = await client.runsync(_named(worker), body, None, key=worker.key)
        assert first is not None and first.status_code == 200
        (connection,) = client._connections.values()
        connection.close()
        await eventually(lambda: connection.closed, 10, "the connection closed")
        with pytest.raises(httpx.ReadError, match="before the call was sent"):
            await asyncio.wait_for(connection.call(struct.pack("!I", 0) + body, 120), 10)
    finally:
        client.close()


def _port_closed(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


async def test_a_stopping_worker_takes_no_new_frame_calls(
    build_dir: Path, short_tmp: Path, started: list[Worker], caller: Path
) -> None:
    """SIGTERM with a call running: the frame connection stays for its answer but takes no
    new call (no 503 "shutting down" where HTTP would find the port closed); the caller goes
    over HTTP, to the worker that replaced it on the port."""
    first = _start(build_dir, short_tmp, started, FLASH_SHUTDOWN_TIMEOUT="60")
    _publish(caller, first)
    assert [await calls.dispatch(square, "sq", (i,), {}) for i in range(2)] == [0, 1]
    in_flight = asyncio.ensure_future(calls.dispatch(hold, "sq", (60.0,), {}))
    try:

        def running() -> int:
            jobs = httpx.get(f"{first.url}/health", headers=first.headers).json()["jobs"]
            return int(jobs["inProgress"])

        await eventually(lambda: running() == 1, 10, "the call running on the worker")
        first.proc.send_signal(signal.SIGTERM)
        await eventually(lambda: _port_closed(first.url), 10, "the HTTP port closed")
        # Nobody on the port: the call fails as it would over HTTP, unreachable, not run.
        with pytest.raises(RemoteExecutionError) as unreachable:
            await calls.dispatch(square, "sq", (3,), {})
        assert unreachable.value.status is None and "cannot reach" in str(unreachable.value)
        assert first.proc.poll() is None and not in_flight.done()
        # Replaced on the same port: the calls reach the new worker.
        port = first.url.rsplit(":", 1)[1]
        second = _start(build_dir, short_tmp, started, extra=f"--port {port}")
        assert [await calls.dispatch(square, "sq", (i,), {}) for i in range(4)] == [0, 1, 4, 9]
        await eventually(lambda: _runsync_lines(second) == 4, 10, "4 calls on the new worker")
        assert not in_flight.done()
    finally:
        in_flight.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await in_flight
    # The abandoned call was cancelled on the old worker, which then ends.
    assert first.proc.wait(30) == 0


class _ForeignPeer:
    """An accepted connection's transport whose peer is not this user (its credentials
    cannot be read): what `asyncio` hands the frame server, minus a socket."""

    def __init__(self) -> None:
        self.aborted = False
        self.written = b""

    def get_extra_info(self, name: str) -> object:
        return self if name == "socket" else None

    def getsockopt(self, *args: object) -> bytes:
        raise OSError("no credentials")

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted

    def write(self, data: bytes) -> None:
        self.written += data


@pytest.mark.skipif(not hasattr(socket, "SO_PEERCRED"), reason="needs SO_PEERCRED")
async def test_a_connection_of_another_user_reads_nothing_it_is_sent() -> None:
    """Data that arrives on a connection refused for its peer's user (the abort does not
    stop what is already read) starts no call, even with the right key."""
    from runtime.local_frames import FrameServer
    from runtime.qb_handler import create_handler
    from runtime.queue_server import QueueServer

    queue = QueueServer(create_handler({"square": lambda x: x * x}))
    logged: list[tuple[object, ...]] = []
    server = FrameServer(lambda: queue, lambda *entry: logged.append(entry), "key-sq")
    connection = server.protocol()
    peer = _ForeignPeer()
    connection.connection_made(peer)  # type: ignore[arg-type]
    assert peer.aborted
    connection.data_received(_hello(b"key-sq") + _call_frame(1, 3))
    assert server.tasks == set() and peer.written == b""
    assert queue.health()["jobs"]["inProgress"] == 0 and logged == []
