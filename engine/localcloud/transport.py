"""The local cloud client's HTTP/1.1 transport: httpx's API, h11's protocol, asyncio's streams.

The service is plain HTTP on 127.0.0.1, so httpx's default transport (httpcore with its sync and
async stacks, anyio, a TLS context) is more machinery than the wire needs, and importing it was
a tenth of a warm `deploy --yes`. This one keeps h11 (already here for uvicorn) for the
protocol — framing by Content-Length, chunks or the end of the connection, keep-alive — and
moves its bytes over `asyncio.open_connection`. Answers stream as they arrive (deploy events,
followed logs); idle connections are kept for the next request, and one the service closed
meanwhile is replaced once. httpx's timeout settings apply (connect, write, and read between
chunks) and failures raise httpx's exceptions, so the client above is an ordinary
`httpx.AsyncClient`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

import h11
import httpx

__all__ = ["LoopbackTransport"]

_CHUNK = 64 * 1024
_T = TypeVar("_T")


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: h11.Connection

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class LoopbackTransport(httpx.AsyncBaseTransport):
    """Plain-HTTP/1.1 transport for `httpx.AsyncClient(transport=...)` (http:// only)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and return its response, the body still to be read (streamed)."""
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol(
                f"the local cloud transport speaks plain HTTP, not {request.url.scheme!r}",
                request=request,
            )
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        address = (request.url.host, request.url.port or 80)
        reused = self._take_idle(address)
        if reused is not None:
            try:
                return await self._exchange(request, body, reused, address, timeouts)
            except _NoAnswer:
                pass  # closed by the service while idle: once more, on a new connection
        connection = await _connect(request, address, timeouts.get("connect"))
        try:
            return await self._exchange(request, body, connection, address, timeouts)
        except _NoAnswer as exc:
            raise httpx.RemoteProtocolError(
                "the server closed the connection without answering", request=request
            ) from exc

    async def aclose(self) -> None:
        """Close the idle connections."""
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def _take_idle(self, address: tuple[str, int]) -> _Connection | None:
        connections = self._idle.get(address) or []
        while connections:
            connection = connections.pop()
            if connection.usable():
                return connection
            connection.close()
        return None

    def _keep(self, address: tuple[str, int], connection: _Connection) -> None:
        protocol = connection.protocol
        if protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
            protocol.start_next_cycle()
            self._idle.setdefault(address, []).append(connection)
        else:  # the service said it closes it (or the request went wrong)
            connection.close()

    async def _exchange(
        self,
        request: httpx.Request,
        body: bytes,
        connection: _Connection,
        address: tuple[str, int],
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        protocol = connection.protocol
        try:
            head = h11.Request(
                method=request.method,
                target=request.url.raw_path or b"/",
                headers=request.headers.raw,
            )
            data = protocol.send(head) or b""
            if body:
                data += protocol.send(h11.Data(data=body)) or b""
            data += protocol.send(h11.EndOfMessage()) or b""
            connection.writer.write(data)
            await _within(
                timeouts.get("write"), connection.writer.drain(), httpx.WriteTimeout, request
            )
        except ConnectionError as exc:  # closed by the service while idle: nothing was heard
            connection.close()
            raise _NoAnswer from exc
        except h11.LocalProtocolError as exc:
            connection.close()
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        except OSError as exc:
            connection.close()
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc
        except BaseException:
            connection.close()
            raise
        try:
            answer = await _within(
                timeouts.get("read"), _read_head(connection, request), httpx.ReadTimeout, request
            )
        except BaseException:
            connection.close()
            raise
        stream = _Body(connection, request, timeouts.get("read"), address, self)
        return httpx.Response(
            answer.status_code,
            headers=answer.headers.raw_items(),
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason},
        )


class _NoAnswer(Exception):
    """The connection ended before the first byte of an answer."""


class _Body(httpx.AsyncByteStream):
    """A response body as it arrives; the connection goes back to the pool once it is read
    to its end and both sides may go on."""

    def __init__(
        self,
        connection: _Connection,
        request: httpx.Request,
        read_timeout: float | None,
        address: tuple[str, int],
        pool: LoopbackTransport,
    ) -> None:
        self._connection, self._request = connection, request
        self._timeout, self._address, self._pool = read_timeout, address, pool
        self._finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while True:
                event = await _within(
                    self._timeout,
                    _next_event(self._connection, self._request),
                    httpx.ReadTimeout,
                    self._request,
                )
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise httpx.RemoteProtocolError(
                        "the connection ended inside the answer", request=self._request
                    )
        except OSError as exc:
            self._connection.close()
            raise httpx.ReadError(
                f"the connection broke mid-answer: {exc}", request=self._request
            ) from exc
        self._finished = True
        self._pool._keep(self._address, self._connection)

    async def aclose(self) -> None:
        if not self._finished:
            self._connection.close()  # an answer read partway leaves the connection unusable


def _event(connection: _Connection, request: httpx.Request) -> h11.Event | type[h11.NEED_DATA]:
    try:
        return connection.protocol.next_event()
    except h11.RemoteProtocolError as exc:
        connection.close()
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc


async def _next_event(connection: _Connection, request: httpx.Request) -> h11.Event:
    """The next protocol event, reading from the socket as h11 needs."""
    while (event := _event(connection, request)) is h11.NEED_DATA:
        connection.protocol.receive_data(await connection.reader.read(_CHUNK))
    return event


async def _read_head(connection: _Connection, request: httpx.Request) -> h11.Response:
    """The next final answer's status and headers (interim 1xx answers skipped); _NoAnswer
    when the connection ends before a byte of it (closed by the service while idle)."""
    heard = False
    while True:
        event = _event(connection, request)
        if event is h11.NEED_DATA:
            try:
                data = await connection.reader.read(_CHUNK)
            except ConnectionError as exc:
                if not heard:  # reset before a byte of the answer: as if closed while idle
                    raise _NoAnswer from exc
                raise httpx.ReadError(f"the connection broke: {exc}", request=request) from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
            if not data and not heard:
                raise _NoAnswer
            heard = True
            connection.protocol.receive_data(data)
        elif isinstance(event, h11.Response):
            return event
        # else h11.InformationalResponse: the real answer follows


async def _connect(
    request: httpx.Request, address: tuple[str, int], timeout: float | None
) -> _Connection:
    try:
        reader, writer = await _within(
            timeout, asyncio.open_connection(*address), httpx.ConnectTimeout, request
        )
    except OSError as exc:
        raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
    return _Connection(reader, writer, h11.Connection(our_role=h11.CLIENT))


async def _within(
    timeout: float | None,
    work: Awaitable[_T],
    error: type[httpx.TimeoutException],
    request: httpx.Request,
) -> _T:
    try:
        return await asyncio.wait_for(work, timeout)
    except asyncio.TimeoutError:
        raise error(f"timed out after {timeout:g} s", request=request) from None
