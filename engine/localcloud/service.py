"""The local cloud's HTTP API (FastAPI), bound to 127.0.0.1, every route behind a token.

Routes (all JSON; `Authorization: Bearer <token>` required on every one, `/v1/health` too;
`Host` must be 127.0.0.1 or localhost, with an optional port, or the answer is 400):

    GET    /v1/health                                   service pid, version, uptime
    POST   /v1/shutdown              {"stop_workers"}   stop (optionally the workers), exit
    GET    /v1/apps                                     apps with endpoint counts
    GET    /v1/apps/{app}/endpoints                     endpoint records (never keys)
    GET    /v1/apps/{app}/endpoints/{name}              one record
    GET    /v1/apps/{app}/endpoints/{name}/key          {"key"}: the only route returning a key
    POST   /v1/apps/{app}/deploy     DeployRequest      NDJSON progress events, last `result`
    POST   /v1/apps/{app}/deploy/cancel                 {"cancelled"}: start no more endpoints
    POST   /v1/apps/{app}/undeploy   {"names"|null}     NDJSON progress events, last `result`
    POST   /v1/apps/{app}/endpoints/{name}/restart      NDJSON progress events, last `result`
    GET    /v1/apps/{app}/endpoints/{name}/logs?lines=N                {"lines": [...]}
    GET    /v1/apps/{app}/endpoints/{name}/logs/follow?lines=N&marks=B NDJSON {"line"} / {"upto"}
    GET    /v1/apps/{app}/events?since=ID                              append-only event log
    GET    /v1/apps/{app}/builds                                       immutable build copies
    GET    /v1/apps/{app}/environments                                 names, each's mothership
    GET    /v1/apps/{app}/environments/{env}/manifest                  state manager: read
    PUT    /v1/apps/{app}/environments/{env}/manifest                  state manager: replace
    PATCH  /v1/apps/{app}/environments/{env}/manifest/resources/{name} shallow-merge one entry
    DELETE /v1/apps/{app}/environments/{env}/manifest/resources/{name} drop one entry

A mothership's scoped credential (`scopes`) reaches its own app's endpoint, deploy, undeploy
and environment-manifest routes only; its deploys create or update children from a build the
app already has, its undeploys remove named children.

Deploys and undeploys run as tasks detached from the request: a client that disconnects (or is
SIGKILLed) mid-deploy does not interrupt it; the stream merely stops being read.

Every body is parsed, and every answer built, with the message's model in `wire.py` (the one
the client parses it with). A body that does not fit gets a 422 whose detail names the field:
`bad deploy request: endpoints.0.name: Field required`.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from engine.home import Home
from engine.localcloud import logfiles, roles
from engine.localcloud.deploys import Deploys
from engine.localcloud.scopes import SCOPE_KEY, ScopedAuth
from engine.localcloud.settings import SupervisorSettings
from engine.localcloud.store import Store
from engine.localcloud.supervisor import Supervisor
from engine.localcloud.wire import (
    Ack,
    AppList,
    BuildList,
    BuildSpec,
    CancelReply,
    DeployEvent,
    DeployRequest,
    EndpointKey,
    EndpointList,
    EndpointRecord,
    EnvironmentList,
    EventList,
    FollowItem,
    LogTail,
    PersistedManifest,
    ResourceEntry,
    ServiceHealth,
    ShutdownReply,
    ShutdownRequest,
    UndeployRequest,
    WorkerIsolationList,
    problem,
)
from runtime import sandbox
from runtime.auth import BearerAuthMiddleware
from runtime.hostcheck import LoopbackHostMiddleware

__all__ = ["NAME_PATTERN", "create_app"]

VERSION = "1"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# A worker stamps a line an instant before its write(2) lands: a follow's `upto` mark stays this
# far behind the read, so a line stamped before the mark has been read.
_STAMP_SLACK = 0.05
_IDLE_MARK_EVERY = 1.0
_UNAUTHORIZED = b'{"detail":"unauthorized: this API needs the local cloud token"}'
_BAD_HOST = (
    b'{"detail":"invalid Host header: the local cloud answers only 127.0.0.1 and localhost"}'
)


_Body = TypeVar("_Body", bound=BaseModel)


async def _body(
    request: Request, model: type[_Body], what: str, *, optional: bool = False
) -> _Body:
    """The request's JSON body as `model`; 422 naming the field when it does not fit.

    With `optional`, an empty body means the model's defaults.
    """
    raw = await request.body()
    if optional and not raw.strip():
        return model()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise HTTPException(422, f"bad {what}: {problem(exc)}") from None


def _check_name(kind: str, value: str) -> str:
    # Names become path components under the home: refuse anything that could escape it.
    if not NAME_PATTERN.match(value):
        raise HTTPException(422, f"invalid {kind} name {value!r}")
    return value


def _item(item: FollowItem) -> bytes:
    return (item.to_json() + "\n").encode()


def _ndjson(
    supervisor: Supervisor, run: Callable[[Callable[[DeployEvent], None]], Awaitable[Any]]
) -> StreamingResponse:
    """Run `run(emit)` as a detached task and stream its events as NDJSON."""
    queue: asyncio.Queue[DeployEvent | None] = asyncio.Queue()

    async def runner() -> None:
        try:
            await run(queue.put_nowait)
        except Exception as exc:  # reported to the client, and the service lives on
            queue.put_nowait(DeployEvent(type="error", message=f"{type(exc).__name__}: {exc}"))
        finally:
            queue.put_nowait(None)

    supervisor.spawn_task(runner())

    async def stream() -> AsyncIterator[bytes]:
        while True:
            event = await queue.get()
            if event is None:
                return
            yield (event.to_json() + "\n").encode()

    return StreamingResponse(stream(), media_type="application/x-ndjson")


def create_app(
    home: Home,
    token: str,
    *,
    settings: SupervisorSettings | None = None,
    on_shutdown_request: Callable[[], None] | None = None,
    service_url: str | None = None,
) -> Any:
    """The ASGI app of the local cloud for `home` (token middleware included)."""
    state: dict[str, Any] = {"stop_workers": False, "started_at": time.time()}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        store = Store(home.db_path)
        supervisor = Supervisor(home, store, settings or SupervisorSettings.from_env())
        supervisor.service_url = service_url
        state["store"], state["supervisor"] = store, supervisor
        state["deploys"] = Deploys(supervisor)
        await supervisor.start()
        store.add_event("service_started", f"local cloud started, pid {os.getpid()}")
        try:
            yield
        finally:
            await supervisor.close(stop_workers=state["stop_workers"])
            store.add_event("service_stopped", "local cloud stopped")
            store.close()

    api = FastAPI(title="flash-tui local cloud", version=VERSION, lifespan=lifespan)

    def sup() -> Supervisor:
        return state["supervisor"]

    def deploys() -> Deploys:
        return state["deploys"]

    def store() -> Store:
        return state["store"]

    def endpoint_or_404(app: str, name: str) -> EndpointRecord:
        record = store().get_endpoint(_check_name("app", app), _check_name("endpoint", name))
        if record is None:
            raise HTTPException(404, f"endpoint {name!r} of app {app!r} is not deployed")
        return EndpointRecord.model_validate(record)

    @api.get("/v1/health")
    async def health() -> ServiceHealth:
        """Service pid, version, uptime and worker count."""
        return ServiceHealth(
            ok=True,
            pid=os.getpid(),
            version=VERSION,
            started_at=state["started_at"],
            uptime_s=round(time.time() - state["started_at"], 3),
            workers=len(sup().workers),
            isolation=sandbox.isolation(os.environ),
        )

    @api.get("/v1/workers/isolation")
    async def worker_isolation() -> WorkerIsolationList:
        """What each running worker applied, as it says itself, and what a new one would get."""
        return WorkerIsolationList(
            default=sandbox.isolation(os.environ), workers=await sup().isolation()
        )

    @api.post("/v1/shutdown")
    async def shutdown(request: Request) -> ShutdownReply:
        """Stop the service (and, unless told otherwise, its workers)."""
        body = await _body(request, ShutdownRequest, "shutdown request", optional=True)
        state["stop_workers"] = body.stop_workers
        if on_shutdown_request is not None:
            # Let this response go out before the server starts closing connections.
            asyncio.get_running_loop().call_later(0.05, on_shutdown_request)
        return ShutdownReply(ok=True, stop_workers=body.stop_workers)

    @api.get("/v1/apps")
    async def list_apps() -> AppList:
        """Every app with its endpoint count."""
        return AppList.model_validate({"apps": store().list_apps()})

    @api.get("/v1/apps/{app}/endpoints")
    async def list_endpoints(app: str) -> EndpointList:
        """The app's endpoint records (never keys)."""
        return EndpointList.model_validate(
            {"endpoints": store().list_endpoints(_check_name("app", app))}
        )

    @api.get("/v1/apps/{app}/endpoints/{name}")
    async def get_endpoint(app: str, name: str) -> EndpointRecord:
        """One endpoint record (never its key)."""
        return endpoint_or_404(app, name)

    @api.get("/v1/apps/{app}/endpoints/{name}/key")
    async def get_key(app: str, name: str) -> EndpointKey:
        """The endpoint's API key: the only route that returns one."""
        endpoint_or_404(app, name)
        key = store().endpoint_key(app, name)
        if key is None:
            raise HTTPException(404, f"endpoint {name!r} has no key yet")
        return EndpointKey(key=key)

    @api.post("/v1/apps/{app}/deploy")
    async def deploy(app: str, request: Request) -> StreamingResponse:
        """Create/update/remove endpoints; NDJSON progress, then the result."""
        _check_name("app", app)
        deploy_request = await _body(request, DeployRequest, "deploy request")
        for spec in deploy_request.endpoints:
            _check_name("endpoint", spec.name)
            if spec.role not in roles.ROLES:
                raise HTTPException(422, f"bad deploy request: unknown role {spec.role!r}")
        for name in deploy_request.remove:
            _check_name("endpoint", name)
        granted = request.scope.get(SCOPE_KEY)
        if granted is not None:
            deploy_request = _scoped_deploy(app, granted[1], deploy_request)
        return _ndjson(sup(), lambda emit: deploys().deploy(app, deploy_request, emit))

    @api.post("/v1/apps/{app}/deploy/cancel")
    async def cancel_deploy(app: str) -> CancelReply:
        """The app's running deploys start no more endpoints (those started finish)."""
        return CancelReply(cancelled=deploys().cancel(_check_name("app", app)))

    @api.post("/v1/apps/{app}/endpoints/{name}/restart")
    async def restart(app: str, name: str) -> StreamingResponse:
        """Stop and start one endpoint's worker; NDJSON progress, then the result."""
        endpoint_or_404(app, name)
        return _ndjson(sup(), lambda emit: deploys().restart(app, name, emit))

    @api.post("/v1/apps/{app}/undeploy")
    async def undeploy(app: str, request: Request) -> StreamingResponse:
        """Stop and remove endpoints (all when `names` is null); NDJSON progress."""
        _check_name("app", app)
        names = (await _body(request, UndeployRequest, "undeploy request")).names
        if names is not None:
            names = [_check_name("endpoint", n) for n in names]
        if request.scope.get(SCOPE_KEY) is not None:
            _scoped_undeploy(app, names)
        return _ndjson(sup(), lambda emit: deploys().undeploy(app, names, emit))

    def _scoped_deploy(app: str, environment: str, body: DeployRequest) -> DeployRequest:
        """A mothership's deploy: children of its environment, from a build the app has."""
        build_id = body.build.build_id or ""
        if not any(b["build_id"] == build_id for b in store().list_builds(app)):
            raise HTTPException(403, f"build {build_id[:12]!r} is not a build of app {app!r}")
        for spec in body.endpoints:
            record = store().get_endpoint(app, spec.name)
            if spec.role != roles.CHILD or (record and record.get("role") == roles.MOTHERSHIP):
                raise HTTPException(403, f"a scoped credential deploys children only: {spec.name}")
        if body.remove:
            raise HTTPException(403, "a scoped credential removes through undeploy")
        # Paths come from the service's own records, never from a worker.
        return body.model_copy(
            update={"build": BuildSpec(build_id=build_id), "environment": environment}
        )

    def _scoped_undeploy(app: str, names: list[str] | None) -> None:
        if names is None:
            raise HTTPException(403, "a scoped credential undeploys named children only")
        for name in names:
            record = store().get_endpoint(app, name)
            if record is not None and record.get("role") != roles.CHILD:
                raise HTTPException(403, f"a scoped credential undeploys children only: {name}")

    def _keys(app: str) -> list[str]:
        return list(store().app_keys(app).values())

    @api.get("/v1/apps/{app}/endpoints/{name}/logs")
    async def logs(app: str, name: str, lines: int = 200) -> LogTail:
        """The last `lines` lines of an endpoint's log (keys redacted)."""
        _check_name("app", app)
        _check_name("endpoint", name)
        path = logfiles.log_path(home.logs_dir(app), name)
        tail = await asyncio.to_thread(logfiles.tail_lines, path, max(0, min(lines, 10000)))
        return LogTail(endpoint=name, lines=logfiles.redact(tail, _keys(app)))

    @api.get("/v1/apps/{app}/endpoints/{name}/logs/follow")
    async def follow(
        app: str, name: str, lines: int = 50, marks: bool = False
    ) -> StreamingResponse:
        """The last `lines` lines, then new lines as they are written (NDJSON). With `marks`,
        `{"upto": T}` after the history and after every read: every line written before T
        (epoch seconds) has been sent, so a client can merge several endpoints in order."""
        _check_name("app", app)
        _check_name("endpoint", name)
        path = logfiles.log_path(home.logs_dir(app), name)

        async def stream() -> AsyncIterator[bytes]:
            keys = _keys(app)
            upto = time.time() - _STAMP_SLACK
            # History and offset from one read: no line is lost or sent twice in between.
            history, offset = await asyncio.to_thread(
                logfiles.tail_for_follow, path, max(0, min(lines, 10000))
            )
            for line in logfiles.redact(history, keys):
                yield _item(FollowItem(line=line))
            if marks:
                yield _item(FollowItem(upto=upto))
            idle = 0.0
            marked = time.monotonic()
            while True:
                upto = time.time() - _STAMP_SLACK
                new, offset = await asyncio.to_thread(logfiles.read_new, path, offset)
                if new:
                    idle = 0.0
                    keys = _keys(app)
                    for line in logfiles.redact(new, keys):
                        yield _item(FollowItem(line=line))
                # An idle stream marks once a second, not every read: a client following
                # dozens of endpoints would otherwise spend its time parsing marks.
                if marks and (new or time.monotonic() - marked >= _IDLE_MARK_EVERY):
                    marked = time.monotonic()
                    yield _item(FollowItem(upto=upto))
                if not new:
                    idle += 0.2
                    if idle >= 15.0:
                        # A heartbeat lets the client notice a dead connection.
                        idle = 0.0
                        yield _item(FollowItem(heartbeat=True))
                    await asyncio.sleep(0.2)

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    @api.get("/v1/apps/{app}/events")
    async def events(app: str, since: int = 0, limit: int = 500) -> EventList:
        """The app's append-only event log after event id `since`."""
        rows = store().events(_check_name("app", app), since, min(limit, 5000))
        return EventList.model_validate({"events": rows})

    @api.get("/v1/apps/{app}/builds")
    async def builds(app: str) -> BuildList:
        """The app's immutable build copies."""
        return BuildList.model_validate({"builds": store().list_builds(_check_name("app", app))})

    @api.get("/v1/apps/{app}/environments")
    async def environments(app: str) -> EnvironmentList:
        """The app's environments (a persisted manifest or a deployed endpoint names each),
        each with the mothership deployed to it."""
        return EnvironmentList.model_validate(
            {"environments": store().app_environments(_check_name("app", app))}
        )

    # The persisted manifest is upstream's JSON: its keys go back exactly as they were sent.
    @api.get("/v1/apps/{app}/environments/{env}/manifest", response_model_exclude_unset=True)
    async def get_manifest(app: str, env: str) -> PersistedManifest:
        """State manager: the persisted manifest of an app's environment."""
        manifest = store().get_manifest(_check_name("app", app), _check_name("environment", env))
        if manifest is None:
            raise HTTPException(404, f"no persisted manifest for {app}/{env}")
        return PersistedManifest.model_validate(manifest)

    @api.put("/v1/apps/{app}/environments/{env}/manifest")
    async def put_manifest(app: str, env: str, request: Request) -> Ack:
        """State manager: replace the persisted manifest."""
        _check_name("app", app)
        _check_name("environment", env)
        manifest = await _body(request, PersistedManifest, "manifest")
        store().upsert_app(app, None)
        store().put_manifest(app, env, manifest.model_dump(mode="json", exclude_unset=True))
        return Ack()

    @api.patch(
        "/v1/apps/{app}/environments/{env}/manifest/resources/{name}",
        response_model_exclude_unset=True,
    )
    async def patch_resource(app: str, env: str, name: str, request: Request) -> PersistedManifest:
        """State manager: shallow-merge the body into one resource entry."""
        _check_name("app", app)
        _check_name("environment", env)
        entry = await _body(request, ResourceEntry, "resource entry")
        store().upsert_app(app, None)
        return PersistedManifest.model_validate(
            store().patch_manifest_resource(app, env, name, entry.root)
        )

    @api.delete(
        "/v1/apps/{app}/environments/{env}/manifest/resources/{name}",
        response_model_exclude_unset=True,
    )
    async def delete_resource(app: str, env: str, name: str) -> PersistedManifest:
        """State manager: drop one resource entry."""
        _check_name("app", app)
        _check_name("environment", env)
        return PersistedManifest.model_validate(
            store().patch_manifest_resource(app, env, name, None)
        )

    @api.exception_handler(Exception)
    async def on_error(_: Request, exc: Exception) -> JSONResponse:
        """Unexpected errors become a JSON 500 (the service keeps running)."""
        return JSONResponse({"detail": f"{type(exc).__name__}: {exc}"}, status_code=500)

    # Every route, /v1/health included, needs the token; it is never echoed or logged. The
    # Host check comes first: a DNS-rebinding page gets nothing, not even a 401.
    authed = BearerAuthMiddleware(api, token, public_paths=(), unauthorized=_UNAUTHORIZED)
    # A mothership's credential reaches its own app's routes only (see `scopes`).
    return LoopbackHostMiddleware(ScopedAuth(api, authed, token), refused=_BAD_HOST)
