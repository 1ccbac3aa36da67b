"""The provider interface: where endpoints get deployed, and its first implementation.

A provider deploys, updates, deletes and lists the endpoints of an app, gives the URL and
credentials to reach each one (used for health probes and invocations, which are plain HTTP
and therefore provider-neutral: `engine.health`, `engine.invoke`), and serves logs. The engine
operations (`engine.ops`) only talk to this interface, so RunPod can be added as a second
implementation without touching them.

`LocalCloudProvider` talks to the embedded local cloud over its HTTP API, starting
the service on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from engine.home import Home
from engine.localcloud.client import CloudClient
from engine.localcloud.discovery import CloudError, CloudInfo, ensure_cloud, read_state
from engine.status import Status

__all__ = [
    "BuildRef",
    "DeployOutcome",
    "DeployedEndpoint",
    "EndpointSpec",
    "EndpointTarget",
    "LocalCloudProvider",
    "Provider",
    "ProviderError",
    "ProviderEvent",
    "get_provider",
]


class ProviderError(Exception):
    """A provider operation failed; the message is meant for a person (and holds no secret)."""


@dataclass(frozen=True)
class EndpointSpec:
    """One endpoint as the engine wants it deployed (from the manifest)."""

    name: str
    resource_type: str
    is_load_balanced: bool
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str | None = None
    code_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the local cloud's deploy request entry)."""
        return {
            "name": self.name,
            "resource_type": self.resource_type,
            "is_load_balanced": self.is_load_balanced,
            "config": self.config,
            "config_hash": self.config_hash,
            "code_hash": self.code_hash,
        }


@dataclass(frozen=True)
class BuildRef:
    """The build a deploy ships: its id (archive SHA-256), archive, build dir and manifest."""

    build_id: str
    archive: Path
    build_dir: Path
    manifest: dict[str, Any]


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

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DeployedEndpoint:
        """From a local cloud endpoint record."""
        return cls(
            name=str(record["name"]),
            resource_type=str(record.get("resource_type") or ""),
            is_load_balanced=bool(record.get("is_load_balanced")),
            status=str(record.get("status") or Status.UNHEALTHY),
            config=dict(record.get("config") or {}),
            config_hash=record.get("config_hash"),
            code_hash=record.get("code_hash"),
            build_id=record.get("build_id"),
            url=record.get("url"),
            port=record.get("port"),
            pid=record.get("pid"),
            restarts=int(record.get("restarts") or 0),
            created_at=record.get("created_at"),
            updated_at=record.get("updated_at"),
            started_at=record.get("started_at"),
            last_error=record.get("last_error"),
        )

    def as_entry(self) -> dict[str, Any]:
        """The mapping drift/reconcile compare against (`resource_type`, `config`, hashes)."""
        return {
            "resource_type": self.resource_type,
            "config": self.config,
            "config_hash": self.config_hash,
            "code_hash": self.code_hash,
            "build_id": self.build_id,
            "status": self.status,
        }


@dataclass(frozen=True)
class EndpointTarget:
    """How to reach a deployed endpoint over HTTP. The key never appears in `repr`."""

    name: str
    base_url: str
    is_load_balanced: bool
    key: str | None = field(default=None, repr=False)

    def url(self, path: str) -> str:
        """Absolute URL of `path` on this endpoint."""
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def headers(self) -> dict[str, str]:
        """The Authorization header (empty without a key)."""
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}


@dataclass(frozen=True)
class ProviderEvent:
    """Progress of a deploy/undeploy: `kind` is `endpoint`, `build`, `locked`, or `error`."""

    kind: str
    name: str | None = None
    action: str | None = None
    state: str | None = None
    message: str = ""
    elapsed_ms: float | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeployOutcome:
    """Result of a deploy or undeploy: per-endpoint results (name, action, ok, error...)."""

    ok: bool
    results: list[dict[str, Any]]
    build_id: str | None = None
    elapsed_ms: float = 0.0

    def failed(self) -> list[dict[str, Any]]:
        """The results that did not succeed."""
        return [r for r in self.results if not r.get("ok")]


EventCallback = Callable[[ProviderEvent], None]


@runtime_checkable
class Provider(Protocol):
    """Where endpoints run. Every method may raise `ProviderError`."""

    name: str

    async def connect(self) -> str:
        """Reach the target (starting it if it is local); returns a short description."""
        ...

    def describe(self) -> str | None:
        """The target as last reached (None when not connected); no I/O."""
        ...

    async def list_endpoints(self, app: str) -> list[DeployedEndpoint]:
        """The app's deployed endpoints."""
        ...

    async def apps(self) -> list[dict[str, Any]]:
        """Every app on the target: `name`, `project_path` (or None), `endpoints` (a count)."""
        ...

    async def deploy(
        self,
        app: str,
        specs: Sequence[EndpointSpec],
        build: BuildRef,
        *,
        remove: Sequence[str] = (),
        force: bool = False,
        project_path: Path | None = None,
        on_event: EventCallback | None = None,
    ) -> DeployOutcome:
        """Create or update `specs` from `build`, delete `remove`; idempotent per endpoint."""
        ...

    async def delete(
        self, app: str, names: Sequence[str] | None, *, on_event: EventCallback | None = None
    ) -> DeployOutcome:
        """Delete endpoints (all of the app when `names` is None)."""
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

    async def events(self, app: str, since: int = 0) -> list[dict[str, Any]]:
        """The app's deployment event log (deployed, crashed, restarted, ...)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def _event(item: dict[str, Any]) -> ProviderEvent:
    known = {"type", "name", "action", "state", "message", "elapsed_ms"}
    return ProviderEvent(
        kind=str(item.get("type") or "event"),
        name=item.get("name"),
        action=item.get("action"),
        state=item.get("state"),
        message=str(item.get("message") or item.get("error") or ""),
        elapsed_ms=item.get("elapsed_ms"),
        data={k: v for k, v in item.items() if k not in known},
    )


class LocalCloudProvider:
    """The embedded local cloud, started on demand; one instance per engine session."""

    name = "local"

    def __init__(self, home: Home | None = None, *, start: bool = True) -> None:
        self.home = home or Home()
        self.start = start
        self.info: CloudInfo | None = None
        self._client: CloudClient | None = None
        self._retired: list[CloudClient] = []
        self._connect_lock = asyncio.Lock()

    async def connect(self) -> str:
        """Find or start the service; returns `local (127.0.0.1:PORT)`.

        Looks again each time: a service restarted since (by another shell, or after a crash)
        publishes a new address in the state file, and that is the one described and used.
        """
        await self._ensure(recheck=True)
        description = self.describe()
        assert description is not None
        return description

    def describe(self) -> str | None:
        """The service as last reached, `local (127.0.0.1:PORT)`; None when not connected."""
        return f"local ({self.info.describe()})" if self.info is not None else None

    async def _ensure(self, *, recheck: bool = False) -> CloudClient:
        async with self._connect_lock:
            if self._client is not None and recheck and not await self._still_running():
                self._retire_client()
            if self._client is not None:
                return self._client
            try:
                self.info = await asyncio.to_thread(ensure_cloud, self.home, start=self.start)
            except CloudError as exc:
                raise ProviderError(str(exc)) from exc
            self._client = CloudClient(self.info)
            return self._client

    async def _call(self, fn: Callable[[CloudClient], Any]) -> Any:
        client = await self._ensure()
        try:
            return await fn(client)
        except CloudError as exc:
            # The service may have died (or been restarted) since we found it: find or start
            # it again once, then retry.
            if "unreachable" not in str(exc):
                raise ProviderError(str(exc)) from exc
            await self._reset()
            client = await self._ensure()
            try:
                return await fn(client)
            except CloudError as exc2:
                raise ProviderError(str(exc2)) from exc2

    async def _still_running(self) -> bool:
        """True when the state file still names the service the cached client talks to."""
        assert self.info is not None
        current = await asyncio.to_thread(read_state, self.home, remove_stale=False)
        return current is not None and (current.pid, current.port) == (
            self.info.pid,
            self.info.port,
        )

    def _retire_client(self) -> None:
        # Not closed here: another task may be about to send on it (it then fails like any
        # request to a stopped service, and retries). Closed by `close()`.
        if self._client is not None:
            self._retired.append(self._client)
        self._client, self.info = None, None

    async def _reset(self) -> None:
        async with self._connect_lock:
            self._retire_client()

    async def apps(self) -> list[dict[str, Any]]:
        """Every app of the local cloud with its project path and endpoint count."""
        return list(await self._call(lambda c: c.apps()))

    async def list_endpoints(self, app: str) -> list[DeployedEndpoint]:
        """The app's endpoint records."""
        records = await self._call(lambda c: c.endpoints(app))
        return [DeployedEndpoint.from_record(r) for r in records]

    async def _run_stream(
        self, make: Callable[[CloudClient], AsyncIterator[dict[str, Any]]], on_event: Any
    ) -> dict[str, Any]:
        client = await self._ensure()
        result: dict[str, Any] | None = None
        try:
            async for item in make(client):
                if item.get("type") == "result":
                    result = item
                elif item.get("type") == "error":
                    raise ProviderError(str(item.get("message")))
                elif on_event is not None:
                    on_event(_event(item))
        except CloudError as exc:
            raise ProviderError(str(exc)) from exc
        if result is None:
            raise ProviderError("the local cloud ended the operation without a result")
        return result

    async def deploy(
        self,
        app: str,
        specs: Sequence[EndpointSpec],
        build: BuildRef,
        *,
        remove: Sequence[str] = (),
        force: bool = False,
        project_path: Path | None = None,
        on_event: EventCallback | None = None,
    ) -> DeployOutcome:
        """Send one deploy request (create/update/delete) and follow its progress."""
        body = {
            "project_path": str(project_path) if project_path else None,
            "build": {
                "build_id": build.build_id,
                "archive": str(build.archive),
                "build_dir": str(build.build_dir),
                "manifest": build.manifest,
            },
            "endpoints": [s.to_dict() for s in specs],
            "remove": list(remove),
            "force": force,
        }
        await self._ensure()
        result = await self._run_stream(lambda c: c.deploy(app, body), on_event)
        return DeployOutcome(
            ok=bool(result.get("ok")),
            results=list(result.get("results") or []),
            build_id=result.get("build_id"),
            elapsed_ms=float(result.get("elapsed_ms") or 0.0),
        )

    async def delete(
        self, app: str, names: Sequence[str] | None, *, on_event: EventCallback | None = None
    ) -> DeployOutcome:
        """Stop and remove endpoints."""
        selected = None if names is None else list(names)
        result = await self._run_stream(lambda c: c.undeploy(app, selected), on_event)
        return DeployOutcome(
            ok=bool(result.get("ok")),
            results=list(result.get("results") or []),
            elapsed_ms=float(result.get("elapsed_ms") or 0.0),
        )

    async def target(self, app: str, name: str) -> EndpointTarget:
        """URL and key of a deployed endpoint."""
        record = await self._call(lambda c: c.endpoint(app, name))
        if not record.get("url"):
            raise ProviderError(f"endpoint {name!r} has no URL yet (status {record['status']})")
        # Not cached: another client may have redeployed the endpoint with a new key.
        key = await self._call(lambda c: c.endpoint_key(app, name))
        return EndpointTarget(name, str(record["url"]), bool(record.get("is_load_balanced")), key)

    async def read_logs(self, app: str, name: str, lines: int = 200) -> list[str]:
        """The last log lines of an endpoint."""
        return list(await self._call(lambda c: c.logs(app, name, lines)))

    async def follow_logs(
        self, app: str, name: str, lines: int = 50, marks: bool = False
    ) -> AsyncIterator[str | float]:
        """Follow an endpoint's log (see `Provider.follow_logs`)."""
        client = await self._ensure()
        try:
            async for line in client.follow_logs(app, name, lines, marks):
                yield line
        except CloudError as exc:
            raise ProviderError(str(exc)) from exc

    async def events(self, app: str, since: int = 0) -> list[dict[str, Any]]:
        """The app's event log."""
        return list(await self._call(lambda c: c.events(app, since)))

    async def close(self) -> None:
        """Close the HTTP clients (the service keeps running)."""
        await self._reset()
        retired, self._retired = self._retired, []
        for client in retired:
            await client.aclose()


def get_provider(target: str = "local", *, home: Home | None = None) -> Provider:
    """The provider for a target name. Only `local` exists so far."""
    if target == "local":
        return LocalCloudProvider(home)
    raise ProviderError(f"unknown target {target!r} (available: local)")
