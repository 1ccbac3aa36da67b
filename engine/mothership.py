"""Deploying through a mothership: which endpoint it is, and following its provisioning.

In mothership mode (`deploy --mothership`) the engine ships the build to the environment and
starts one endpoint, the mothership; the mothership provisions the others itself
(`runtime.mothership`) and records each one's progress in the environment's persisted manifest,
which the engine reads back here for `deploy` (to wait for convergence) and `status`.

The mothership is the build's load-balanced resource flagged `mothership: true`; a project
without one gets a generated one, `mothership`, which runs no user code (it serves `/ping` and
`/manifest`). Its `code_hash` is the build id: every new build reboots it, and at boot it
reconciles that build.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "GENERATED_NAME",
    "GENERATED_TYPE",
    "ChildState",
    "EnvironmentState",
    "PROVISION_ACTION",
    "READY",
    "MothershipError",
    "await_children",
    "child_states",
    "converged",
    "mothership_entry",
]

GENERATED_NAME = "mothership"
# A child's provisioning states that mean it is up at its recorded config.
READY = frozenset({"deployed", "updated"})
# The `action` of the `endpoint` events `await_children` emits: a child's provisioning changed.
PROVISION_ACTION = "provision"
GENERATED_TYPE = "CpuLoadBalancerSlsResource"
_LB_TYPES = frozenset(
    {
        "LoadBalancerSlsResource",
        "LiveLoadBalancer",
        "CpuLoadBalancerSlsResource",
        "CpuLiveLoadBalancer",
    }
)


class MothershipError(ValueError):
    """The build cannot be deployed through a mothership (the message says why)."""


@runtime_checkable
class EnvironmentState(Protocol):
    """A provider that can read its environment's persisted manifest (the state manager)."""

    def environment_name(self, mothership: bool) -> str:
        """The environment a deploy records (a mothership's, or direct mode's)."""
        ...

    async def environment_state(
        self, app: str, environment: str | None
    ) -> dict[str, dict[str, Any]]:
        """The persisted manifest's resources of `environment` (None: the provider's own);
        {} when nothing was persisted."""
        ...


@dataclass(frozen=True)
class ChildState:
    """One resource's provisioning as its mothership recorded it."""

    name: str
    status: str
    error: str | None = None
    endpoint_url: str | None = None


def mothership_entry(manifest: Mapping[str, Any], build_id: str) -> tuple[str, dict[str, Any]]:
    """The mothership's name and manifest-style entry for a build; MothershipError names the
    resource when the build's flags do not make one."""
    resources = manifest.get("resources") or {}
    flagged = sorted(
        n for n, e in resources.items() if isinstance(e, Mapping) and e.get("mothership")
    )
    if len(flagged) > 1:
        raise MothershipError(f"more than one resource is flagged mothership: {', '.join(flagged)}")
    if flagged:
        name = flagged[0]
        entry = dict(resources[name])
        if str(entry.get("resource_type")) not in _LB_TYPES and not entry.get("is_load_balanced"):
            raise MothershipError(
                f"resource {name!r} is flagged mothership but is {entry.get('resource_type')}, "
                "not a load-balanced endpoint"
            )
    else:
        name = GENERATED_NAME
        if name in resources:
            raise MothershipError(
                f"resource {name!r} is not flagged mothership, and a generated mothership "
                "would take its name: rename it, or flag it `mothership`"
            )
        entry = {
            "resource_type": GENERATED_TYPE,
            "is_load_balanced": True,
            "config": {},
            "config_hash": "generated-mothership",
        }
    entry["code_hash"] = build_id
    return name, entry


def child_states(state: Mapping[str, Mapping[str, Any]]) -> dict[str, ChildState]:
    """The children's provisioning in a persisted manifest (the mothership's entry left out)."""
    out: dict[str, ChildState] = {}
    for name, entry in state.items():
        if entry.get("role") == "mothership":
            continue
        error = entry.get("error")
        url = entry.get("endpoint_url")
        out[name] = ChildState(
            name,
            str(entry.get("status") or "unknown"),
            error if isinstance(error, str) else None,
            url if isinstance(url, str) else None,
        )
    return out


def converged(
    state: Mapping[str, Mapping[str, Any]], mothership: str, build_id: str, since: float
) -> bool:
    """Whether the mothership has reconciled `build_id` at or after `since` (epoch seconds)."""
    entry = state.get(mothership) or {}
    reconciled_at = entry.get("reconciled_at")
    return (
        entry.get("status") == "reconciled"
        and entry.get("build_id") == build_id
        and isinstance(reconciled_at, (int, float))
        and reconciled_at >= since
    )


# Seconds `deploy --mothership` waits for the mothership to provision its children.
_WAIT = 120.0
_POLL_FIRST = 0.2
_POLL_MAX = 1.0


async def await_children(
    provider: EnvironmentState,
    app: str,
    environment: str | None,
    mothership: str,
    build_id: str,
    since: float,
    emit: Callable[..., None],
) -> dict[str, ChildState]:
    """Follow the environment's state until `mothership` has reconciled `build_id`, emitting
    each child's provisioning as it changes (`endpoint` events, action `provision`) and how
    many are ready (`children`: "mothership: 3/5 children ready", done/total);
    MothershipError past FLASH_MOTHERSHIP_WAIT seconds."""
    raw = os.environ.get("FLASH_MOTHERSHIP_WAIT") or str(_WAIT)
    try:
        wait = float(raw)
    except ValueError:
        raise MothershipError(f"FLASH_MOTHERSHIP_WAIT={raw!r} is not a number of seconds") from None
    deadline = time.monotonic() + wait
    seen: dict[str, str] = {}
    counted: tuple[int, int] | None = None
    delay = _POLL_FIRST
    while True:
        state = await provider.environment_state(app, environment)
        children = child_states(state)
        for child in children.values():
            if seen.get(child.name) != child.status:
                seen[child.name] = child.status
                emit(
                    "endpoint",
                    child.status,
                    name=child.name,
                    state=child.status,
                    action=PROVISION_ACTION,
                )
        count = (sum(1 for c in children.values() if c.status in READY), len(children))
        if children and count != counted:
            counted = count
            emit(
                "children",
                f"mothership: {count[0]}/{count[1]} children ready",
                done=count[0],
                total=count[1],
            )
        if converged(state, mothership, build_id, since):
            return children
        if time.monotonic() > deadline:
            raise MothershipError(
                f"the mothership has not finished provisioning within {wait:g} s "
                f"(`status --env` shows where it is, `logs {mothership}` why)"
            )
        # Each read costs the target requests (two GraphQL calls on RunPod): polled often
        # at first, when the mothership moves fastest, then at most every _POLL_MAX seconds.
        await asyncio.sleep(delay)
        delay = min(_POLL_MAX, delay * 1.5)
