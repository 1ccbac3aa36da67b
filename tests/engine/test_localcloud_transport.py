"""The local cloud client's HTTP/1.1 transport against real sockets on 127.0.0.1: framing
(Content-Length, chunked, end of connection), streaming, connection reuse, and httpx's errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from engine.localcloud.transport import LoopbackTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _Server:
    """A raw HTTP server on a free port: `handler` answers each connection; `connections`
    counts them and `requests` holds every request head and body read by `read_request`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _Server:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.requests.append((head, body))
        return head, body


def _answer(body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@contextlib.asynccontextmanager
async def _client(server: _Server, **kwargs: object) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.url, transport=LoopbackTransport(), trust_env=False, **kwargs
    ) as client:
        yield client


async def test_bodies_framed_by_length_chunks_or_the_end_of_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await server.read_request(reader)
            if b"GET /length " in head:
                writer.write(_answer(b'{"kind": "length"}'))
            elif b"GET /chunked " in head:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
                )
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
                await writer.drain()
                return
            await writer.drain()

    async with _Server(handler) as server:
        async with _client(server) as client:
            assert (await client.get("/length")).json() == {"kind": "length"}
            assert (await client.get("/chunked")).text == "hello, world"
            assert (await client.get("/eof")).text == "until the end"
            # One connection served the framed answers; the last one ended it.
            assert server.connections == 1


async def test_post_body_and_query_reach_the_server() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _head, body = await server.read_request(reader)
        writer.write(_answer(body))
        await writer.drain()

    async with _Server(handler) as server:
        async with _client(server, headers={"Authorization": "Bearer t"}) as client:
            answer = await client.post("/v1/x", params={"lines": 5}, json={"a": [1, 2]})
        head, body = server.requests[0]
        assert head.startswith(b"POST /v1/x?lines=5 HTTP/1.1\r\n")
        assert b"\r\nAuthorization: Bearer t\r\n" in head
        assert json.loads(body) == {"a": [1, 2]}
        assert answer.json() == {"a": [1, 2]}


async def test_a_streamed_answer_arrives_as_it_is_written() -> None:
    first_read = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"4\r\none\n\r\n")
        await writer.drain()
        await first_read.wait()  # the second line exists only once the first was read
        writer.write(b"4\r\ntwo\n\r\n0\r\n\r\n")
        await writer.drain()

    async with _Server(handler) as server:
        async with _client(server) as client:
            lines = []
            async with client.stream("GET", "/follow", timeout=None) as response:
                async for line in response.aiter_lines():
                    if line:
                        lines.append(line)
                        first_read.set()
        assert lines == ["one", "two"]


async def test_a_connection_closed_while_idle_is_replaced() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(_answer(b"ok"))  # says nothing of closing, then closes
        await writer.drain()

    async with _Server(handler) as server:
        async with _client(server) as client:
            assert (await client.get("/a")).text == "ok"
            assert (await client.get("/b")).text == "ok"
        assert server.connections == 2
        assert len(server.requests) == 2


async def test_errors_are_httpx_errors() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await asyncio.Event().wait()  # never answers

    async with _Server(silent) as server:
        async with _client(server, timeout=httpx.Timeout(5.0, read=0.2)) as client:
            with pytest.raises(httpx.ReadTimeout, match="timed out after 0.2 s"):
                await client.get("/slow")

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)

    async with _Server(hang_up) as server:
        async with _client(server) as client:
            with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
                await client.get("/")

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    async with _Server(garbage) as server:
        async with _client(server) as client:
            with pytest.raises(httpx.RemoteProtocolError, match="illegal status line"):
                await client.get("/")

    port = server.port  # closed now: nothing listens there
    async with httpx.AsyncClient(transport=LoopbackTransport(), trust_env=False) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.get(f"https://127.0.0.1:{port}/")


async def test_an_answer_cut_short_on_a_kept_connection_is_an_error_not_a_resend() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(_answer(b"first"))
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await writer.drain()
        await asyncio.sleep(0.05)  # the client reads the part; then a reset (RST), not a FIN
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with _Server(cut) as server:
        async with _client(server) as client:
            assert (await client.post("/deploy", content=b"one")).text == "first"
            with pytest.raises(httpx.ReadError):
                await client.post("/deploy", content=b"two")
        # The second POST reached the service once: a partial answer is never sent again.
        assert [body for _, body in server.requests] == [b"one", b"two"]
        assert server.connections == 1
