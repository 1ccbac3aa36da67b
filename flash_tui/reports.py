"""How a long operation's outcome reads: the OperationFinished a person is notified with; and
the line printed on quitting while endpoints keep running."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from engine.build import BuildResult
from engine.operations import DeployReport
from engine.provider import EndpointResult
from engine.status import RUNNING, EndpointStatus
from flash_tui.backend import BackendError
from flash_tui.messages import OperationFinished


@dataclass
class Confirmed:
    """When the person confirmed an operation: its duration counts from there, not from when
    the dialog opened (reading a plan is not deploying)."""

    at: float | None = None

    def mark(self, confirmed: bool) -> bool:
        """Note the moment of a confirmation; returns `confirmed`."""
        if confirmed:
            self.at = time.perf_counter()
        return confirmed

    def elapsed_ms(self, engine_ms: float | None) -> float | None:
        """Since the confirmation; the engine's own figure when nothing was confirmed."""
        return (time.perf_counter() - self.at) * 1000 if self.at is not None else engine_ms


def failed(operation: str, exc: Exception) -> OperationFinished:
    """An operation that raised: the backend's own words, or the exception's type and text."""
    error = str(exc) if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
    return OperationFinished(operation, False, error=error)


def built(result: BuildResult | None) -> OperationFinished:
    """A finished build: its id and how many handlers it holds (None: it was cancelled)."""
    if result is None:
        return OperationFinished("build", True, cancelled=True)
    return OperationFinished(
        "build", True, f"build {result.build_id[:12]}: {len(result.handlers)} handlers"
    )


def deployed(operation: str, report: DeployReport, confirmed: Confirmed) -> OperationFinished:
    """Turn an engine DeployReport (deploy or undeploy) into the notification a person reads."""
    if report.cancelled:
        return OperationFinished(operation, True, cancelled=True)
    if report.interrupted:
        return OperationFinished(operation, True, report.interrupted_summary(), interrupted=True)
    failures = report.outcome.failed() if report.outcome is not None else []
    if failures:
        reasons = "; ".join(f"{f.name}: {f.error or 'failed'}" for f in failures)
        return OperationFinished(operation, False, error=f"{len(failures)} failed — {reasons}")
    plan = report.plan
    counts = plan.counts()
    if operation == "undeploy":
        summary = f"{counts['delete']} endpoint(s) undeployed"
    elif not plan.has_changes:
        summary = "nothing to do: everything is up to date"
    else:
        summary = ", ".join(f"{counts[a]} {a}d" for a in ("create", "update", "delete"))
    elapsed = confirmed.elapsed_ms(report.elapsed_ms)
    if elapsed:
        summary += f" in {elapsed / 1000:.1f}s"
    return OperationFinished(operation, True, summary)


def restarted(name: str, result: EndpointResult) -> OperationFinished:
    """A restart's outcome: the endpoint answers again, or why not."""
    if result.ok:
        elapsed = f" in {result.elapsed_ms / 1000:.1f}s" if result.elapsed_ms else ""
        return OperationFinished("restart", True, f"{name} restarted{elapsed}")
    return OperationFinished("restart", False, error=f"{name}: {result.error or 'failed'}")


def still_running(
    statuses: Iterable[EndpointStatus], target: str, env: str | None = None
) -> str | None:
    """`3 endpoints keep running on the local cloud — ...` (None when nothing runs); `env`:
    the environment they are of (None: the target's default, direct mode on the local cloud)."""
    running = sum(1 for status in statuses if status.status in RUNNING)
    if not running:
        return None
    where = "the local cloud" if target == "local" else target
    how = "flash-tui undeploy --all" + ("" if target == "local" else f" --target {target}")
    how += f" --env {env}" if env else ""
    count = f"{running} endpoint" + ("s keep" if running != 1 else " keeps")
    return f"{count} running on {where} — `{how}` stops them"
