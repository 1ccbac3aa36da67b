"""Endpoint status: the one list of status words, and an endpoint's status as `status` reports it.

The local cloud stores an endpoint's status as one of these words (its SQLite column holds the
string value); `not_deployed` is the engine's word for an endpoint only in code. An endpoint is
*running* when its worker should be up (the supervisor keeps it so): deploying, healthy or
unhealthy. A live probe turns a running endpoint's stored status into what the probe saw.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the provider and health modules use these words too
    from engine.drift import Drift, FieldDiff
    from engine.health import HealthSample
    from engine.provider import DeployedEndpoint

__all__ = ["DEPLOYED", "RUNNING", "EndpointStatus", "Status", "endpoint_status"]


class Status(StrEnum):
    """Every status an endpoint can have (the local cloud sets all but `not_deployed`)."""

    NOT_DEPLOYED = "not_deployed"
    DEPLOYING = "deploying"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    FAILED = "failed"
    STOPPED = "stopped"


# Statuses whose worker should be running (and so answers probes, or soon will).
RUNNING: frozenset[str] = frozenset({Status.DEPLOYING, Status.HEALTHY, Status.UNHEALTHY})
# Statuses of an endpoint the target knows about, whatever its state.
DEPLOYED: frozenset[str] = frozenset(Status) - {Status.NOT_DEPLOYED}


@dataclass
class EndpointStatus:
    """One endpoint as `status` reports it (in code, deployed, or both)."""

    name: str
    resource_type: str | None
    status: str
    drift: str
    drift_fields: tuple[FieldDiff, ...] = ()
    unresolved: list[str] = field(default_factory=list)
    drift_reason: str = ""
    url: str | None = None
    pid: int | None = None
    restarts: int = 0
    health: HealthSample | None = None
    is_load_balanced: bool = False
    in_code: bool = False
    deployed: bool = False
    build_id: str | None = None
    started_at: float | None = None
    last_error: str | None = None
    # `endpoint` (direct mode), `mothership` or `child`; a child's provisioning as its
    # mothership recorded it (`provisioning`, `deployed`, `updated`, `failed`) and its error.
    role: str = "endpoint"
    provisioning: str | None = None
    provisioning_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `status --json` object of this endpoint."""
        return {
            "name": self.name,
            "resource_type": self.resource_type,
            "status": self.status,
            "drift": self.drift,
            "drift_fields": [f.to_dict() for f in self.drift_fields],
            "unresolved": self.unresolved,
            "drift_reason": self.drift_reason,
            "url": self.url,
            "pid": self.pid,
            "restarts": self.restarts,
            "health": self.health.to_dict() if self.health else None,
            "is_load_balanced": self.is_load_balanced,
            "in_code": self.in_code,
            "deployed": self.deployed,
            "build_id": self.build_id,
            "uptime_s": round(time.time() - self.started_at, 1)
            if self.started_at and self.status in RUNNING
            else None,
            "last_error": self.last_error,
            "role": self.role,
            "provisioning": self.provisioning,
            "provisioning_error": self.provisioning_error,
        }


def endpoint_status(
    name: str,
    here: Mapping[str, Any] | None,
    there: DeployedEndpoint | None,
    drift: Drift,
    sample: HealthSample | None,
) -> EndpointStatus:
    """The status of one endpoint from its manifest entry, its deployed record, its drift and
    its latest probe (which decides healthy/unhealthy while it runs)."""
    if there is None or there.status not in RUNNING:
        sample = None  # no worker runs: an older probe says nothing about now
    if there is None:
        status = str(Status.NOT_DEPLOYED)
    else:
        status = there.status
        if sample is not None and status in RUNNING:
            status = Status.HEALTHY if sample.ok else Status.UNHEALTHY
            if not sample.ok and there.status == Status.DEPLOYING:
                status = Status.DEPLOYING
            status = str(status)
    return EndpointStatus(
        name=name,
        resource_type=drift.resource_type,
        status=status,
        drift=drift.state,
        drift_fields=drift.fields,
        unresolved=list(drift.unresolved),
        drift_reason=drift.reason,
        url=there.url if there else None,
        pid=there.pid if there else None,
        restarts=there.restarts if there else 0,
        health=sample,
        is_load_balanced=bool(
            there.is_load_balanced if there else (here or {}).get("is_load_balanced")
        ),
        in_code=here is not None,
        deployed=there is not None,
        build_id=there.build_id if there else None,
        started_at=there.started_at if there else None,
        last_error=there.last_error if there else None,
        role=there.role if there else "endpoint",
    )
