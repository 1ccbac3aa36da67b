"""The route tester's extra headers reach the endpoint over real HTTP, next to its key."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.invoke import CallSpec, invoke
from engine.provider import EndpointTarget


class _EchoHeaders(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHeaders)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_extra_headers_are_sent_with_the_key(echo_url: str) -> None:
    target = EndpointTarget("api", echo_url, True, key="endpoint-key")
    call = CallSpec("api", True, method="POST", path="/echo", function="echo")
    result = await invoke(target, call, {"a": 1}, headers={"X-Trace": "abc"})
    assert result.ok and result.body["x-trace"] == "abc"
    assert result.body["authorization"] == "Bearer endpoint-key"
    plain = await invoke(target, call, {"a": 1})
    assert "x-trace" not in plain.body
    # The headers never show in the target's repr (they may hold a secret).
    with_extra = replace(target, extra_headers=(("X-Trace", "abc"),))
    assert with_extra.headers()["X-Trace"] == "abc" and "abc" not in repr(with_extra)
