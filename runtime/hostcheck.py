"""Host header allow-list for loopback servers (workers and the local cloud), as pure ASGI.

A server on 127.0.0.1 is still reachable from a web page through DNS rebinding: the page's
own name is re-pointed at 127.0.0.1 and the browser sends `Host: <that name>`. Answering only
`Host: 127.0.0.1` and `Host: localhost` (with an optional port) closes that door. The refused
value is never echoed back: it is attacker-controlled text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runtime.asgi import send_json

__all__ = ["LOOPBACK_HOSTS", "LoopbackHostMiddleware", "host_allowed"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
_REFUSED = b'{"error":"invalid Host header: this server answers only 127.0.0.1 and localhost"}'
_MAX_PORT_DIGITS = 5


def host_allowed(value: bytes | None, allowed: Iterable[str] = LOOPBACK_HOSTS) -> bool:
    """True when a Host header value is one of `allowed`, with an optional numeric port."""
    if not value:
        return False
    try:
        text = value.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return False
    if text.startswith("["):  # an IPv6 literal: "[::1]" or "[::1]:8080"
        end = text.find("]")
        if end < 0:
            return False
        name, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            return False
        port = rest[1:] if rest else None
    else:
        name, sep, port_text = text.partition(":")
        port = port_text if sep else None
    if port is not None and not (port.isdigit() and len(port) <= _MAX_PORT_DIGITS):
        return False
    return name in allowed


class LoopbackHostMiddleware:
    """Refuses HTTP requests (400) and websockets (close) whose Host is not allowed."""

    def __init__(
        self, app: Any, allowed: Iterable[str] = LOOPBACK_HOSTS, refused: bytes = _REFUSED
    ) -> None:
        self.app = app
        self._allowed = frozenset(h.lower() for h in allowed)
        self._refused = refused

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            hosts = [value for name, value in scope["headers"] if name == b"host"]
            # Two Host headers are ambiguous (a proxy may route on the other one): refused.
            if len(hosts) != 1 or not host_allowed(hosts[0], self._allowed):
                if scope["type"] == "http":
                    await send_json(send, 400, self._refused)
                else:
                    await receive()  # websocket.connect
                    await send({"type": "websocket.close", "code": 1008})
                return
        await self.app(scope, receive, send)
