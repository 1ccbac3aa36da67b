"""Adapter giving the route tester screen what it needs from the app's backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flash_tui import present
from flash_tui.screens.route_tester import RouteTarget, TesterResponse

if TYPE_CHECKING:
    from flash_tui.app import FlashApp


class AppTester:
    """Targets from the app's manifest; requests through `Backend.invoke`."""

    def __init__(self, app: FlashApp) -> None:
        self.app = app

    def targets(self) -> list[RouteTarget]:
        """Routes and functions, deployed endpoints first."""
        return self.app.route_targets()

    async def send(self, target: RouteTarget, body: Any) -> TesterResponse:
        """Invoke through the engine and convert its result for display."""
        result = await self.app.backend.invoke(
            target.endpoint, target.function, target.method, target.path, body
        )
        status = present.field(result, "status", present.field(result, "status_code", "?"))
        ok = present.field(result, "ok")
        if ok is None:
            ok = isinstance(status, int) and status < 400
        headers = present.field(result, "headers") or {}
        body_out = present.field(result, "body", present.field(result, "result"))
        return TesterResponse(
            status=status,
            latency_ms=present.field(result, "latency_ms"),
            headers={str(k): str(v) for k, v in dict(headers).items()},
            body=body_out,
            ok=bool(ok),
        )

    def curl(self, target: RouteTarget, body: Any, reveal_key: bool) -> str:
        """A curl command for the request."""
        return self.app.backend.curl(
            target.endpoint, target.function, target.method, target.path, body, reveal_key
        )
