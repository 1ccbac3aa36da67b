"""Watch-deploy: on every save, redeploy exactly the endpoints whose code or config changed.

The loop `flash-tui dev` runs and the TUI's `w` toggles. Each batch of saved files is scanned;
a scan error (a syntax error, a bad config) is reported with its file:line and nothing is
deployed, so what runs stays the last good version. Otherwise it is one `Engine.deploy` with no
confirmation: the plan already knows which endpoints changed (config hash, code hash), and
only those are created or updated; unchanged endpoints keep their workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.operation_results import OpError, OpEvent
from engine.operations import Engine
from engine.watch import watch_project

__all__ = ["Reload", "WatchDeploy"]


@dataclass(frozen=True)
class Reload:
    """What one save did: the endpoints redeployed (and what else reloaded), or why not."""

    started: float
    redeployed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    error: str | None = None
    plan_summary: str = ""
    also: tuple[str, ...] = ()
    # Where each endpoint the deploy updated answers now (its new worker's: blue/green).
    urls: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the deploy went through (there may have been nothing to do)."""
        return self.error is None

    @property
    def changed(self) -> bool:
        """Whether anything was redeployed, removed or reloaded."""
        return bool(self.redeployed or self.removed or self.also)

    def with_also(self, *names: str) -> Reload:
        """The same reload with more things reloaded (the project's app)."""
        return Reload(
            self.started,
            self.redeployed,
            self.removed,
            self.files,
            self.error,
            self.plan_summary,
            (*self.also, *names),
            self.urls,
        )

    def line(self, now: float | None = None, verb: str = "reloaded") -> str:
        """`reloaded gpu_worker, main.py in 0.8 s`, or the error, for one line of output."""
        elapsed = (time.perf_counter() if now is None else now) - self.started
        if self.error is not None:
            return f"not reloaded ({', '.join(self.files) or 'project'}): {self.error}"
        names = [*self.redeployed, *self.also]
        if self.removed:
            names += [f"-{n}" for n in self.removed]
        if not names:
            return f"no endpoint changed ({', '.join(self.files) or 'everything up to date'})"
        return f"{verb} {', '.join(names)} in {elapsed:.1f} s"


class WatchDeploy:
    """Deploy the changed endpoints of `engine`'s project on every save."""

    def __init__(
        self,
        engine: Engine,
        on_reload: Callable[[Reload], Awaitable[None]],
        *,
        on_event: Callable[[OpEvent], None] | None = None,
    ) -> None:
        self.engine = engine
        self._on_reload = on_reload
        self._on_event = on_event
        self._lock = asyncio.Lock()

    async def deploy_changes(self, files: Sequence[Path] = ()) -> Reload:
        """Scan and deploy what changed; scan errors and failed endpoints come back as
        `Reload.error` (nothing raised), with the last good version left running."""
        started = time.perf_counter()
        names = tuple(self._relative(p) for p in files)
        summary = ""

        def on_event(event: OpEvent) -> None:
            nonlocal summary
            if event.step == "plan" and event.message:
                summary = event.message
            if self._on_event is not None:
                self._on_event(event)

        async with self._lock:
            try:
                report = await self.engine.deploy(confirm=None, on_event=on_event)
            except OpError as exc:
                return Reload(started, files=names, error=str(exc), plan_summary=summary)
        plan = report.plan
        redeployed = tuple(plan.names("create")) + tuple(plan.names("update"))
        failed = report.outcome.failed() if report.outcome is not None else []
        error = None
        if failed:
            error = "; ".join(f"{r.name}: {(r.error or 'failed').splitlines()[0]}" for r in failed)
        removed = tuple(plan.names("delete"))
        results = report.outcome.results if report.outcome is not None else ()
        # Only updates: a created endpoint has a new key, which the session asks for.
        urls = tuple((r.name, r.url) for r in results if r.ok and r.url and r.action == "update")
        return Reload(started, redeployed, removed, names, error, summary, urls=urls)

    def _relative(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.engine.root))
        except ValueError:
            return str(path)

    async def run(self, stop: asyncio.Event, *, force_polling: bool | None = None) -> None:
        """Deploy on every batch of saved files until `stop` is set."""
        async for batch in watch_project(
            self.engine.root, stop_event=stop, force_polling=force_polling
        ):
            reload = await self.deploy_changes(batch)
            await self._on_reload(reload)
