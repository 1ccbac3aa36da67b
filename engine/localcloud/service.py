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
    POST   /v1/apps/{app}/undeploy   {"names"|null}     NDJSON progress events, last `result`
    GET    /v1/apps/{app}/endpoints/{name}/logs?lines=N                {"lines": [...]}
    GET    /v1/apps/{app}/endpoints/{name}/logs/follow?lines=N&marks=B NDJSON {"line"} / {"upto"}
    GET    /v1/apps/{app}/events?since=ID                              append-only event log
    GET    /v1/apps/{app}/builds                                       immutable build copies
    GET    /v1/apps/{app}/environments/{env}/manifest                  state manager: read
    PUT    /v1/apps/{app}/environments/{env}/manifest                  state manager: replace
    PATCH  /v1/apps/{app}/environments/{env}/manifest/resources/{name} shallow-merge one entry
    DELETE /v1/apps/{app}/environments/{env}/manifest/resources/{name} drop one entry

Deploys and undeploys run as tasks detached from the request: a client that disconnects (or is
SIGKILLed) mid-deploy does not interrupt it; the stream merely stops being read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from engine.home import Home
from engine.localcloud import logfiles
from engine.localcloud.store import Store
from engine.localcloud.supervisor import Supervisor, SupervisorSettings
from engine.localcloud.wire import DeployEvent, DeployRequest, UndeployRequest
from runtime.auth import BearerAuthMiddleware
from runtime.hostcheck import LoopbackHostMiddleware

__all__ = ["NAME_PATTERN", "create_app"]

VERSION = "1"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# A worker stamps a line an instant before its write(2) lands: a follow's `upto` mark stays this
# far behind the read, so a line stamped before the mark has been read.
_STAMP_SLACK = 0.05
_UNAUTHORIZED = b'{"detail":"unauthorized: this API needs the local cloud token"}'
_BAD_HOST = (
    b'{"detail":"invalid Host header: the local cloud answers only 127.0.0.1 and localhost"}'
)


def _check_name(kind: str, value: str) -> str:
    # Names become path components under the home: refuse anything that could escape it.
    if not NAME_PATTERN.match(value):
        raise HTTPException(422, f"invalid {kind} name {value!r}")
    return value


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
) -> Any:
    """The ASGI app of the local cloud for `home` (token middleware included)."""
    state: dict[str, Any] = {"stop_workers": False, "started_at": time.time()}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        store = Store(home.db_path)
        supervisor = Supervisor(home, store, settings or SupervisorSettings.from_env())
        state["store"], state["supervisor"] = store, supervisor
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

    def store() -> Store:
        return state["store"]

    def endpoint_or_404(app: str, name: str) -> dict[str, Any]:
        record = store().get_endpoint(_check_name("app", app), _check_name("endpoint", name))
        if record is None:
            raise HTTPException(404, f"endpoint {name!r} of app {app!r} is not deployed")
        return record

    @api.get("/v1/health")
    async def health() -> dict[str, Any]:
        """Service pid, version, uptime and worker count."""
        return {
            "ok": True,
            "pid": os.getpid(),
            "version": VERSION,
            "started_at": state["started_at"],
            "uptime_s": round(time.time() - state["started_at"], 3),
            "workers": len(sup().workers),
        }

    @api.post("/v1/shutdown")
    async def shutdown(request: Request) -> dict[str, Any]:
        """Stop the service (and, unless told otherwise, its workers)."""
        body: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            body = await request.json() or {}
        state["stop_workers"] = bool(body.get("stop_workers", True))
        if on_shutdown_request is not None:
            # Let this response go out before the server starts closing connections.
            asyncio.get_running_loop().call_later(0.05, on_shutdown_request)
        return {"ok": True, "stop_workers": state["stop_workers"]}

    @api.get("/v1/apps")
    async def list_apps() -> dict[str, Any]:
        """Every app with its endpoint count."""
        return {"apps": store().list_apps()}

    @api.get("/v1/apps/{app}/endpoints")
    async def list_endpoints(app: str) -> dict[str, Any]:
        """The app's endpoint records (never keys)."""
        return {"endpoints": store().list_endpoints(_check_name("app", app))}

    @api.get("/v1/apps/{app}/endpoints/{name}")
    async def get_endpoint(app: str, name: str) -> dict[str, Any]:
        """One endpoint record (never its key)."""
        return endpoint_or_404(app, name)

    @api.get("/v1/apps/{app}/endpoints/{name}/key")
    async def get_key(app: str, name: str) -> dict[str, Any]:
        """The endpoint's API key: the only route that returns one."""
        endpoint_or_404(app, name)
        key = store().endpoint_key(app, name)
        if key is None:
            raise HTTPException(404, f"endpoint {name!r} has no key yet")
        return {"key": key}

    @api.post("/v1/apps/{app}/deploy")
    async def deploy(app: str, request: Request) -> StreamingResponse:
        """Create/update/remove endpoints; NDJSON progress, then the result."""
        _check_name("app", app)
        try:
            deploy_request = DeployRequest.model_validate(await request.json())
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(422, f"bad deploy request: {exc}") from None
        for spec in deploy_request.endpoints:
            _check_name("endpoint", spec.name)
        for name in deploy_request.remove:
            _check_name("endpoint", name)
        return _ndjson(sup(), lambda emit: sup().deploy(app, deploy_request, emit))

    @api.post("/v1/apps/{app}/undeploy")
    async def undeploy(app: str, request: Request) -> StreamingResponse:
        """Stop and remove endpoints (all when `names` is null); NDJSON progress."""
        _check_name("app", app)
        raw: Any = {}
        with contextlib.suppress(ValueError):
            raw = await request.json() or {}
        try:
            names = UndeployRequest.model_validate(raw).names
        except ValueError as exc:
            raise HTTPException(422, f"bad undeploy request: {exc}") from None
        if names is not None:
            names = [_check_name("endpoint", str(n)) for n in names]
        return _ndjson(sup(), lambda emit: sup().undeploy(app, names, emit))

    def _keys(app: str) -> list[str]:
        return list(store().app_keys(app).values())

    @api.get("/v1/apps/{app}/endpoints/{name}/logs")
    async def logs(app: str, name: str, lines: int = 200) -> dict[str, Any]:
        """The last `lines` lines of an endpoint's log (keys redacted)."""
        _check_name("app", app)
        _check_name("endpoint", name)
        path = logfiles.log_path(home.logs_dir(app), name)
        tail = await asyncio.to_thread(logfiles.tail_lines, path, max(0, min(lines, 10000)))
        return {"endpoint": name, "lines": logfiles.redact(tail, _keys(app))}

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
                yield (json.dumps({"line": line}) + "\n").encode()
            if marks:
                yield (json.dumps({"upto": upto}) + "\n").encode()
            idle = 0.0
            while True:
                upto = time.time() - _STAMP_SLACK
                new, offset = await asyncio.to_thread(logfiles.read_new, path, offset)
                if new:
                    idle = 0.0
                    keys = _keys(app)
                    for line in logfiles.redact(new, keys):
                        yield (json.dumps({"line": line}) + "\n").encode()
                if marks:
                    yield (json.dumps({"upto": upto}) + "\n").encode()
                if not new:
                    idle += 0.2
                    if idle >= 15.0:
                        # A heartbeat lets the client notice a dead connection.
                        idle = 0.0
                        yield b'{"heartbeat": true}\n'
                    await asyncio.sleep(0.2)

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    @api.get("/v1/apps/{app}/events")
    async def events(app: str, since: int = 0, limit: int = 500) -> dict[str, Any]:
        """The app's append-only event log after event id `since`."""
        return {"events": store().events(_check_name("app", app), since, min(limit, 5000))}

    @api.get("/v1/apps/{app}/builds")
    async def builds(app: str) -> dict[str, Any]:
        """The app's immutable build copies."""
        return {"builds": store().list_builds(_check_name("app", app))}

    @api.get("/v1/apps/{app}/environments/{env}/manifest")
    async def get_manifest(app: str, env: str) -> dict[str, Any]:
        """State manager: the persisted manifest of an app's environment."""
        manifest = store().get_manifest(_check_name("app", app), _check_name("environment", env))
        if manifest is None:
            raise HTTPException(404, f"no persisted manifest for {app}/{env}")
        return manifest

    @api.put("/v1/apps/{app}/environments/{env}/manifest")
    async def put_manifest(app: str, env: str, request: Request) -> dict[str, Any]:
        """State manager: replace the persisted manifest."""
        _check_name("app", app)
        _check_name("environment", env)
        try:
            manifest = await request.json()
        except ValueError:
            raise HTTPException(422, "body must be a JSON manifest") from None
        if not isinstance(manifest, dict):
            raise HTTPException(422, "body must be a JSON object")
        store().upsert_app(app, None)
        store().put_manifest(app, env, manifest)
        return {"ok": True}

    @api.patch("/v1/apps/{app}/environments/{env}/manifest/resources/{name}")
    async def patch_resource(app: str, env: str, name: str, request: Request) -> dict[str, Any]:
        """State manager: shallow-merge the body into one resource entry."""
        _check_name("app", app)
        _check_name("environment", env)
        try:
            data = await request.json()
        except ValueError:
            raise HTTPException(422, "body must be a JSON object") from None
        if not isinstance(data, dict):
            raise HTTPException(422, "body must be a JSON object")
        store().upsert_app(app, None)
        return store().patch_manifest_resource(app, env, name, data)

    @api.delete("/v1/apps/{app}/environments/{env}/manifest/resources/{name}")
    async def delete_resource(app: str, env: str, name: str) -> dict[str, Any]:
        """State manager: drop one resource entry."""
        _check_name("app", app)
        _check_name("environment", env)
        return store().patch_manifest_resource(app, env, name, None)

    @api.exception_handler(Exception)
    async def on_error(_: Request, exc: Exception) -> JSONResponse:
        """Unexpected errors become a JSON 500 (the service keeps running)."""
        return JSONResponse({"detail": f"{type(exc).__name__}: {exc}"}, status_code=500)

    # Every route, /v1/health included, needs the token; it is never echoed or logged. The
    # Host check comes first: a DNS-rebinding page gets nothing, not even a 401.
    authed = BearerAuthMiddleware(api, token, public_paths=(), unauthorized=_UNAUTHORIZED)
    return LoopbackHostMiddleware(authed, refused=_BAD_HOST)
