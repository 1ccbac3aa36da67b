"""Bearer-key authentication for worker endpoints, as a pure ASGI middleware.

Every route except the health probe (`/ping`) needs `Authorization: Bearer <key>`, the key
being the worker's `FLASH_ENDPOINT_KEY`. Pure ASGI (not Starlette's BaseHTTPMiddleware) because
it runs on every request and must cost next to nothing; the comparison is constant-time so the
key cannot be guessed byte by byte from response timings. The key is never logged or echoed.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from runtime.asgi import send_json

__all__ = ["ENDPOINT_KEY_ENV", "BearerAuthMiddleware", "check_bearer", "endpoint_key"]

ENDPOINT_KEY_ENV = "FLASH_ENDPOINT_KEY"
PUBLIC_PATHS = frozenset({"/ping"})

_UNAUTHORIZED = b'{"error":"unauthorized: send Authorization: Bearer <endpoint key>"}'


def endpoint_key(environ: Mapping[str, str] | None = None) -> str | None:
    """The endpoint key from the environment (None when unset or blank)."""
    value = (environ if environ is not None else os.environ).get(ENDPOINT_KEY_ENV, "")
    return value.strip() or None


def check_bearer(header: bytes | None, key: bytes) -> bool:
    """True when an Authorization header value carries exactly `key` as a Bearer token."""
    if not header:
        return False
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(token.strip(), key)


class BearerAuthMiddleware:
    """Rejects requests without the right Bearer key: HTTP with 401 (JSON), websockets with
    a close before the handshake; lifespan passes through, any other scope type is refused.
    `answer_headers` go on authenticated HTTP answers only (never on `/ping` or a 401): they may
    name what only a key holder should learn, such as a worker's frame socket."""

    def __init__(
        self,
        app: Any,
        key: str,
        public_paths: Iterable[str] = PUBLIC_PATHS,
        unauthorized: bytes = _UNAUTHORIZED,
        answer_headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        if not key:
            raise ValueError("BearerAuthMiddleware needs a non-empty key")
        self.app = app
        self._key = key.encode()
        self._public = frozenset(public_paths)
        self._unauthorized = unauthorized
        self._answer_headers = list(answer_headers)

    def _authorized(self, scope: dict[str, Any]) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return check_bearer(value, self._key)
        return False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan" or (kind == "http" and scope["path"] in self._public):
            await self.app(scope, receive, send)
            return
        if kind in ("http", "websocket") and self._authorized(scope):
            if kind == "http" and self._answer_headers:
                send = self._adding_headers(send)
            await self.app(scope, receive, send)
            return
        if kind == "http":
            await send_json(send, 401, self._unauthorized, [(b"www-authenticate", b"Bearer")])
        elif kind == "websocket":
            await receive()  # websocket.connect; a close before accept refuses the handshake
            await send({"type": "websocket.close", "code": 1008})
        # A scope type this middleware does not know cannot be authenticated: never forwarded.

    def _adding_headers(self, send: Any) -> Any:
        extra = self._answer_headers

        async def adding(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        return adding
