"""The local cloud client's HTTP/1.1 transport: httpx's API over asyncio streams.

The service is plain HTTP on 127.0.0.1, so httpx's default transport (httpcore with its sync and
async stacks, anyio, h11, a TLS context) is more machinery than the wire needs, and importing it
was a tenth of a warm `deploy --yes`. This one speaks HTTP/1.1 over `asyncio.open_connection`:
requests with a known length or chunked, answers framed by Content-Length, chunked or the end
of the connection, streamed as they arrive (deploy events, followed logs). Idle connections are
kept for the next request; one closed by the service meanwhile is replaced once. httpx's timeout
settings apply (connect, write, and read between chunks), and failures raise httpx's exceptions,
so the client above it is an ordinary `httpx.AsyncClient`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

__all__ = ["LoopbackTransport"]

# A status line or header longer than this is not the service speaking.
_MAX_LINE = 64 * 1024
_MAX_HEADERS = 100
_CHUNK = 64 * 1024

_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


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
            for _reader, writer in connections:
                writer.close()

    def _take_idle(self, address: tuple[str, int]) -> _Connection | None:
        connections = self._idle.get(address) or []
        while connections:
            reader, writer = connections.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    def _keep(self, address: tuple[str, int], connection: _Connection) -> None:
        self._idle.setdefault(address, []).append(connection)

    async def _exchange(
        self,
        request: httpx.Request,
        body: bytes,
        connection: _Connection,
        address: tuple[str, int],
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        reader, writer = connection
        try:
            writer.write(_request_head(request) + _framed(request, body))
            await _within(timeouts.get("write"), writer.drain(), httpx.WriteTimeout, request)
            status, reason, headers = await _within(
                timeouts.get("read"), _read_head(reader, request), httpx.ReadTimeout, request
            )
            stream = _Body(
                reader,
                writer,
                request,
                headers,
                timeouts.get("read"),
                empty=request.method == "HEAD" or status in (204, 304),
                on_done=lambda: self._keep(address, connection),
            )
        except ConnectionError as exc:  # reset or closed before any answer
            writer.close()
            raise _NoAnswer from exc
        except BaseException:
            writer.close()
            raise
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )


class _NoAnswer(Exception):
    """The connection ended before the first byte of an answer."""


class _Body(httpx.AsyncByteStream):
    """A response body as it arrives; the connection goes back to the pool once it is read
    to its end (unless the service said it closes it)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: httpx.Request,
        headers: list[tuple[bytes, bytes]],
        read_timeout: float | None,
        *,
        empty: bool,
        on_done: Callable[[], None],
    ) -> None:
        self._reader, self._writer, self._request = reader, writer, request
        self._timeout = read_timeout
        self._on_done = on_done
        self._finished = False
        names = {k.lower(): v for k, v in headers}
        chunked = b"chunked" in names.get(b"transfer-encoding", b"").lower()
        length = names.get(b"content-length")
        self._reusable = b"close" not in names.get(b"connection", b"").lower()
        self._mode: str
        self._length = 0
        if empty:
            self._mode = "empty"
        elif chunked:
            self._mode = "chunked"
        elif length is not None:
            try:
                self._length = int(length)
            except ValueError:
                raise httpx.RemoteProtocolError(
                    f"bad Content-Length {length[:40]!r}", request=request
                ) from None
            self._mode = "length"
        else:
            self._mode, self._reusable = "eof", False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks():
                yield chunk
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._writer.close()
            raise httpx.ReadError(
                f"the connection broke mid-answer: {exc}", request=self._request
            ) from exc
        self._finished = True
        if self._reusable:
            self._on_done()
        else:
            self._writer.close()

    async def _read(self, reading: Any) -> Any:
        return await _within(self._timeout, reading, httpx.ReadTimeout, self._request)

    async def _chunks(self) -> AsyncIterator[bytes]:
        if self._mode == "empty":
            return
        if self._mode == "length":
            left = self._length
            while left > 0:
                data = await self._read(self._reader.read(min(left, _CHUNK)))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(data)
                yield data
            return
        if self._mode == "eof":
            while data := await self._read(self._reader.read(_CHUNK)):
                yield data
            return
        while True:  # chunked
            line = await self._read(self._reader.readuntil(b"\r\n"))
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise httpx.RemoteProtocolError(
                    f"bad chunk size {line[:40]!r}", request=self._request
                ) from None
            if size == 0:
                while await self._read(self._reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers: none that matter here
                return
            data = await self._read(self._reader.readexactly(size + 2))
            yield data[:-2]

    async def aclose(self) -> None:
        if not self._finished:
            self._writer.close()  # an answer read partway leaves the connection unusable


async def _connect(
    request: httpx.Request, address: tuple[str, int], timeout: float | None
) -> _Connection:
    try:
        return await _within(
            timeout, asyncio.open_connection(*address), httpx.ConnectTimeout, request
        )
    except OSError as exc:
        raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc


async def _within(
    timeout: float | None, work: Any, error: type[httpx.TimeoutException], request: httpx.Request
) -> Any:
    try:
        return await asyncio.wait_for(work, timeout)
    except asyncio.TimeoutError:
        raise error(f"timed out after {timeout:g} s", request=request) from None


def _request_head(request: httpx.Request) -> bytes:
    target = request.url.raw_path or b"/"
    lines = [request.method.encode() + b" " + target + b" HTTP/1.1"]
    for name, value in request.headers.raw:
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _framed(request: httpx.Request, body: bytes) -> bytes:
    """The body as its headers frame it (httpx sets Content-Length or chunked)."""
    if b"chunked" in request.headers.get("transfer-encoding", "").encode().lower():
        return (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    return body


async def _read_head(
    reader: asyncio.StreamReader, request: httpx.Request
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status code, reason and headers of the next answer on `reader`."""
    try:
        first = await reader.readuntil(b"\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _NoAnswer from exc
        raise httpx.RemoteProtocolError(
            "the answer ended inside its status line", request=request
        ) from exc
    except asyncio.LimitOverrunError as exc:
        raise httpx.RemoteProtocolError(
            "the answer's status line is too long", request=request
        ) from exc
    parts = first.rstrip(b"\r\n").split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(
            f"not an HTTP/1.1 status line: {first[:60]!r}", request=request
        )
    headers: list[tuple[bytes, bytes]] = []
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise httpx.RemoteProtocolError(
                "the answer's headers ended early", request=request
            ) from exc
        if line == b"\r\n":
            break
        name, sep, value = line.partition(b":")
        if not sep or len(headers) >= _MAX_HEADERS or len(line) > _MAX_LINE:
            raise httpx.RemoteProtocolError(f"bad header line {line[:60]!r}", request=request)
        headers.append((name.strip(), value.strip()))
    status = int(parts[1])
    if 100 <= status < 200:  # an interim answer (none expected): the real one follows
        return await _read_head(reader, request)
    return status, parts[2] if len(parts) > 2 else b"", headers
