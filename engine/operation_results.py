"""What the engine's operations give back: progress (`OpEvent`), failure (`OpError`) and the
report of a deploy or undeploy (`DeployReport`). `engine.operations.Engine` produces them; the
callbacks an operation takes (`OnEvent`, `Confirm`) and its `emitter` live here with them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from engine.mothership import ChildState
from engine.plan import Plan
from engine.provider import NOT_STARTED, DeployOutcome

__all__ = ["Confirm", "DeployReport", "Emit", "OnEvent", "OpError", "OpEvent", "emitter"]


class OpError(Exception):
    """An operation could not be done; the message is for a person and holds no secret."""


@dataclass(frozen=True)
class OpEvent:
    """Progress of an operation.

    `op`: plan/deploy/undeploy; `step`: scan, build, envs, upload, plan, confirm, endpoint, done;
    `done`/`total` for progress bars; `name` for per-endpoint steps. The rest is set by the
    steps that have it: `build_step` (one step inside a build), `action`/`state`/`elapsed_ms`
    (an endpoint's progress, as the provider reports it), `ok` (the `done` of a deploy).
    """

    op: str
    step: str
    message: str = ""
    name: str | None = None
    done: int | None = None
    total: int | None = None
    build_step: str | None = None
    action: str | None = None
    state: str | None = None
    elapsed_ms: float | None = None
    ok: bool | None = None


OnEvent = Callable[[OpEvent], None]
# An operation's progress as it says it: `emit(step, message, **OpEvent fields)`.
Emit = Callable[..., None]
# Asked once the plan is known and before anything changes (the CLI prompts, the TUI a dialog).
Confirm = Callable[[Plan], Awaitable[bool]]


def emitter(op: str, on_event: OnEvent | None) -> Emit:
    """An `Emit` that hands each step of `op` to `on_event` as an `OpEvent` (or drops it)."""

    def emit(step: str, message: str = "", **kwargs: Any) -> None:
        if on_event is not None:
            on_event(OpEvent(op, step, message, **kwargs))

    return emit


@dataclass
class DeployReport:
    """What a deploy (or undeploy) did."""

    plan: Plan
    outcome: DeployOutcome | None = None
    cancelled: bool = False
    built: bool = False
    build_id: str | None = None
    elapsed_ms: float = 0.0
    # Said on the way, changed nothing (e.g. system dependencies missing on this machine).
    warnings: tuple[str, ...] = ()
    # Through a mothership: each child's provisioning as it recorded it.
    children: dict[str, ChildState] | None = None

    @property
    def ok(self) -> bool:
        """True when nothing failed (a cancelled or empty operation is ok), a mothership's
        children included."""
        children = (self.children or {}).values()
        return (self.outcome is None or self.outcome.ok) and all(
            c.status != "failed" for c in children
        )

    @property
    def interrupted(self) -> bool:
        """Cancelled while deploying: some endpoints may be deployed, the rest not started."""
        return self.outcome is not None and self.outcome.cancelled

    def not_started(self) -> list[str]:
        """The endpoints a cancelled deploy left as they were (the next plan shows them)."""
        if self.outcome is None or not self.outcome.cancelled:
            return []
        return [r.name for r in self.outcome.results if r.error == NOT_STARTED]

    def interrupted_summary(self) -> str:
        """`alpha created; beta, gamma not started — deploy again for the rest`: how a
        cancelled deploy reads, in the CLI and the TUI alike."""
        left = self.not_started()
        results = self.outcome.results if self.outcome is not None else ()
        done = [
            f"{r.name} {r.action}d" if r.ok else f"{r.name} failed"
            for r in results
            if r.name not in left and r.action != "unchanged"
        ]
        parts = [", ".join(done)] if done else []
        if left:
            parts.append(f"{', '.join(sorted(left))} not started")
        return "; ".join(parts) + " — deploy again for the rest"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the `--json` output of deploy and undeploy)."""
        return {
            "ok": self.ok,
            "cancelled": self.cancelled,
            "interrupted": self.interrupted,
            "built": self.built,
            "build_id": self.build_id,
            "plan": self.plan.to_dict(),
            "results": [r.to_dict() for r in self.outcome.results] if self.outcome else [],
            "elapsed_ms": self.elapsed_ms,
            **({"warnings": list(self.warnings)} if self.warnings else {}),
            **(
                {"children": {n: asdict(c) for n, c in sorted(self.children.items())}}
                if self.children is not None
                else {}
            ),
        }
