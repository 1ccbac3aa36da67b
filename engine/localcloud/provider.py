"""The local cloud as a provider: deploys through its HTTP API, starting the service on demand.

The local cloud's wire models (`wire.py`) become the provider interface's types here, and only
here (`_from_wire`, which `_deployed`, `_event` and `_outcome` use).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any, TypeVar

from pydantic import BaseModel

from engine.app_environments import DIRECT_ENVIRONMENT, environment_app
from engine.home import Home
from engine.localcloud.client import CloudClient
from engine.localcloud.discovery import (
    CloudError,
    CloudInfo,
    CloudUnreachable,
    ensure_cloud,
    read_state,
)
from engine.localcloud.roles import DEFAULT_ENVIRONMENT
from engine.localcloud.wire import (
    BuildSpec,
    DeployEvent,
    DeployRequest,
    EndpointRecord,
)
from engine.provider import (
    AppEnvironment,
    AppSummary,
    DeployedEndpoint,
    DeploymentEvent,
    DeployOrder,
    DeployOutcome,
    EndpointResult,
    EndpointTarget,
    EventCallback,
    ProviderError,
    ProviderEvent,
)
from engine.status import Status

__all__ = ["LocalCloudProvider", "environment_app"]

_T = TypeVar("_T")
_D = TypeVar("_D")


def _from_wire(record: BaseModel, cls: type[_D], **read: Any) -> _D:
    """A provider interface type (a dataclass) from the wire record's fields of the same names,
    with `read` (fields the wire names otherwise or leaves blank) over them."""
    same = {name: getattr(record, name) for name in _shared_fields(type(record), cls)}
    return cls(**{**same, **read})


@functools.cache
def _shared_fields(wire: type[BaseModel], cls: type) -> tuple[str, ...]:
    # Once per pair of types: a status poll converts every record.
    return tuple(f.name for f in fields(cls) if f.name in wire.model_fields)


def _deployed(record: EndpointRecord) -> DeployedEndpoint:
    return _from_wire(
        record,
        DeployedEndpoint,
        resource_type=str(record.resource_type or ""),
        status=str(record.status or Status.UNHEALTHY),
        config=dict(record.config or {}),
        restarts=int(record.restarts or 0),
    )


def _event(event: DeployEvent) -> ProviderEvent:
    message = str(event.message or event.error or "")
    return _from_wire(event, ProviderEvent, kind=event.type or "event", message=message)


def _outcome(result: DeployEvent) -> DeployOutcome:
    """The `result` event that ends a deploy/undeploy stream, as the provider's outcome."""
    return DeployOutcome(
        ok=bool(result.ok),
        results=tuple(_from_wire(r, EndpointResult) for r in result.results or ()),
        build_id=result.build_id,
        elapsed_ms=float(result.elapsed_ms or 0.0),
        cancelled=bool(result.cancelled),
    )


class LocalCloudProvider:
    """The embedded local cloud, started on demand; one instance per engine session."""

    name = "local"
    builds_environments = True

    def __init__(
        self, home: Home | None = None, *, start: bool = True, env: str | None = None
    ) -> None:
        self.home = home or Home()
        self.start = start
        # The session's environment (`--env`; a mothership's): its endpoints live under their
        # own cloud app, `{app}.{env}` (see `cloud_app`). None: direct mode, the plain app.
        self.env = env
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

    async def _call(self, fn: Callable[[CloudClient], Awaitable[_T]]) -> _T:
        client = await self._ensure()
        try:
            return await fn(client)
        except CloudError as exc:
            # The service may have died (or been restarted) since we found it: find or start
            # it again once, then retry.
            if not isinstance(exc, CloudUnreachable):
                raise ProviderError(str(exc)) from exc
            await self._reset()
            client = await self._ensure()
            try:
                return await fn(client)
            except CloudError as exc2:
                raise ProviderError(str(exc2)) from exc2

    async def _found(self, fn: Callable[[CloudClient], Awaitable[_T]]) -> _T | None:
        """`fn`'s answer, or None when the cloud answers that it has no such record (404)."""
        try:
            return await self._call(fn)
        except ProviderError as exc:
            if isinstance(exc.__cause__, CloudError) and exc.__cause__.status == 404:
                return None
            raise

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

    async def apps(self) -> list[AppSummary]:
        """Every app of the local cloud with its project path and endpoint count."""
        records = await self._call(lambda c: c.apps())
        return [_from_wire(r, AppSummary) for r in records]

    async def environments(self, app: str) -> list[AppEnvironment]:
        """The app's environments on the local cloud (`local` holds direct deploys), each with
        its mothership."""
        records = await self._call(lambda c: c.environments(app))
        return [AppEnvironment(r.name, r.mothership) for r in records]

    async def isolation(self) -> str | None:
        """The workers' sandbox as each running worker reports it (`landlock-v7 (6/6
        workers)`, the ones without it named)."""
        # Here, not at the top: its runtime.sandbox loads ctypes, which a deploy never needs.
        from engine.localcloud.isolation import describe_isolation

        return describe_isolation(await self._call(lambda c: c.worker_isolation()))

    def cloud_app(self, app: str) -> str:
        """The local cloud's app that holds this session's endpoints: `app` in direct mode,
        `{app}.{env}` for an environment, so that the cloud keeps each environment's records,
        workers, keys, logs and scoped credential apart as it keeps apps apart (`--env local`
        names direct mode's, which it records)."""
        return environment_app(app, self.env)

    async def list_endpoints(self, app: str) -> list[DeployedEndpoint]:
        """The session's endpoint records (an environment's, or direct mode's)."""
        key = self.cloud_app(app)
        records = await self._call(lambda c: c.endpoints(key))
        names = {r.name for r in records}
        legacy = [r for r in await self._legacy(app) if r.name not in names]
        return [_deployed(r) for r in [*records, *legacy]]

    async def _legacy(self, app: str) -> list[EndpointRecord]:
        """This environment's mothership and children recorded under the plain app by a local
        cloud from before environments had their own app; shown until undeployed."""
        if self.env in (None, DIRECT_ENVIRONMENT):
            return []
        records = await self._call(lambda c: c.endpoints(app))
        return [r for r in records if r.role != "endpoint" and r.environment == self.env]

    async def _holder(self, app: str, name: str) -> tuple[str, EndpointRecord | None]:
        """The cloud app holding endpoint `name` (and its record, when reading it was how we
        found out): the session's own, else (a mothership or child recorded under the plain
        app before environments had their own) the plain app, so that its logs, calls and
        restarts reach it as its status does. An endpoint recorded nowhere belongs to the
        session's own app (its logs may outlive it)."""
        key = self.cloud_app(app)
        if key == app:
            return key, None
        record = await self._found(lambda c: c.endpoint(key, name))
        if record is not None:
            return key, record
        return (app if name in {r.name for r in await self._legacy(app)} else key), None

    async def _run_stream(
        self,
        make: Callable[[CloudClient], AsyncIterator[DeployEvent]],
        on_event: EventCallback | None,
        cancel: Callable[[CloudClient], Awaitable[Any]] | None = None,
    ) -> DeployEvent:
        """Follow an operation's events to its result; once `cancel` is given and the first
        event has come (the service knows the operation), `cancel(client)` is sent."""
        client = await self._ensure()
        result: DeployEvent | None = None
        begun = asyncio.Event()
        relay = asyncio.create_task(self._relay(client, begun, cancel)) if cancel else None
        try:
            async for item in make(client):
                begun.set()
                if item.type == "result":
                    result = item
                elif item.type == "error":
                    raise ProviderError(str(item.message))
                elif on_event is not None:
                    on_event(_event(item))
        except CloudError as exc:
            raise ProviderError(str(exc)) from exc
        finally:
            if relay is not None:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
        if result is None:
            raise ProviderError("the local cloud ended the operation without a result")
        return result

    @staticmethod
    async def _relay(
        client: CloudClient,
        begun: asyncio.Event,
        cancel: Callable[[CloudClient], Awaitable[Any]] | None,
    ) -> None:
        await begun.wait()
        if cancel is not None:
            # The stream says what came of it; a service gone meanwhile ends the stream too.
            with contextlib.suppress(CloudError):
                await cancel(client)

    async def deploy(self, order: DeployOrder) -> DeployOutcome:
        """Send one deploy request (create/update/delete) and follow its progress; once
        `order.cancel` is set, the service starts no more endpoints (see `Provider.deploy`)."""
        mothership = any(s.role == "mothership" for s in order.specs)
        if mothership and self.env in (None, DIRECT_ENVIRONMENT):
            # Without an environment it would land among the direct deploys and replace them.
            raise ProviderError(
                "a mothership deploys to an environment: pass --env NAME "
                f"(not {DIRECT_ENVIRONMENT!r}, direct mode's)"
            )
        build, cancel = order.build, order.cancel
        request = DeployRequest(
            project_path=str(order.project_path) if order.project_path else None,
            build=BuildSpec(
                build_id=build.build_id,
                archive=str(build.archive),
                build_dir=str(build.build_dir),
                manifest=build.manifest,
            ),
            endpoints=list(order.specs),
            remove=list(order.remove),
            force=order.force,
            environment=self.environment_name(mothership),
        )
        key = self.cloud_app(order.app)
        await self._ensure()

        async def cancelled(client: CloudClient) -> None:
            assert cancel is not None
            await cancel.wait()
            await client.cancel_deploy(key)

        return _outcome(
            await self._run_stream(
                lambda c: c.deploy(key, request), order.on_event, cancelled if cancel else None
            )
        )

    async def restart(
        self, app: str, name: str, *, on_event: EventCallback | None = None
    ) -> EndpointResult:
        """The supervisor stops the endpoint's worker and starts it again (a new pid)."""
        key, _ = await self._holder(app, name)
        outcome = _outcome(await self._run_stream(lambda c: c.restart(key, name), on_event))
        if not outcome.results:
            raise ProviderError(f"the local cloud did not say how restarting {name} went")
        return outcome.results[0]

    async def delete(
        self, app: str, names: Sequence[str] | None, *, on_event: EventCallback | None = None
    ) -> DeployOutcome:
        """Stop and remove the session's endpoints (all of them when `names` is None)."""
        key = self.cloud_app(app)
        legacy = {r.name for r in await self._legacy(app)} - (
            {r.name for r in await self._call(lambda c: c.endpoints(key))}
        )
        old = sorted(legacy if names is None else legacy & set(names))
        selected = None if names is None else [n for n in names if n not in legacy]
        if selected == []:  # only records from before: nothing to ask of the session's app
            return _outcome(await self._run_stream(lambda c: c.undeploy(app, old), on_event))
        outcome = _outcome(await self._run_stream(lambda c: c.undeploy(key, selected), on_event))
        if not old:
            return outcome
        more = _outcome(await self._run_stream(lambda c: c.undeploy(app, old), on_event))
        return DeployOutcome(
            ok=outcome.ok and more.ok,
            results=outcome.results + more.results,
            build_id=outcome.build_id,
            elapsed_ms=outcome.elapsed_ms + more.elapsed_ms,
            cancelled=outcome.cancelled or more.cancelled,
        )

    def environment_name(self, mothership: bool) -> str:
        """The environment a deploy records: `--env`, else `production` for a mothership and
        `local` in direct mode."""
        return self.env or (DEFAULT_ENVIRONMENT if mothership else DIRECT_ENVIRONMENT)

    async def environment_state(
        self, app: str, environment: str | None
    ) -> dict[str, dict[str, Any]]:
        """The persisted manifest's resources of `environment` (None: this provider's own);
        {} when nothing was persisted."""
        name = environment or self.environment_name(True)
        # Its own app's, else (a store from before environments had their own app) the plain
        # app's.
        for key in dict.fromkeys((environment_app(app, name), app)):
            manifest = await self._found(lambda c, k=key: c.get_manifest(k, name))
            if manifest is not None:
                return {n: dict(entry) for n, entry in manifest.resources.items()}
        return {}

    async def target(self, app: str, name: str) -> EndpointTarget:
        """URL and key of a deployed endpoint."""
        cloud_app, record = await self._holder(app, name)
        if record is None:
            record = await self._call(lambda c: c.endpoint(cloud_app, name))
        if not record.url:
            raise ProviderError(f"endpoint {name!r} has no URL yet (status {record.status})")
        # Not cached: another client may have redeployed the endpoint with a new key.
        key = await self._call(lambda c: c.endpoint_key(cloud_app, name))
        return EndpointTarget(name, record.url, record.is_load_balanced, key)

    async def read_logs(self, app: str, name: str, lines: int = 200) -> list[str]:
        """The last log lines of an endpoint."""
        key, _ = await self._holder(app, name)
        return list(await self._call(lambda c: c.logs(key, name, lines)))

    async def follow_logs(
        self, app: str, name: str, lines: int = 50, marks: bool = False
    ) -> AsyncIterator[str | float]:
        """Follow an endpoint's log (see `Provider.follow_logs`)."""
        key, _ = await self._holder(app, name)
        client = await self._ensure()
        try:
            async for line in client.follow_logs(key, name, lines, marks):
                yield line
        except CloudError as exc:
            raise ProviderError(str(exc)) from exc

    async def events(self, app: str, since: int = 0) -> list[DeploymentEvent]:
        """The app's event log after event id `since`."""
        key = self.cloud_app(app)
        records = await self._call(lambda c: c.events(key, since))
        return [_from_wire(r, DeploymentEvent) for r in records]

    async def costs(self, local: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        """The local cloud costs nothing: no notes."""
        return {}

    async def close(self) -> None:
        """Close the HTTP clients (the service keeps running)."""
        await self._reset()
        retired, self._retired = self._retired, []
        for client in retired:
            await client.aclose()
