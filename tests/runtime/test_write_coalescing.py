"""Coalesced response writes (`runtime.write_coalescing`) on a real uvicorn server, over TCP."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from worker_harness import serve_asgi

from runtime.write_coalescing import coalescing_protocol

DEADLINE = 10.0


class _CountingTransport:
    """The real transport, counting the writes that reach it (what becomes a send(2) each)."""

    def __init__(self, transport: Any, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@contextmanager
def _serve(app: Any, http: str) -> Iterator[tuple[int, list[bytes]]]:
    """Serve `app` on the coalescing protocol in a thread; yields (port, real writes)."""
    writes: list[bytes] = []

    class Counted(coalescing_protocol(http)):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(_CountingTransport(transport, writes))

    with serve_asgi(app, lifespan="off", http=Counted) as url:
        yield int(url.rsplit(":", 1)[1]), writes


def _request(port: int, path: str, *, close: bool = False) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    extra = "Connection: close\r\n" if close else ""
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
    return conn


def _read_until(conn: socket.socket, marker: bytes) -> bytes:
    data = b""
    end = time.monotonic() + DEADLINE
    while marker not in data:
        assert time.monotonic() < end, f"no {marker!r} within {DEADLINE}s; got {data!r}"
        chunk = conn.recv(65536)
        assert chunk, f"connection closed before {marker!r}; got {data!r}"
        data += chunk
    return data


async def _json_app(scope: dict, receive: Any, send: Any) -> None:
    body = b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_response_leaves_in_one_write(http: str) -> None:
    with _serve(_json_app, http) as (port, writes):
        conn = _request(port, "/")
        with conn:
            data = _read_until(conn, b'{"ok":true}')
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")
            # The same keep-alive connection: the second response is one write too.
            conn.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            again = _read_until(conn, b'{"ok":true}')
            assert again.startswith(b"HTTP/1.1 200 OK\r\n")
        assert len(writes) == 2
        assert all(w.startswith(b"HTTP/1.1 200 OK") and w.endswith(b'{"ok":true}') for w in writes)


def test_a_streamed_body_is_not_held_back() -> None:
    """A part written before the app waits reaches the client while the app still waits."""
    gate = threading.Event()

    async def streaming(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first;", "more_body": True})
        await asyncio.to_thread(gate.wait, DEADLINE)
        await send({"type": "http.response.body", "body": b"second;"})

    with _serve(streaming, "httptools") as (port, _writes):
        conn = _request(port, "/")
        with conn:
            try:
                seen = _read_until(conn, b"first;")
            finally:
                gate.set()
            assert b"second;" not in seen
            _read_until(conn, b"0\r\n\r\n")  # the chunked body's end


def test_closing_sends_what_is_held_first() -> None:
    with _serve(_json_app, "httptools") as (port, writes):
        conn = _request(port, "/", close=True)
        with conn:
            data = b""
            end = time.monotonic() + DEADLINE
            while chunk := conn.recv(65536):  # until the server closes the connection
                assert time.monotonic() < end
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b'{"ok":true}')
        assert len(writes) == 1
