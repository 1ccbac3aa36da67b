"""The `flash-tui dev` HTTP server: upstream `flash run`'s routes, forwarded to deployed endpoints.

A FastAPI app is built from the routes of `engine.dev.routes` (one real route each, so `/docs`
and `/openapi.json` list them) plus the routes of the project's own app (`engine.dev.app`), and
swapped whole on every reload: a request is answered by one consistent version. A queue route
takes `{"input": {param: value}}` (a body without `input` is the input itself), runs the job on
its endpoint (`/runsync`, upstream job contract) and answers `{"id", "status": "COMPLETED",
"output"}`; a load-balanced route is forwarded as is (method, path under the prefix, query,
body). Endpoint keys stay in the forwarded requests' headers, never in an answer or a log line.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response

from engine.dev.app import AppProcess
from engine.dev.routes import DevRoute, file_prefix
from engine.invoke import InvokeError, invoke
from engine.provider import EndpointTarget

__all__ = ["DevServerApp", "DevSnapshot", "build_app"]

# Hop-by-hop and length headers are the forwarding client's business, not the answer's.
_DROP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)
_FORWARD_TIMEOUT = 330.0
_JSON_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}
_JSON_TYPES.update({"dict": "object", "list": "array"})


@dataclass(frozen=True)
class DevSnapshot:
    """One consistent version of what the dev server serves."""

    routes: tuple[DevRoute, ...]
    targets: Mapping[str, EndpointTarget] = field(default_factory=dict)
    app: AppProcess | None = None


def _param_schema(params: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required = []
    for p in params:
        name = str(p.get("name"))
        if name in ("self", "cls") or str(p.get("kind", "")).startswith("VAR_"):
            continue
        kind = _JSON_TYPES.get(str(p.get("annotation") or "").split("[")[0])
        properties[name] = {"type": kind} if kind else {}
        if p.get("default") is None:
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"content": {"application/json": {"schema": schema}}}}


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    return json.loads(raw)


def _failed(status: int, error: str) -> JSONResponse:
    body = {"id": str(uuid.uuid4()), "status": "FAILED", "error": error}
    return JSONResponse(body, status_code=status)


def _queue_handler(route: DevRoute, snapshot: DevSnapshot, http: httpx.AsyncClient) -> Any:
    async def handler(request: Request) -> Response:
        try:
            body = await _json_body(request)
        except ValueError as exc:
            return _failed(400, f"the body is not valid JSON: {exc}")
        data = body.get("input", body) if isinstance(body, dict) else body
        if data is not None and not isinstance(data, dict):
            return _failed(400, '"input" must be a JSON object of the function\'s parameters')
        target = snapshot.targets.get(route.call.endpoint)
        if target is None:
            return _failed(503, f"endpoint {route.call.endpoint} is not running")
        try:
            # The server's one client: a client per call costs its TLS setup (~20 ms) each time.
            result = await invoke(
                target, route.call, data or {}, timeout=_FORWARD_TIMEOUT, client=http
            )
        except InvokeError as exc:
            return _failed(400, str(exc))
        if not result.ok:
            return _failed(500, result.error or f"job {result.job_status}")
        output = _jsonable(result.result)
        return JSONResponse({"id": str(uuid.uuid4()), "status": "COMPLETED", "output": output})

    return handler


def _jsonable(value: Any) -> Any:
    try:
        return jsonable_encoder(value)
    except (TypeError, ValueError):
        return repr(value)


async def _forward(
    http: httpx.AsyncClient,
    request: Request,
    url: str,
    headers: Mapping[str, str],
) -> Response:
    sent = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
    sent.update(headers)
    try:
        answer = await http.request(
            request.method,
            url,
            params=list(request.query_params.multi_items()),
            content=await request.body(),
            headers=sent,
            timeout=_FORWARD_TIMEOUT,
        )
    except httpx.HTTPError as exc:
        return JSONResponse({"detail": f"{type(exc).__name__}: {exc}"}, status_code=502)
    kept = {k: v for k, v in answer.headers.items() if k.lower() not in _DROP_HEADERS}
    kept.pop("www-authenticate", None)
    return Response(answer.content, status_code=answer.status_code, headers=kept)


def _lb_handler(route: DevRoute, snapshot: DevSnapshot, http: httpx.AsyncClient) -> Any:
    prefix = file_prefix(route.file)

    async def handler(request: Request) -> Response:
        target = snapshot.targets.get(route.call.endpoint)
        if target is None:
            return JSONResponse(
                {"detail": f"endpoint {route.call.endpoint} is not running"}, status_code=503
            )
        path = request.url.path[len(prefix) :] or "/"
        return await _forward(http, request, target.url(path), target.headers())

    return handler


def _app_handler(child: AppProcess, http: httpx.AsyncClient) -> Any:
    async def handler(request: Request) -> Response:
        return await _forward(http, request, child.base_url + request.url.path, {})

    return handler


def build_app(snapshot: DevSnapshot, http: httpx.AsyncClient) -> FastAPI:
    """The FastAPI app of one snapshot: every endpoint route, the project app's, `/`, `/ping`."""
    app = FastAPI(
        title="Flash Dev Server",
        description="Served by `flash-tui dev`: each route runs on its deployed endpoint.",
    )
    taken: set[tuple[str, str]] = set()
    for route in snapshot.routes:
        tag = route.file
        if route.is_queue:
            schema = {"type": "object", "properties": {"input": _param_schema(route.params)}}
            handler = _queue_handler(route, snapshot, http)
            extra = _body_doc(schema)
        else:
            handler = _lb_handler(route, snapshot, http)
            has_body = route.method in ("POST", "PUT", "PATCH")
            extra = _body_doc(_param_schema(route.params)) if has_body else None
        app.add_api_route(
            route.path,
            handler,
            methods=[route.method],
            tags=[tag],
            summary=route.summary,
            name=f"{route.method} {route.path}",
            openapi_extra=extra,
        )
        taken.add((route.method, route.path))
    child = snapshot.app
    if child is not None:
        forward = _app_handler(child, http)
        for method, path, summary in child.routes():
            if (method, path) in taken or path in ("/docs", "/openapi.json", "/redoc"):
                continue
            app.add_api_route(
                path,
                forward,
                methods=[method],
                tags=["main.py"],
                summary=summary or path,
                name=f"main.py {method} {path}",
            )
            taken.add((method, path))

    @app.get("/ping", tags=["health"])
    def ping() -> dict[str, str]:
        return {"status": "healthy"}

    if ("GET", "/") not in taken:

        @app.get("/", tags=["health"])
        def home() -> dict[str, str]:
            return {"message": "Flash Dev Server", "docs": "/docs"}

    if child is not None:
        # Routes the app's OpenAPI does not list (mounted sub-apps, hidden routes) still reach it.
        app.add_api_route(
            "/{rest:path}",
            forward,
            methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            include_in_schema=False,
        )
    return app


class DevServerApp:
    """The ASGI app uvicorn serves: the current snapshot's FastAPI app, swapped on reload."""

    def __init__(self) -> None:
        self._http = httpx.AsyncClient(trust_env=False)
        self.snapshot = DevSnapshot(())
        self._app: FastAPI = build_app(self.snapshot, self._http)

    def swap(self, snapshot: DevSnapshot) -> None:
        """Serve `snapshot` from the next request on (requests under way finish on the old)."""
        self._app = build_app(snapshot, self._http)
        self.snapshot = snapshot

    async def close(self) -> None:
        """Close the forwarding client."""
        with contextlib.suppress(Exception):
            await self._http.aclose()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            # Nothing to set up per app: answer the lifespan protocol ourselves.
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await self._app(scope, receive, send)
