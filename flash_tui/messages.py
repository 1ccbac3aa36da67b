"""Messages the app's workers post to the UI thread (one place, as in Posting)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.message import Message

from engine.callgraph import CallGraph
from engine.diagnostics import Diagnostic
from engine.status import EndpointStatus


@dataclass
class ScanFinished(Message):
    """A (re)scan produced a manifest and diagnostics; `changed` are the files that triggered it."""

    manifest: Mapping[str, Any]
    diagnostics: Sequence[Diagnostic]
    changed: Sequence[Path] = field(default_factory=list)
    elapsed_ms: float = 0.0
    calls: CallGraph = field(default_factory=CallGraph)


@dataclass
class ScanFailed(Message):
    """The scan itself could not run (unreadable directory, engine missing)."""

    reason: str


@dataclass
class StatusUpdated(Message):
    """The engine reported the deployment status of every endpoint."""

    statuses: Sequence[EndpointStatus]
    # The target as reached by this refresh (a restarted local cloud has a new address).
    target: str | None = None


@dataclass
class HealthSampled(Message):
    """A health probe result for one endpoint."""

    endpoint: str
    ok: bool
    latency_ms: float | None
    # The URL probed: a sample of a previous incarnation of the endpoint is not its health.
    url: str | None = None
    # When it was taken and until when it says how the endpoint is (engine.health).
    at: float | None = None
    fresh_until: float | None = None


@dataclass
class OperationProgress(Message):
    """Progress of a long operation (build, deploy, undeploy)."""

    operation: str
    step: str
    done: int
    total: int | None
    # What the progress line says beside the bar ("mothership: 3/5 children ready").
    message: str = ""


@dataclass
class OperationFinished(Message):
    """A long operation ended; `error` is the reason when it failed."""

    operation: str
    ok: bool
    summary: str = ""
    error: str | None = None
    # The person said no at the confirmation, or cancelled before anything changed.
    cancelled: bool = False
    # Cancelled mid-way: `summary` says what was done and what was not started.
    interrupted: bool = False


@dataclass
class EngineUnavailable(Message):
    """The target could not be reached (cloud down, engine part missing)."""

    reason: str
