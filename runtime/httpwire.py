"""A small keep-alive HTTP/1.1 client for calls from one worker to another (plain `http://`).

Why not httpx on this path: an LB route calling a QB function reached only about 0.06x the
requests/s of calling the QB endpoint directly through httpx, sniffio installed or not.
Profiling the calling worker shows httpcore's async pool matching every queued request against
every connection on each request (`_assign_requests_to_connections`: O(requests x
connections), millions of `is_idle` calls at 64 calls in flight) plus a socket readability
probe per connection. This client keeps one idle list per origin on the event loop it runs on,
reuses connections for as long as the server keeps them open, and does nothing else.

Answers are parsed by `httptools` (llhttp, the C parser our workers' uvicorn uses): status,
headers, chunked bodies and keep-alive rules. (On `h11`, pure Python, the calls served 31-48%
fewer requests/s.) Only what a response parser cannot know is decided here: a body with no
length that is not chunked ends with the connection, and a HEAD answer has none. Requests are
a few formatted lines; a CR, LF or NUL in them is refused, not sent.

Calls to a worker on this machine go over its Unix socket once an answer has named it
(`runtime.worker_socket`); the pool falls back to TCP when that socket cannot be reached.

Errors are raised as httpx's exception types (`ConnectError`, `ReadError`, `ReadTimeout`,
`RemoteProtocolError`...) so callers handle both clients alike; `https://` is left to httpx
(see `runtime.calls`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

import httptools
import httpx

from runtime.worker_socket import (
    FRAMES_HEADER,
    LOOPBACK_NAMES,
    SOCKET_HEADER,
    advertised_socket,
)

__all__ = ["ConnectionPool", "Response"]

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_READ_SIZE = 64 * 1024
_MAX_HEAD = 64 * 1024
_FORBIDDEN = frozenset("\r\n\0")
_MAX_HEADS = 256  # request heads kept per pool (endpoint x route x key)
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


class _Answer:
    """httptools' callbacks for one response: collects headers and body."""

    __slots__ = ("parser", "headers", "chunks", "head_size", "headers_done", "keep", "complete")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.head_size = 0
        self.headers_done = False
        self.keep = False
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value)
        if self.head_size > _MAX_HEAD:
            raise ValueError(f"response headers larger than {_MAX_HEAD} bytes")
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        seen = self.headers.get(key)
        self.headers[key] = text if seen is None else f"{seen}, {text}"  # a repeated header

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # Asked here, as uvicorn does: llhttp resets it once the message is complete.
        self.keep = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:  # 1xx: the real answer follows
            self.headers, self.chunks, self.head_size = {}, [], 0
            self.headers_done = False
            return
        self.complete = True


class _ClosedBeforeAnswer(Exception):
    """A reused connection ended before any byte of the answer: the request was not handled."""


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
        self.opened_unix = 0  # of which over a worker's Unix socket
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        # A loopback origin's Unix socket (`runtime.worker_socket`), and the header value last
        # seen from it (checked once per new value, not on every answer).
        self._unix: dict[tuple[str, int], str] = {}
        self._advertised: dict[tuple[str, int], str] = {}
        # The same for a queue-based worker's frame socket, and the origin of each base URL.
        self._frames: dict[tuple[str, int], str] = {}
        self._advertised_frames: dict[tuple[str, int], str] = {}
        self._origins: dict[str, tuple[str, int]] = {}
        self._heads: dict[tuple[Any, ...], tuple[tuple[str, int], bytes]] = {}
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
        # The request line and headers of a call repeat call after call (same endpoint, route
        # and key): built and checked once, only the body and its length change.
        key = (method, url, json is not None, tuple(headers.items()) if headers else ())
        cached = None if params else self._heads.get(key)
        if cached is None:
            cached = _head(method, url, params, json is not None, headers)
            if not params:
                if len(self._heads) >= _MAX_HEADS:
                    self._heads.clear()
                self._heads[key] = cached
        origin, head = cached
        body = _dumps(json).encode() if json is not None else b""
        data = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        host, port = origin
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
                keep = False
                try:
                    response, keep = await _send_and_receive(conn, data, head_only, reused)
                    advertised = response.headers.get(SOCKET_HEADER)
                    if advertised is not None and advertised != self._advertised.get(origin):
                        self._adopt_socket(origin, advertised)
                    frames = response.headers.get(FRAMES_HEADER)
                    # Only an answer to a key holder names it (a 401 may come from another
                    # project's worker now on this port).
                    if (
                        frames is not None
                        and 200 <= response.status_code < 300
                        and frames != self._advertised_frames.get(origin)
                    ):
                        self._adopt_frames(origin, frames)
                    return response
                except _ClosedBeforeAnswer as exc:
                    if attempt == 0:
                        continue
                    raise _read_error(origin, exc.__cause__ or exc) from exc
                except (OSError, asyncio.IncompleteReadError) as exc:
                    raise _read_error(origin, exc) from exc
                except (httptools.HttpParserError, ValueError) as exc:
                    raise httpx.RemoteProtocolError(f"{origin[0]}:{origin[1]}: {exc}") from exc
                finally:
                    # Anything but a complete keep-alive exchange (errors, cancellation by
                    # the timeout, a server that closes) leaves the connection unusable.
                    if (
                        keep
                        and not self._closed
                        and len(self._idle.get(origin, ())) < self.max_idle
                        # A TCP connection to a worker reached over its socket now: retired.
                        and (origin not in self._unix or not _is_tcp(conn))
                    ):
                        self._idle.setdefault(origin, []).append(conn)
                    else:
                        conn[1].close()
        raise AssertionError("unreachable")  # the loop returns or raises

    def _take_idle(self, origin: tuple[str, int]) -> _Conn | None:
        conns = self._idle.get(origin)
        while conns:
            reader, writer = conns.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    def _adopt_socket(self, origin: tuple[str, int], advertised: str) -> None:
        self._advertised[origin] = advertised
        path = advertised_socket(advertised) if origin[0] in LOOPBACK_NAMES else None
        if path is None:
            self._unix.pop(origin, None)
        else:
            self._unix[origin] = path

    def _adopt_frames(self, origin: tuple[str, int], advertised: str) -> None:
        self._advertised_frames[origin] = advertised
        path = advertised_socket(advertised) if origin[0] in LOOPBACK_NAMES else None
        if path is None:
            self._frames.pop(origin, None)
        else:
            self._frames[origin] = path

    def frame_socket(self, base_url: str) -> str | None:
        """The frame socket an answer from the worker at `base_url` named, if adopted."""
        if not self._frames:
            return None
        origin = self._origins.get(base_url)
        if origin is None:
            parts = urlsplit(base_url)
            origin = (parts.hostname or "", parts.port or 80)
            if len(self._origins) >= _MAX_HEADS:
                self._origins.clear()
            self._origins[base_url] = origin
        return self._frames.get(origin)

    def forget_frame_socket(self, base_url: str) -> None:
        """Stop using the frame socket of `base_url` until an answer names one again."""
        origin = self._origins.get(base_url)
        if origin is not None:
            self._frames.pop(origin, None)
            self._advertised_frames.pop(origin, None)

    async def _open(self, origin: tuple[str, int]) -> _Conn:
        path = self._unix.get(origin)
        if path is not None:
            try:
                conn = await asyncio.wait_for(
                    asyncio.open_unix_connection(path, limit=_READ_SIZE), self.connect_timeout
                )
            except (OSError, asyncio.TimeoutError):
                # Gone (the worker stopped or was replaced): TCP, whose answer names the new one.
                # Nothing was sent, so nothing can be handled twice.
                self._unix.pop(origin, None)
            else:
                self.opened += 1
                self.opened_unix += 1
                return conn
        try:
            conn = await asyncio.wait_for(
                asyncio.open_connection(origin[0], origin[1], limit=_READ_SIZE),
                self.connect_timeout,
            )
        except asyncio.TimeoutError as exc:
            where = f"{origin[0]}:{origin[1]}"
            raise httpx.ConnectTimeout(f"cannot connect to {where}: timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {origin[0]}:{origin[1]}: {exc}") from exc
        self.opened += 1
        return conn


def _head(
    method: str,
    url: str,
    params: Mapping[str, Any] | Sequence[tuple[str, str]] | None,
    has_json: bool,
    headers: Mapping[str, str] | None,
) -> tuple[tuple[str, int], bytes]:
    """(host, port) and the request line and headers up to Content-Length, which follows."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"ConnectionPool takes http:// URLs only, not {url!r}")
    target = parts.path or "/"
    query = parts.query
    if params:
        extra = urlencode(list(params.items()) if isinstance(params, Mapping) else params)
        query = f"{query}&{extra}" if query else extra
    if query:
        target = f"{target}?{query}"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    if has_json:
        lines.append("Content-Type: application/json")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    # A CR or LF in a header, the method or the URL would split the request: refuse it.
    if not _FORBIDDEN.isdisjoint("".join(lines)) or " " in method or " " in target:
        # Named, never shown: a header's value may be a key (a stray newline read from a file).
        bad = [line.split(":", 1)[0] for line in lines[1:] if not _FORBIDDEN.isdisjoint(line)]
        where = f"header {', '.join(bad)}" if bad else f"request line {method!r} {target!r:.100}"
        raise httpx.LocalProtocolError(f"invalid {where}: a CR or LF (or a space) would split it")
    head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
    return (parts.hostname, parts.port or 80), head


def _is_tcp(conn: _Conn) -> bool:
    return isinstance(conn[1].get_extra_info("peername"), tuple)


def _read_error(origin: tuple[str, int], exc: BaseException) -> httpx.ReadError:
    return httpx.ReadError(f"{origin[0]}:{origin[1]}: {type(exc).__name__}: {exc}")


async def _send_and_receive(
    conn: _Conn, data: bytes, head_only: bool, reused: bool
) -> tuple[Response, bool]:
    """Write the request, feed the answer to httptools until it is complete; (answer, keep)."""
    reader, writer = conn
    writer.write(data)
    answer = _Answer()
    answered = False  # any answer byte received
    while True:
        try:
            chunk = await reader.read(_READ_SIZE)
        except OSError as exc:  # e.g. reset by a server that closed the idle connection
            if reused and not answered:
                raise _ClosedBeforeAnswer() from exc
            raise
        if not chunk:
            if reused and not answered:
                raise _ClosedBeforeAnswer()
            # The end of the connection ends a body that has no length and is not chunked.
            headers = answer.headers
            if (
                answer.headers_done
                and "content-length" not in headers
                and "chunked" not in headers.get("transfer-encoding", "").lower()
            ):
                return _response(answer), False
            raise ValueError("the server closed the connection before the end of the answer")
        answered = True
        try:
            answer.parser.feed_data(chunk)
        except httptools.HttpParserUpgrade as exc:
            raise ValueError("the server switched protocols") from exc
        if answer.complete:
            return _response(answer), answer.keep
        if head_only and answer.headers_done:
            answer.chunks = []  # a HEAD answer has no body, whatever its headers say
            return _response(answer), False


def _response(answer: _Answer) -> Response:
    return Response(answer.parser.get_status_code(), answer.headers, b"".join(answer.chunks))
