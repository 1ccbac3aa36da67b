"""Same-machine `/runsync` calls to a queue-based worker as frames on its Unix socket.

Why: an LB route awaiting a QB function on this machine paid, per call, for HTTP on both
workers: a request head built and parsed, uvicorn's per-request cycle, the middleware stack
(request log, host check, bearer auth) and one `send(2)` per call and per answer on each
side. Here the calls of one caller to one worker share one connection; every call is a frame
with an id, so calls in flight multiplex and their answers come back in any order, and what
one side writes during a turn of its event loop leaves in one `send(2)` (at 64 calls in flight
that is a handful of system calls per turn, not 128).

Wire format (big-endian):

- hello, a connection's first frame: `length:u32 0:u32 HELLO:u8` then the endpoint key the caller
  would send as `Authorization: Bearer` (UTF-8; empty without one). The worker compares it with
  its own key and answers `WELCOME` (an answer frame of id 0, no body) or closes the connection
  unanswered; no call is read before that, and a caller sends none before its welcome;
- call: `length:u32 id:u32 kind:u8` then `length` bytes. `RUNSYNC`: `wait_ms:u32` (`NO_WAIT`
  for the worker's default) then the `/runsync` body exactly as over HTTP (`{"input": ...}`);
  `CANCEL`: nothing (the caller gave up on call `id`: its job is cancelled);
- answer: `length:u32 id:u32 status:u16` then the answer's JSON text, as HTTP would carry it;
  status `NOT_TAKEN` (0, no body): the worker is stopping and did not take the call, so the
  caller sends it elsewhere (HTTP, which finds the port closed and re-reads its registry).

A stopping worker (SIGTERM) closes its idle connections at once and its busy ones after their
last answer, as uvicorn does with HTTP keep-alive connections: callers then find the socket
gone and use HTTP, rather than place new jobs on a worker that would fail them.

Every call goes through `QueueServer.runsync`: the same body limit, JSON checks, concurrency,
queue and 429s, execution timeout, counters and `/health`, and the worker's request log line
(`POST /runsync 200 0.4ms`); a job outliving the wait answers its status like HTTP, and the
caller polls `/status` over HTTP. Authentication is once per connection, two gates: the hello's
endpoint key (every project's workers run as the same user, so the user alone proves nothing),
and the peer's user (`SO_PEERCRED`, where the system has it); the socket is 0600 in the
worker's private directory and adopted by a caller only as `runtime.worker_socket` allows. A
caller whose hello is refused sends its call over HTTP, whose 401 is what it sees.

The worker names the socket in the `x-flash-frames` header of its authenticated HTTP answers
(not `/ping`, not a 401); a caller
(`runtime.calls`) uses it once an answer over loopback named it. A connection that dies (the
worker stopped) fails the calls in flight as a broken HTTP connection would; the next call
connects once more and, if that fails, goes over HTTP, whose answer names the new socket.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import socket
import struct
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

import httpx

from runtime.httpwire import Response

__all__ = [
    "NO_WAIT",
    "FrameClient",
    "FrameServer",
    "JobRunner",
]

NO_WAIT = 0xFFFFFFFF
_RUNSYNC = 1
_CANCEL = 2
_HELLO = 3
_WELCOME = 204  # the hello's answer status (id 0)
_MAX_HELLO = 4096  # an endpoint key is far shorter: a longer hello is refused unread
_NOT_TAKEN = 0  # an answer's status: the worker is stopping and did not take the call
_CALL = struct.Struct("!IIB")
_ANSWER = struct.Struct("!IIH")
_WAIT = struct.Struct("!I")
# A call frame larger than RunPod's /runsync payload limit plus its header is refused unread;
# a caller sends a larger one over HTTP instead, where the worker's own limit applies.
_MAX_CALL = 20 * 1024 * 1024 + _WAIT.size
_PEERCRED = struct.Struct("3i")  # pid, uid, gid
_STARTING = '{"error":"worker is starting"}'
_BROKEN = '{"error":"internal error"}'


class JobRunner(Protocol):
    """What a frame server runs calls on (`runtime.queue_server.QueueServer`)."""

    def runsync(
        self, body: bytes, wait_ms: int | None, reply: Callable[[int, str], Awaitable[None]]
    ) -> Awaitable[None]:
        """Run one `/runsync` body and `reply(status, json_text)` once."""
        ...


class _Held:
    """Bytes written during one event loop turn, sent together at its end."""

    __slots__ = ("transport", "chunks", "loop")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.chunks: list[bytes] = []
        self.loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self.chunks:
            self.loop.call_soon(self.flush)
        self.chunks.append(data)

    def flush(self) -> None:
        if self.chunks and not self.transport.is_closing():
            self.transport.write(b"".join(self.chunks))
        self.chunks = []


def _same_user(transport: asyncio.BaseTransport) -> bool:
    """Whether the peer runs as this process's user (True where the system cannot tell)."""
    sock = transport.get_extra_info("socket")
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return True  # the socket's 0600 mode alone keeps other users out there
    try:
        _, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _PEERCRED.size))
    except OSError:
        return False
    return uid == os.getuid()


class FrameServer:
    """Serves frame calls on a worker's Unix socket (see the module docstring)."""

    def __init__(
        self,
        runner: Callable[[], JobRunner | None],
        log: Callable[[str, str, int, float], None],
        key: str | None,
        tasks: set[asyncio.Task[None]] | None = None,
    ) -> None:
        self._runner = runner  # None while the handler module is still importing
        self._log = log
        # Calls in flight, for a server's shutdown to wait for (uvicorn's, as for HTTP's).
        self.tasks: set[asyncio.Task[None]] = tasks if tasks is not None else set()
        # None: an --insecure worker, whose HTTP needs no key either.
        self._key = key.encode() if key is not None else None
        self._open: set[_ServerConnection] = set()
        self._stopping = False

    def protocol(self) -> asyncio.Protocol:
        """A protocol instance for one accepted connection (`loop.create_unix_server`)."""
        return _ServerConnection(self._runner, self._log, self._key, self)

    def stop(self) -> None:
        """Take no more calls: close idle connections now, busy ones after their last answer
        (on the server's event loop)."""
        self._stopping = True
        for connection in list(self._open):
            connection.stop()

    def admit(self, connection: _ServerConnection) -> bool:
        """Count an accepted connection as open; False once stopping (it is to be closed)."""
        if self._stopping:
            return False
        self._open.add(connection)
        return True

    def release(self, connection: _ServerConnection) -> None:
        """Forget a connection that ended."""
        self._open.discard(connection)


class _ServerConnection(asyncio.Protocol):
    def __init__(
        self,
        runner: Callable[[], JobRunner | None],
        log: Callable[[str, str, int, float], None],
        key: bytes | None,
        server: FrameServer,
    ) -> None:
        self._runner = runner
        self._log = log
        self._key = key
        self._server = server
        self._stopping = False
        self._greeted = False  # a hello with the right key came
        self._buffer = bytearray()
        self._skip = 0  # bytes left of a refused call's payload
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._out: _Held | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses: no isinstance check.)
        if not _same_user(transport):
            cast(asyncio.Transport, transport).abort()
            return
        self._transport = cast(asyncio.Transport, transport)
        if not self._server.admit(self):  # accepted as the worker stops
            self._transport.abort()
            return
        self._out = _Held(self._transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._out = None  # calls in flight finish; their answers have nowhere to go
        self._server.release(self)

    def stop(self) -> None:
        """Take no more calls; close once the calls in flight are answered."""
        self._stopping = True
        if not self._calls:
            self._close()

    def _close(self) -> None:
        if self._out is not None:
            self._out.flush()  # the last answers leave before the close
            self._out = None
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._out is None:  # refused (another user, a wrong key) or lost: nothing is read
            return
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        buffer = self._buffer
        buffer += data
        offset = 0
        if not self._greeted:
            offset = self._hello(buffer)
            if not offset:
                return
        while len(buffer) - offset >= _CALL.size:
            length, call_id, kind = _CALL.unpack_from(buffer, offset)
            if length > _MAX_CALL:
                # Callers send no such call (HTTP takes it, under the worker's own limit).
                self._answer(call_id, 413, b'{"error":"request body too large"}')
                self._log("POST", "/runsync", 413, 0.0)
                available = len(buffer) - offset - _CALL.size
                self._skip = length - min(length, available)
                offset = len(buffer) if self._skip else offset + _CALL.size + length
                continue
            end = offset + _CALL.size + length
            if len(buffer) < end:
                break
            payload = bytes(buffer[offset + _CALL.size : end])
            offset = end
            if kind == _RUNSYNC and self._stopping:
                self._answer(call_id, _NOT_TAKEN, b"")
            elif kind == _RUNSYNC:
                task = asyncio.get_running_loop().create_task(self._serve(call_id, payload))
                self._calls[call_id] = task
                tasks = self._server.tasks
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif kind == _CANCEL:
                running = self._calls.get(call_id)
                if running is not None:
                    running.cancel()
        del buffer[:offset]

    def _hello(self, buffer: bytearray) -> int:
        """Check the connection's hello: its length when accepted, 0 when incomplete (or
        refused: the connection is then closed unanswered)."""
        if len(buffer) < _CALL.size:
            return 0
        length, _, kind = _CALL.unpack_from(buffer)
        if kind != _HELLO or length > _MAX_HELLO:
            self._refuse()
            return 0
        end = _CALL.size + length
        if len(buffer) < end:
            return 0
        if self._key is not None and not hmac.compare_digest(
            bytes(buffer[_CALL.size : end]), self._key
        ):
            self._refuse()
            return 0
        self._greeted = True
        self._answer(0, _WELCOME, b"")
        return end

    def _refuse(self) -> None:
        self._buffer.clear()
        self._out = None
        self._transport.abort()

    def _answer(self, call_id: int, status: int, body: bytes) -> None:
        if self._out is not None:
            self._out.write(_ANSWER.pack(len(body), call_id, status) + body)

    async def _serve(self, call_id: int, payload: bytes) -> None:
        start = time.perf_counter()
        status = 0

        async def reply(code: int, text: str) -> None:
            nonlocal status
            if status == 0:
                status = code
                self._answer(call_id, code, text.encode())

        try:
            runner = self._runner()
            (wait_ms,) = _WAIT.unpack_from(payload)
            if runner is None:
                await reply(503, _STARTING)
            else:
                await runner.runsync(
                    payload[_WAIT.size :], None if wait_ms == NO_WAIT else wait_ms, reply
                )
        except asyncio.CancelledError:
            status = status or 499  # the caller gave up; its job was cancelled
        except Exception:
            sys.stderr.write(f"frame call failed:\n{traceback.format_exc()}")
            sys.stderr.flush()
            await reply(500, _BROKEN)
        finally:
            self._calls.pop(call_id, None)
            self._log("POST", "/runsync", status or 500, time.perf_counter() - start)
            if self._stopping and not self._calls:
                self._close()


_Target = tuple[str, "str | None"]  # a frame socket's path and the key its caller sends


class FrameClient:
    """A caller's connections to workers' frame sockets (one per socket), on one event loop."""

    def __init__(self, *, timeout: float, connect_timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.opened = 0  # connections opened so far: how well they are kept, for tests
        # Per socket and key: a connection serves only calls made with the key it sent.
        self._connections: dict[_Target, _ClientConnection] = {}
        self._opening: dict[_Target, asyncio.Future[_ClientConnection | None]] = {}

    async def runsync(
        self, path: str, body: bytes, wait_ms: int | None, *, key: str | None
    ) -> Response | None:
        """Send a `/runsync` body to the worker at `path`, authenticated by the endpoint `key`,
        and await its answer; None when the socket cannot be reached or refused the key
        (nothing was sent: the caller may use HTTP)."""
        wait = NO_WAIT if wait_ms is None else min(wait_ms, NO_WAIT - 1)
        payload = _WAIT.pack(wait) + body
        if len(payload) > _MAX_CALL:
            return None  # HTTP, under the worker's own body limit (which may be higher)
        target = (path, key)
        connection = self._connections.get(target)
        if connection is not None and connection.usable:
            try:
                return await connection.call(payload, self.timeout)
            except _LostWhileIdle:
                pass  # the worker went away while the connection was idle: connect once more
        connection = self._connections.get(target)
        if connection is None or not connection.usable:
            connection = await self._connect(target)
            if connection is None:
                return None
        try:
            return await connection.call(payload, self.timeout)
        except _NotSent:
            return None  # lost as it was opened (calls waiting on it resumed late): HTTP
        except _LostWhileIdle as exc:
            raise httpx.ReadError(str(exc)) from None

    async def _connect(self, target: _Target) -> _ClientConnection | None:
        # Calls that find no connection at the same moment share the one being opened.
        opening = self._opening.get(target)
        if opening is None:
            opening = asyncio.ensure_future(self._open(target))
            self._opening[target] = opening
            opening.add_done_callback(lambda _: self._opening.pop(target, None))
        return await asyncio.shield(opening)

    async def _open(self, target: _Target) -> _ClientConnection | None:
        self._connections.pop(target, None)
        path, key = target
        try:
            connection = await asyncio.wait_for(self._greeted(path, key), self.connect_timeout)
        except (OSError, asyncio.TimeoutError):
            return None
        if connection is None:
            return None
        self.opened += 1
        self._connections[target] = connection
        return connection

    @staticmethod
    async def _greeted(path: str, key: str | None) -> _ClientConnection | None:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_unix_connection(_ClientConnection, path)
        try:
            if await connection.greet(key):
                return connection
        except BaseException:  # timed out or cancelled: not left open
            connection.close()
            raise
        return None  # refused (a wrong key) or gone: closed before the welcome, nothing sent

    def close(self) -> None:
        """Close every connection (calls in flight fail)."""
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()


class _LostWhileIdle(httpx.ReadError):
    """The connection ended with no byte received since it was last idle: the worker was gone
    before the call (as a kept-alive HTTP connection closed while idle), so it can be sent
    again on a new connection."""


class _NotSent(_LostWhileIdle):
    """The connection had ended before the call was written: nothing reached the worker."""


class _ClientConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.closed = False
        self.stopping = False  # the worker said it takes no more calls here
        # Reads so far, and their count when the last call in flight was answered.
        self._reads = 0
        self._idle_reads = 0
        self._buffer = bytearray()
        self._pending: dict[int, asyncio.Future[Response]] = {}
        # Each call's deadline and timeout, checked by one timer per connection: a timer per
        # call (asyncio.timeout) cost a tenth of the caller's share of a call.
        self._deadlines: dict[int, tuple[float, float]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._next = 0
        self._out: _Held | None = None
        self._transport: asyncio.Transport | None = None
        self._welcome: asyncio.Future[bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._out = _Held(self._transport)
        self._welcome = asyncio.get_running_loop().create_future()

    async def greet(self, key: str | None) -> bool:
        """Send the hello with `key`; whether the worker welcomed it (False: it closed)."""
        assert self._out is not None and self._welcome is not None
        secret = key.encode() if key else b""
        self._out.write(_CALL.pack(len(secret), 0, _HELLO) + secret)
        return await self._welcome

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._welcome is not None and not self._welcome.done():
            self._welcome.set_result(False)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._deadlines.clear()
        pending, self._pending = self._pending, {}
        reason = f"{type(exc).__name__}: {exc}" if exc else "closed by the worker"
        for future in pending.values():
            if not future.done():
                future.set_exception(httpx.ReadError(f"worker socket connection lost ({reason})"))

    @property
    def usable(self) -> bool:
        """Whether new calls may be sent on it."""
        return not (self.closed or self.stopping)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._reads += 1
        buffer = self._buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= _ANSWER.size:
            length, call_id, status = _ANSWER.unpack_from(buffer, offset)
            end = offset + _ANSWER.size + length
            if len(buffer) < end:
                break
            welcome = self._welcome
            if welcome is not None and not welcome.done():
                welcome.set_result(call_id == 0 and status == _WELCOME)
                offset = end
                continue
            future = self._pending.pop(call_id, None)
            self._deadlines.pop(call_id, None)
            if status == _NOT_TAKEN:
                self.stopping = True
                if future is not None and not future.done():
                    future.set_exception(_NotSent("the worker is stopping: call not taken"))
            elif future is not None and not future.done():
                body = bytes(buffer[offset + _ANSWER.size : end])
                future.set_result(Response(status, {}, body))
            offset = end
        del buffer[:offset]
        if not self._pending:
            self._idle_reads = self._reads

    async def call(self, payload: bytes, timeout: float) -> Response:
        """Send one call and await its answer (cancelled or timed out: the worker is told)."""
        if self.closed:
            # Written now, it would be dropped unsent and wait for the timeout.
            raise _NotSent("worker socket connection lost before the call was sent")
        if self.stopping:
            raise _NotSent("the worker is stopping: call not taken")
        assert self._out is not None
        call_id = self._next
        self._next = (call_id + 1) & 0xFFFFFFFF
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Response] = loop.create_future()
        self._pending[call_id] = future
        self._deadlines[call_id] = (loop.time() + timeout, timeout)
        if self._sweeper is None:
            self._schedule_sweep(loop, timeout)
        reads = self._reads
        after_idle = reads == self._idle_reads
        self._out.write(_CALL.pack(len(payload), call_id, _RUNSYNC) + payload)
        try:
            return await future
        except _NotSent:
            raise
        except httpx.ReadError as exc:
            if self.closed and after_idle and self._reads == reads:
                raise _LostWhileIdle(str(exc)) from exc
            raise
        except asyncio.CancelledError:
            self._cancel(call_id)
            raise

    def _schedule_sweep(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        interval = min(1.0, max(0.01, timeout / 4))
        self._sweeper = loop.call_later(interval, self._sweep, loop, timeout)

    def _sweep(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        """Fail (and cancel on the worker) every call past its deadline."""
        self._sweeper = None
        now = loop.time()
        for call_id, (deadline, limit) in list(self._deadlines.items()):
            if deadline > now:
                continue
            future = self._pending.get(call_id)
            self._cancel(call_id)
            if future is not None and not future.done():
                message = f"no answer on the worker socket within {limit:g}s"
                future.set_exception(httpx.ReadTimeout(message))
        if self._pending and not self.closed:
            self._schedule_sweep(loop, timeout)

    def _cancel(self, call_id: int) -> None:
        self._deadlines.pop(call_id, None)
        if self._pending.pop(call_id, None) is not None and not self.closed:
            assert self._out is not None
            self._out.write(_CALL.pack(0, call_id, _CANCEL))
