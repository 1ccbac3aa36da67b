"""One `send` per response on uvicorn servers: a response's writes in one loop turn go out as one.

uvicorn writes a response's status line and headers, then its body, as two `transport.write`
calls; with TCP_NODELAY (which workers need, see `runtime.worker`) each is its own `send(2)` and
its own packet. On loopback the sender pays for the receiver's TCP processing too, and the
receiver wakes up once per packet: for the small JSON answers of a worker that is about a third
of a request's kernel time, on both sides. The protocol classes made here hold what a
connection writes during one turn of the event loop and send it as one buffer at the end of
that turn (`call_soon`), so a response written in one go leaves as one packet. Nothing waits
longer than the current turn: a streamed body still goes out as it is produced, and `close`
sends what is held first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

__all__ = ["coalescing_protocol"]


class _CoalescingTransport:
    """A connection's transport that sends the writes of one loop turn together."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hold `data` until the end of this loop turn (with whatever else is written in it)."""
        if not data:
            return
        if self._held is None:
            self._held = [bytes(data)]
            self._loop.call_soon(self._release)
        else:
            self._held.append(bytes(data))

    def _release(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        """Send what is held, then close (the transport flushes its buffer before closing)."""
        self._release()
        self._transport.close()

    def write_eof(self) -> None:
        """Send what is held, then half-close."""
        self._release()
        self._transport.write_eof()

    def abort(self) -> None:
        """Drop what is held and close at once."""
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, pause_reading...) is the transport's.
        return getattr(self._transport, name)


class _CoalescedWrites:
    """Mixed in before a uvicorn protocol class: its transport coalesces writes."""

    transport: Any

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        # Flow control (pause/resume reading) keeps the real transport uvicorn gave it.
        self.transport = _CoalescingTransport(transport, asyncio.get_running_loop())


def coalescing_protocol(http: str | type[Any] = "auto") -> type[Any]:
    """uvicorn's HTTP protocol class `http` (a `Config(http=...)` value) with coalesced writes."""
    base = import_from_string(HTTP_PROTOCOLS.get(http, http)) if isinstance(http, str) else http
    return type(f"Coalescing{base.__name__}", (_CoalescedWrites, base), {})
