"""Scoped credentials: a token that manages one app's endpoints and one environment's manifest.

A mothership runs user code, so it must never hold the service's token. It gets
`scoped_token(master, app, env)`: `<env>:<HMAC-SHA256(master, app, env)>`, derived, not
stored, so the service recognises it after a restart without a table of secrets, and nobody
without the master token can make one. `ScopedAuth` lets such a token through to these routes
of its own app only (everything else gets the master token's 401):

    GET    /v1/apps/{app}/endpoints[/{name}[/key]]
    POST   /v1/apps/{app}/deploy | /v1/apps/{app}/undeploy
    *      /v1/apps/{app}/environments/{env}/manifest[/resources/{name}]   (its env only)

A request it lets through carries `scope["flash_scope"] = (app, env)`; the service then
holds deploys to the build the app already has (no file paths from a worker) and keeps a
scoped caller from replacing or removing a mothership.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

__all__ = ["SCOPE_KEY", "ScopedAuth", "scoped_token", "verify_scoped"]

SCOPE_KEY = "flash_scope"
_APP_ROUTE = re.compile(
    r"^/v1/apps/(?P<app>[^/]+)/(?:"
    r"endpoints(?:/[^/]+(?:/key)?)?"
    r"|deploy|undeploy"
    r"|environments/(?P<env>[^/]+)/manifest(?:/resources/[^/]+)?"
    r")$"
)
_ENDPOINT_ROUTE = re.compile(r"^/v1/apps/[^/]+/endpoints")


def _mac(master: str, app: str, environment: str) -> str:
    message = f"flash-scope\0{app}\0{environment}".encode()
    return hmac.new(master.encode(), message, hashlib.sha256).hexdigest()


def scoped_token(master: str, app: str, environment: str) -> str:
    """The credential of `app`'s environment `environment` (keep it out of any output)."""
    return f"{environment}:{_mac(master, app, environment)}"


def verify_scoped(master: str, token: str, app: str) -> str | None:
    """The environment `token` is scoped to when it is valid for `app`, else None."""
    environment, sep, mac = token.partition(":")
    if not sep or not environment or not master:
        return None
    if not hmac.compare_digest(mac.encode(), _mac(master, app, environment).encode()):
        return None
    return environment


def _bearer(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class ScopedAuth:
    """Routes a request with a valid scoped token to `app`, any other to `fallback` (the
    master token's middleware)."""

    def __init__(self, app: Any, fallback: Any, master: str) -> None:
        self.app = app
        self.fallback = fallback
        self._master = master

    def _scope_of(self, scope: dict[str, Any]) -> tuple[str, str] | None:
        if scope["type"] != "http":
            return None
        token = _bearer(scope)
        if not token or ":" not in token:
            return None
        match = _APP_ROUTE.match(scope["path"])
        if match is None:
            return None
        app = match["app"]
        environment = verify_scoped(self._master, token, app)
        if environment is None:
            return None
        if match["env"] is not None and match["env"] != environment:
            return None
        if _ENDPOINT_ROUTE.match(scope["path"]) and scope["method"] != "GET":
            return None
        return app, environment

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        granted = self._scope_of(scope)
        if granted is None:
            await self.fallback(scope, receive, send)
            return
        await self.app({**scope, SCOPE_KEY: granted}, receive, send)
