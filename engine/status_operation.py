"""The status operation: every endpoint in code or deployed, with drift and live health.

The code side is a manifest (the caller's latest scan, or a scan now), the deployed side the
provider's records; drift compares them (a file that no longer parses marks the endpoints it
defined in the last build `unparsable`), health comes from a probe now or the samples of a
running `HealthMonitor`, and a mothership's children carry their provisioning as the
environment's state manager recorded it. Status words and their derivation are `engine.status`.

It runs on a `Session` (`engine.session`); `Engine.status` is the entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.drift import compute_drift
from engine.health import HealthSample, probe_all
from engine.mothership import (
    ChildState,
    EnvironmentState,
    MothershipError,
    child_states,
    mothership_entry,
)
from engine.operation_results import OpError
from engine.plan import local_resources
from engine.provider import DeployedEndpoint, EndpointTarget, ProviderError
from engine.session import Session
from engine.status import RUNNING, EndpointStatus, endpoint_status

__all__ = ["endpoint_statuses", "health_targets"]


async def endpoint_statuses(
    session: Session,
    *,
    probe: bool,
    scan: bool,
    manifest: dict[str, Any] | None,
    diagnostics: Sequence[Any],
    health: Mapping[str, HealthSample] | None,
) -> list[EndpointStatus]:
    """Every endpoint in code or deployed: status, drift and (with `probe`) live health
    (the arguments, and their defaults, are `Engine.status`'s)."""
    root = session.root

    async def code() -> tuple[dict[str, Any], dict[str, int]]:
        if manifest is not None:
            return local_resources(manifest, root), _parse_errors(diagnostics)
        if not scan:
            return {}, {}
        result = await session.scan()
        return local_resources(result.manifest, root), _parse_errors(result.diagnostics)

    local, errors = await session.while_connecting(code)  # reaching overlaps with the scan
    deployed = await session.deployed()
    samples: dict[str, HealthSample] = {}
    if health is not None:
        samples = {n: s for n, s in health.items() if n in deployed and s.url == deployed[n].url}
    elif probe:
        samples = {s.endpoint: s for s in await probe_all(await health_targets(session, deployed))}
    drifts = compute_drift(
        {**_generated_motherships(local, deployed), **local},
        {n: e.as_entry() for n, e in deployed.items()},
        parse_errors=errors,
        deployed_files=await asyncio.to_thread(_built_files, root) if errors else None,
    )
    statuses = [
        endpoint_status(name, local.get(name), deployed.get(name), drift, samples.get(name))
        for name, drift in drifts.items()
    ]
    children = await _provisioning(session, deployed)
    for status in statuses:
        child = children.get(status.name)
        if child is not None and status.role == "child":
            status.provisioning, status.provisioning_error = child.status, child.error
    return statuses


async def health_targets(
    session: Session, deployed: Mapping[str, DeployedEndpoint]
) -> list[EndpointTarget]:
    """Probe targets of the running endpoints among `deployed` (those the target can reach)."""
    out: list[EndpointTarget] = []
    for name, endpoint in deployed.items():
        if endpoint.url and endpoint.status in RUNNING:
            try:
                out.append(await session.provider.target(session.app, name))
            except ProviderError:
                continue
    return out


async def _provisioning(
    session: Session, deployed: Mapping[str, DeployedEndpoint]
) -> dict[str, ChildState]:
    """Each child's provisioning as its mothership recorded it, from the state manager of
    every environment a mothership serves ({} in direct mode)."""
    provider = session.provider
    environments = {
        e.environment for e in deployed.values() if e.role != "endpoint" and e.environment
    }
    if not environments or not isinstance(provider, EnvironmentState):
        return {}
    out: dict[str, ChildState] = {}
    for environment in sorted(environments):
        try:
            state = await provider.environment_state(session.app, environment)
        except ProviderError as exc:
            raise OpError(str(exc)) from exc
        out.update(child_states(state))
    return out


def _parse_errors(diagnostics: Sequence[Any]) -> dict[str, int]:
    """Source files the scanner could not parse (or read), each with its first error line."""
    from engine.diagnostics import SYNTAX_ERROR, UNDECODABLE

    out: dict[str, int] = {}
    for d in diagnostics:
        if d.code in (SYNTAX_ERROR, UNDECODABLE) and d.file and d.file not in out:
            out[d.file] = int(d.line or 0)
    return out


def _built_files(root: Path) -> dict[str, str]:
    """The file that defined each endpoint in the project's last build (empty if none)."""
    from engine.build import BUILD_DIR, MANIFEST_NAME

    try:
        built = json.loads((root / BUILD_DIR / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    resources = built.get("resources") if isinstance(built, dict) else None
    return {
        str(name): str(entry["file"])
        for name, entry in (resources if isinstance(resources, dict) else {}).items()
        if isinstance(entry, dict) and isinstance(entry.get("file"), str)
    }


def _generated_motherships(
    local: Mapping[str, Any], deployed: Mapping[str, DeployedEndpoint]
) -> dict[str, Any]:
    """A deployed generated mothership as the code makes it, for its drift: not in the code,
    yet not orphaned. Its code is the build it reconciles: compared by config only."""
    if not local:
        return {}
    out: dict[str, Any] = {}
    for name, endpoint in deployed.items():
        if endpoint.role != "mothership" or name in local:
            continue
        with contextlib.suppress(MothershipError):
            wanted, entry = mothership_entry({"resources": local}, endpoint.code_hash or "")
            if wanted == name:
                out[name] = entry
    return out
