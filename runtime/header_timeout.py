"""A deadline for a request's headers on uvicorn servers (slowloris protection).

uvicorn bounds idle keep-alive connections but not a request whose headers never end: a
client that opens connections and sends one header line now and then holds each of them open
forever. The protocol classes made here start a timer when a connection opens and when a new
request begins, cancel it once the request's headers are complete, and close the connection
if it fires first. Bodies and responses are not bounded by it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string
from uvicorn.protocols.http import h11_impl

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "HEADER_TIMEOUT_ENV",
    "header_timeout_from_env",
    "header_timeout_protocol",
]

HEADER_TIMEOUT_ENV = "FLASH_HEADER_TIMEOUT"
DEFAULT_HEADER_TIMEOUT = 5.0


def header_timeout_from_env(environ: dict[str, str] | None = None) -> float:
    """`$FLASH_HEADER_TIMEOUT` in seconds (default 5); a bad value is a clear error."""
    raw = (os.environ if environ is None else environ).get(HEADER_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_HEADER_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{HEADER_TIMEOUT_ENV}={raw!r}: expected a number of seconds > 0")
    return value


class _HeaderDeadline:
    """The timer half shared by both protocol flavours (mixed in before the uvicorn class)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    _header_timer: asyncio.TimerHandle | None = None

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]


class _HttpToolsHooks(_HeaderDeadline):
    """httptools calls these parser callbacks at the start and end of a request's headers."""

    def on_message_begin(self) -> None:
        super().on_message_begin()  # type: ignore[misc]
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()  # type: ignore[misc]


class _H11Hooks(_HeaderDeadline):
    """h11 has no callbacks: after each batch of events, its state says where the request is."""

    conn: Any

    def handle_events(self) -> None:
        super().handle_events()  # type: ignore[misc]
        # h11 through uvicorn's module: runtime depends on uvicorn, not on its dependencies
        if self.conn.their_state is not h11_impl.h11.IDLE:
            self._disarm_header_timer()  # the request line and headers are in
        elif self.conn.trailing_data[0]:
            self._arm_header_timer()  # part of the next request is waiting


def header_timeout_protocol(http: str | type[Any] = "auto", seconds: float = 5.0) -> type[Any]:
    """uvicorn's HTTP protocol class `http` (a `Config(http=...)` value) with a header deadline.

    Pass the result as `uvicorn.Config(http=...)`.
    """
    if seconds <= 0:
        raise ValueError(f"header timeout must be > 0 seconds, not {seconds}")
    base = import_from_string(HTTP_PROTOCOLS.get(http, http)) if isinstance(http, str) else http
    hooks: type[_HeaderDeadline] = (
        _H11Hooks if issubclass(base, h11_impl.H11Protocol) else _HttpToolsHooks
    )
    if hooks is _HttpToolsHooks and not hasattr(base, "on_headers_complete"):
        raise ValueError(f"no header timeout for uvicorn protocol {base.__name__}")
    return type(f"HeaderTimeout{base.__name__}", (hooks, base), {"header_timeout": float(seconds)})
