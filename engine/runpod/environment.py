"""One app environment on RunPod as a deploy sees it: the environment and its recorded state
(found, or created for a deploy), the live endpoints it owns, and each caller's table of the
others (`FLASH_ENDPOINTS`: URLs and endpoint keys).

The state lives in the environment's active build manifest (`runtime.runpod_state`); an
endpoint a killed deploy created but did not record is still the environment's, found by its
environment id. Shared by the deploy (`engine.runpod.deploy`) and the provider's reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.provider import EndpointTarget
from engine.runpod.api import RunPodApi
from engine.runpod.config import RunPodConfig
from runtime.runpod_state import EnvState
from runtime.runpod_wire import Endpoint, FlashApp, FlashEnvironment

__all__ = [
    "Environment",
    "endpoint_target",
    "find_environment",
    "owned_live",
    "table_callers",
    "table_peers",
]


@dataclass
class Environment:
    """One app environment on RunPod with its recorded state."""

    app: FlashApp
    environment: FlashEnvironment
    state: EnvState
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def build_id(self) -> str | None:
        """The environment's active build (where the state lives), if any."""
        return self.environment.activeBuildId


async def find_environment(
    api: RunPodApi, app: str, env: str, *, create: bool
) -> Environment | None:
    """The app's environment and its state; created when missing if `create`, else None."""
    flash_app = await api.app_by_name(app)
    if flash_app is None:
        if not create:
            return None
        flash_app = await api.create_app(app)
    found = next((e for e in flash_app.flashEnvironments if e.name == env), None)
    if found is None:
        if not create:
            return None
        found = await api.create_environment(flash_app.id, env)
    manifest: dict[str, Any] = {}
    if found.activeBuildId:
        build = await api.build(found.activeBuildId)
        manifest = dict(build.manifest or {}) if build is not None else {}
    return Environment(flash_app, found, EnvState.from_manifest(manifest), manifest)


def owned_live(where: Environment, live: Sequence[Endpoint]) -> dict[str, Endpoint]:
    """The live endpoints of this environment by resource name: recorded ones by id, others
    (created by a deploy that was killed before recording them) by environment id; a
    duplicate of a name is keyed `name~id`."""
    by_id = {e.id: e for e in live}
    out: dict[str, Endpoint] = {}
    for name, state in where.state.resources.items():
        if state.endpoint_id in by_id:
            out[name] = by_id[state.endpoint_id]
    recorded = {s.endpoint_id for s in where.state.resources.values()}
    for endpoint in live:
        if endpoint.flashEnvironmentId == where.environment.id and endpoint.id not in recorded:
            name = endpoint.env_value("FLASH_RESOURCE_NAME") or endpoint.name
            # A second endpoint of one name (a create the server applied after the client gave
            # up) shows under its own key: it is orphaned, so the next full deploy deletes it.
            out[name if name not in out else f"{name}~{endpoint.id}"] = endpoint
    return out


def table_callers(manifest: Mapping[str, Any]) -> set[str]:
    """The resources of a build whose code calls another endpoint: only they get a table (the
    scanner's call graph, `makes_remote_calls`), so a new endpoint restarts only its callers'
    workers and no endpoint is handed a key it has no use for."""
    built = manifest.get("resources")
    if not isinstance(built, Mapping):
        return set()
    return {
        str(n)
        for n, r in built.items()
        if not isinstance(r, Mapping) or r.get("makes_remote_calls", True)
    }


def table_peers(
    config: RunPodConfig, where: Environment, live: Mapping[str, Endpoint]
) -> dict[str, tuple[str, str | None]]:
    """What the tables list, {name: (URL, endpoint key)}: every live endpoint of the
    environment (an unrecorded one too: it answers), overridden by what the record says of
    the endpoints it holds (those saved by this operation are not in an older `live`)."""
    peers: dict[str, tuple[str, str | None]] = {}
    for name, endpoint in live.items():
        if "~" in name:
            continue  # a twin of a recorded endpoint: orphaned, deleted by the next deploy
        recorded = where.state.resources.get(name)
        load_balanced = (
            recorded.is_load_balanced
            if recorded is not None
            else (endpoint.type or "").upper() == "LB"
        )
        peers[name] = (
            endpoint_target(config, name, endpoint, load_balanced).base_url,
            endpoint.aiKey,
        )
    for name, state in where.state.resources.items():
        if state.url:
            peers[name] = (state.url, state.ai_key)
    return peers


def endpoint_target(
    config: RunPodConfig, name: str, endpoint: Endpoint, load_balanced: bool
) -> EndpointTarget:
    """How to reach a live endpoint: QB queue API or LB host, with its endpoint-scoped key."""
    if load_balanced:
        return EndpointTarget(name, config.lb_url(endpoint.id), True, endpoint.aiKey)
    return EndpointTarget(
        name, config.queue_url(endpoint.id), False, endpoint.aiKey, has_ping=False
    )
