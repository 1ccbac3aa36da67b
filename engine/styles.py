"""The Rich style of each status, drift, plan and severity word: one table, CLI and TUI."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.diagnostics import Severity
from engine.drift import DriftState
from engine.plan import PlanAction
from engine.status import Status

__all__ = ["DRIFT_STYLES", "PLAN_STYLES", "SEVERITY_STYLES", "STATUS_STYLES", "style_of"]

STATUS_STYLES: Mapping[Status, str] = {
    Status.HEALTHY: "bold green",
    Status.DEPLOYING: "yellow",
    Status.UNHEALTHY: "bold red",
    Status.FAILED: "bold red",
    Status.STOPPED: "dim",
    Status.NOT_DEPLOYED: "dim",
}

DRIFT_STYLES: Mapping[DriftState, str] = {
    "new": "cyan",
    "in_sync": "green",
    "drifted": "bold yellow",
    "orphaned": "magenta",
    "unparsable": "bold magenta",
    "unknown": "dim yellow",
}

PLAN_STYLES: Mapping[PlanAction, str] = {
    "create": "bold green",
    "update": "bold yellow",
    "delete": "bold red",
    "unchanged": "dim",
}

SEVERITY_STYLES: Mapping[Severity, str] = {
    "error": "bold red",
    "warning": "yellow",
    "info": "cyan",
}


def style_of(word: str | None, styles: Mapping[Any, str]) -> str:
    """The style of a word in one of the tables above; an unknown word is unstyled."""
    return styles.get(str(word or ""), "")
