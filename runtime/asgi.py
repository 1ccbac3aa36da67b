"""The one ASGI response helper the worker's pure-ASGI pieces share (auth, queue, startup)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["send_json"]


async def send_json(
    send: Any, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Send a complete response whose body is the JSON text `body`."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
