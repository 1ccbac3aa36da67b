"""The provider interface: where endpoints get deployed, and the registry of providers.

A provider deploys, updates, deletes and lists the endpoints of an app, gives the URL and
credentials to reach each one (used for health probes and invocations, which are plain HTTP
and therefore provider-neutral: `engine.health`, `engine.invoke`), and serves logs. The engine
operations (`engine.operations`) only talk to this interface; each implementation lives with
its target (the local cloud's is `engine.localcloud.provider.LocalCloudProvider`) and is named
in `get_provider`'s registry, so a second one slots in beside it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from engine.app_environments import AppEnvironment
from engine.archive import BuildRef
from engine.home import Home

__all__ = [
    "AppEnvironment",
    "AppSummary",
    "BuildRef",
    "DeployOrder",
    "DeployOutcome",
    "DeployedEndpoint",
    "DeploymentEvent",
    "EndpointResult",
    "EndpointSpec",
    "EndpointTarget",
    "NOT_STARTED",
    "Provider",
    "ProviderError",
    "ProviderEvent",
    "TARGETS",
    "get_provider",
]


class EndpointSpec(BaseModel):
    """One endpoint as the engine wants it deployed (from the manifest); the local cloud's
    deploy request carries it as it is."""

    model_config = ConfigDict(frozen=True)

    name: str
    resource_type: str = ""
    is_load_balanced: bool = False
    config: dict[str, Any] = Field(default_factory=dict)
    config_hash: str | None = None
    code_hash: str | None = None
    # The interpreter of the endpoint's own environment (engine.env_step); None: the target's
    # default (the local cloud's own interpreter). RunPod runs upstream's images and ignores it.
    python: str | None = None
    # Why its environment could not be made (the installer's message): the local cloud records
    # the endpoint `failed` with it instead of starting a worker.
    setup_error: str | None = None
    # `endpoint` (deployed by the engine), `mothership` or `child` (deployed by a mothership,
    # named in `mothership`).
    role: str = "endpoint"
    mothership: str | None = None


# The error of an endpoint a cancelled deploy did not start (every provider's words for it).
NOT_STARTED = "not started: the deploy was cancelled"


class ProviderError(Exception):
    """A provider operation failed; the message is meant for a person (and holds no secret)."""


@dataclass(frozen=True)
class DeployedEndpoint:
    """What the provider knows about one deployed endpoint (no secrets)."""

    name: str
    resource_type: str
    is_load_balanced: bool
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str | None = None
    code_hash: str | None = None
    build_id: str | None = None
    url: str | None = None
    port: int | None = None
    pid: int | None = None
    restarts: int = 0
    created_at: float | None = None
    updated_at: float | None = None
    started_at: float | None = None
    last_error: str | None = None
    # Endpoints whose entries in this endpoint's table of the others are out of date (by name
    # only: a table holds keys), where the provider deploys such tables.
    stale_table: tuple[str, ...] = ()
    # The interpreter its worker runs on when not the target's default (its environment's).
    python: str | None = None
    role: str = "endpoint"
    mothership: str | None = None
    environment: str | None = None

    def as_entry(self) -> dict[str, Any]:
        """The mapping drift/reconcile compare against (`resource_type`, `config`, hashes)."""
        return {
            "resource_type": self.resource_type,
            "config": self.config,
            "config_hash": self.config_hash,
            "code_hash": self.code_hash,
            "build_id": self.build_id,
            "status": self.status,
            "stale_table": list(self.stale_table),
        }


@dataclass(frozen=True)
class EndpointTarget:
    """How to reach a deployed endpoint over HTTP. The key never appears in `repr`."""

    name: str
    base_url: str
    is_load_balanced: bool
    key: str | None = field(default=None, repr=False)
    # RunPod's queue API has no `/ping`: its `/health` alone says whether the endpoint is up.
    has_ping: bool = True
    # The caller's own headers (the route tester's), sent after the key's; may hold secrets.
    extra_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def url(self, path: str) -> str:
        """Absolute URL of `path` on this endpoint."""
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def headers(self) -> dict[str, str]:
        """The Authorization header (empty without a key), then the extra headers."""
        auth = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return {**auth, **dict(self.extra_headers)}


@dataclass(frozen=True)
class ProviderEvent:
    """Progress of a deploy/undeploy: `kind` is `endpoint`, `build`, `locked`, or `error`."""

    kind: str
    name: str | None = None
    action: str | None = None
    state: str | None = None
    message: str = ""
    elapsed_ms: float | None = None
    build_id: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class EndpointResult:
    """What a deploy or undeploy did to one endpoint: `action` create/update/delete/unchanged."""

    name: str
    action: str
    ok: bool
    error: str | None = None
    elapsed_ms: float | None = None
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: name, action, ok, and the optional fields that are set."""
        out: dict[str, Any] = {"name": self.name, "action": self.action, "ok": self.ok}
        optional = {"elapsed_ms": self.elapsed_ms, "url": self.url, "error": self.error}
        out.update({k: v for k, v in optional.items() if v is not None})
        return out


@dataclass(frozen=True)
class DeployOutcome:
    """Result of a deploy or undeploy: one `EndpointResult` per endpoint it touched."""

    ok: bool
    results: tuple[EndpointResult, ...] = ()
    build_id: str | None = None
    elapsed_ms: float = 0.0
    # Cancelled mid-way: the endpoints it had not started are left as they were (their
    # results say so); the others were deployed (or failed) as usual.
    cancelled: bool = False

    def failed(self) -> list[EndpointResult]:
        """The results that did not succeed."""
        return [r for r in self.results if not r.ok]


@dataclass(frozen=True)
class AppSummary:
    """One app on a target: its key, its project's path (None when unknown), its endpoints."""

    name: str
    project_path: str | None
    endpoints: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "project_path": self.project_path, "endpoints": self.endpoints}


@dataclass(frozen=True)
class DeploymentEvent:
    """One entry of an app's deployment event log (deployed, crashed, restarted, ...).

    `id` grows with every entry, so `events(since=id)` gives what came after; `endpoint` is
    None for an event of the app or the target as a whole; `at` is epoch seconds.
    """

    id: int
    at: float
    kind: str
    message: str = ""
    app: str | None = None
    endpoint: str | None = None


EventCallback = Callable[[ProviderEvent], None]


@dataclass(frozen=True)
class DeployOrder:
    """One deploy asked of a provider: create or update `specs` from `build`, delete `remove`.

    `force` redeploys endpoints that did not change; `project_path` is recorded with the app
    where the target keeps it. `on_event` hears the progress. Once `cancel` is set, endpoints
    not started yet are left as they were (not recorded as deployed) and those started finish;
    the outcome is then `cancelled`.
    """

    app: str
    specs: Sequence[EndpointSpec]
    build: BuildRef
    remove: Sequence[str] = ()
    force: bool = False
    project_path: Path | None = None
    on_event: EventCallback | None = None
    cancel: asyncio.Event | None = None


@runtime_checkable
class Provider(Protocol):
    """Where endpoints run. Every method may raise `ProviderError`."""

    name: str
    # Whether its workers run in environments built here from the project's requirements (the
    # local cloud's); RunPod's run upstream's images, which the deploy does not prepare.
    builds_environments: bool

    async def connect(self) -> str:
        """Reach the target (starting it if it is local); returns a short description."""
        ...

    def describe(self) -> str | None:
        """The target as last reached (None when not connected); no I/O."""
        ...

    async def list_endpoints(self, app: str) -> list[DeployedEndpoint]:
        """The app's deployed endpoints."""
        ...

    async def apps(self) -> list[AppSummary]:
        """Every app on the target."""
        ...

    async def environments(self, app: str) -> list[AppEnvironment]:
        """The app's environments on the target, by name, each with its mothership if any."""
        ...

    async def isolation(self) -> str | None:
        """What keeps workers' code from other apps' secrets (`landlock-vN`, `none`); None:
        the target isolates its workers itself (RunPod)."""
        ...

    async def deploy(self, order: DeployOrder) -> DeployOutcome:
        """Create or update `order.specs` from its build, delete `order.remove`; idempotent per
        endpoint (see `DeployOrder` for cancelling)."""
        ...

    async def delete(
        self, app: str, names: Sequence[str] | None, *, on_event: EventCallback | None = None
    ) -> DeployOutcome:
        """Delete endpoints (all of the app when `names` is None)."""
        ...

    async def restart(
        self, app: str, name: str, *, on_event: EventCallback | None = None
    ) -> EndpointResult:
        """Stop and start a deployed endpoint's worker (same build and config); ProviderError
        when the target cannot (the message says so: never a pretended restart)."""
        ...

    async def target(self, app: str, name: str) -> EndpointTarget:
        """URL and credentials of a deployed endpoint."""
        ...

    async def read_logs(self, app: str, name: str, lines: int = 200) -> list[str]:
        """The last `lines` log lines of an endpoint."""
        ...

    def follow_logs(
        self, app: str, name: str, lines: int = 50, marks: bool = False
    ) -> AsyncIterator[str | float]:
        """The last `lines` lines, then new ones as they come (until cancelled); with `marks`,
        also a float T after the history and then now and then: every line written before T
        (epoch seconds) has been given."""
        ...

    async def events(self, app: str, since: int = 0) -> list[DeploymentEvent]:
        """The app's deployment event log after event id `since`, oldest first."""
        ...

    async def costs(self, local: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        """A cost note per local resource that never scales to zero (empty: nothing priced)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


# Target name -> "module:class" of its provider; imported on first use, so this interface
# does not import any implementation (and none of them imports back into a cycle).
_PROVIDERS: dict[str, str] = {
    "local": "engine.localcloud.provider:LocalCloudProvider",
    "runpod": "engine.runpod.provider:RunPodProvider",
}
TARGETS: tuple[str, ...] = tuple(_PROVIDERS)


def get_provider(
    target: str = "local", *, home: Home | None = None, env: str | None = None
) -> Provider:
    """The provider for a target name (see `_PROVIDERS`); `env`: the target's environment
    (RunPod: `--env`, default `production`; the local cloud has none)."""
    where = _PROVIDERS.get(target)
    if where is None:
        raise ProviderError(f"unknown target {target!r} (available: {', '.join(_PROVIDERS)})")
    module, _, cls = where.partition(":")
    factory = getattr(importlib.import_module(module), cls)
    provider: Provider = factory(home, env=env) if env is not None else factory(home)
    return provider
