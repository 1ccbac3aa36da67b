"""A small keep-alive HTTP/1.1 client for calls from one worker to another (plain `http://`).

Why not httpx on this path: an LB route calling a QB function reached only about 0.1x the
requests/s of calling the QB endpoint directly, and profiling the calling worker showed
httpx's async pool was most of it — per request a failed `import sniffio` (a sys.path search
when sniffio is absent), an O(connections) reassignment of the pool, anyio stream wrappers, and
keep-alive connections dropped above 16 idle ones, so at concurrency 64 most calls opened a
new TCP connection. This client keeps one idle list per origin on the event loop it runs on,
reuses connections for as long as the server keeps them open, and does nothing else.

Errors are raised as httpx's exception types (`ConnectError`, `ReadError`, `ReadTimeout`...)
so callers handle both clients alike; `https://` is left to httpx (see `runtime.calls`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

__all__ = ["ConnectionPool", "Response"]

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_MAX_HEAD = 64 * 1024
_timeout_scope = getattr(asyncio, "timeout", None)


class Response:
    """A complete response: status, lower-cased headers and body bytes."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not)."""
        return json.loads(self.content)


class ConnectionPool:
    """Keep-alive connections to `http://` origins, for use on one event loop."""

    def __init__(
        self,
        *,
        timeout: float,
        connect_timeout: float = 10.0,
        max_connections: int = 256,
        max_idle: int = 128,
    ) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.opened = 0  # connections opened so far: how well keep-alive works, for tests
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._closed = False

    @property
    def is_closed(self) -> bool:
        """Whether `aclose` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Close every idle connection; later requests fail."""
        self._closed = True
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, str]] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request (a JSON body when `json` is not None) and read the whole answer."""
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"ConnectionPool takes http:// URLs only, not {url!r}")
        host, port = parts.hostname, parts.port or 80
        target = parts.path or "/"
        query = parts.query
        if params:
            extra = urlencode(list(params.items()) if isinstance(params, Mapping) else params)
            query = f"{query}&{extra}" if query else extra
        if query:
            target = f"{target}?{query}"
        body = _dumps(json).encode() if json is not None else b""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
        lines.append(f"Content-Length: {len(body)}")
        if json is not None:
            lines.append("Content-Type: application/json")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        try:
            if _timeout_scope is None:  # Python 3.10
                return await asyncio.wait_for(
                    self._exchange((host, port), data, method == "HEAD"), self.timeout
                )
            # asyncio.timeout: no extra task per request, unlike wait_for before 3.12.
            async with _timeout_scope(self.timeout):
                return await self._exchange((host, port), data, method == "HEAD")
        except asyncio.TimeoutError as exc:
            message = f"no answer from {host}:{port} within {self.timeout:g}s"
            raise httpx.ReadTimeout(message) from exc

    async def _exchange(self, origin: tuple[str, int], data: bytes, head_only: bool) -> Response:
        slots = self._slots.get(origin)
        if slots is None:
            slots = self._slots[origin] = asyncio.Semaphore(self.max_connections)
        async with slots:
            # A reused connection the server closed while idle fails before any answer byte:
            # that request never reached the application, so it is sent once more, fresh.
            for attempt in range(2):
                conn = self._take_idle(origin)
                reused = conn is not None
                if conn is None:
                    conn = await self._open(origin)
                reader, writer = conn
                done = False
                try:
                    writer.write(data)
                    try:
                        head = await reader.readuntil(b"\r\n\r\n")
                    except asyncio.IncompleteReadError as exc:
                        if reused and not exc.partial and attempt == 0:
                            continue
                        raise
                    status, headers, keep = _parse_head(head)
                    content = await _read_body(reader, status, headers, head_only)
                    if content is None:  # delimited by the end of the connection
                        content, keep = await reader.read(), False
                    done = keep
                    return Response(status, headers, content)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    where = f"{origin[0]}:{origin[1]}"
                    raise httpx.ReadError(f"{where}: {type(exc).__name__}: {exc}") from exc
                except ValueError as exc:
                    raise httpx.RemoteProtocolError(f"{origin[0]}:{origin[1]}: {exc}") from exc
                finally:
                    # Anything but a complete keep-alive exchange (errors, cancellation by
                    # the timeout) leaves the connection in an unknown state: close it.
                    if (
                        done
                        and not self._closed
                        and len(self._idle.get(origin, ())) < self.max_idle
                    ):
                        self._idle.setdefault(origin, []).append(conn)
                    else:
                        writer.close()
        raise AssertionError("unreachable")  # the loop returns or raises

    def _take_idle(self, origin: tuple[str, int]) -> _Conn | None:
        conns = self._idle.get(origin)
        while conns:
            reader, writer = conns.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    async def _open(self, origin: tuple[str, int]) -> _Conn:
        try:
            conn = await asyncio.wait_for(
                asyncio.open_connection(origin[0], origin[1], limit=_MAX_HEAD),
                self.connect_timeout,
            )
        except asyncio.TimeoutError as exc:
            where = f"{origin[0]}:{origin[1]}"
            raise httpx.ConnectTimeout(f"cannot connect to {where}: timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {origin[0]}:{origin[1]}: {exc}") from exc
        self.opened += 1
        return conn


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    """Status, headers (lower-cased names) and keep-alive of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return status, headers, keep


async def _read_body(
    reader: asyncio.StreamReader, status: int, headers: dict[str, str], head_only: bool
) -> bytes | None:
    """The body as framed by the headers; None when it runs to the end of the connection."""
    if head_only or status in (204, 304) or 100 <= status < 200:
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = headers.get("content-length")
    if length is not None:
        return await reader.readexactly(int(length))
    return None
