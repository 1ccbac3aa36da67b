"""Adapter giving the route tester screen what it needs from the app's backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
        """Invoke through the engine and convert its InvokeResult for display."""
        result = await self.app.backend.invoke(target.spec, body)
        shown = result.body if result.call.is_load_balanced else result.result
        if result.error and shown is None:
            shown = {"error": result.error}
        status: int | str = result.status_code or "error"
        job = result.job_status
        if job and job != "COMPLETED":
            # A queue job answers HTTP 200 whatever became of it: its status is the news.
            status = str(job)
        headers = {str(k): str(v) for k, v in result.headers.items()}
        if job:
            headers.setdefault("job status", str(job))
        return TesterResponse(
            status=status,
            latency_ms=result.latency_ms,
            headers=headers,
            body=shown,
            ok=result.ok,
            remote_error=result.remote_error,
        )

    async def curl(self, target: RouteTarget, body: Any, reveal_key: bool) -> str:
        """A curl command for the request (key redacted unless asked)."""
        return await self.app.backend.curl(target.spec, body, reveal_key)
