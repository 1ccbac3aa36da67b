"""The load-balanced (LB) app factory: a FastAPI app serving the user's routes.

`create_lb_app(route_registry, include_execute=False, is_mothership=False)` registers each
`("METHOD", "/path") -> function` of the registry. Requests bind to the function's parameters
BY NAME, which is what Flash clients (and our cross-endpoint calls) send:

- POST/PUT/PATCH: the fields of a JSON object body; GET/DELETE: query parameters (a JSON
  object body is accepted too when there is no query string — upstream stubs send one);
  `{name}` segments of the path fill parameters of that name;
- values are validated and coerced from the annotations by pydantic (lax mode: "3" -> 3);
- a function whose only parameter is a `dict` (or a pydantic model) receives the whole body,
  as upstream examples rely on; a lone `list` parameter accepts a bare JSON array too;
- a missing, extra or invalid field gives 422 in FastAPI's `{"detail": [...]}` shape (each
  entry's `loc` names the field) plus a one-line `error` summary; the offending value is never
  echoed (it may be a secret);
- a body over the cap (30 MB, RunPod's LB payload limit) is a 413, read no further; JSON with a
  lone surrogate or nested too deep is a 400 (`runtime.payload`);
- a route that raises answers 500 with `{"error", "type", "message", "location"}` (location:
  file:line of the deepest user-code frame) and logs the traceback to stderr;
- a route slower than the request timeout answers 504; a sync route's thread cannot be killed,
  so it is counted as stuck until it returns (`app.state.flash_calls`, a `CallGuard` the worker
  configures), and `/ping` answers 503 once `max_stuck` calls are stuck.

Why not FastAPI's own parameter inference: it treats scalar parameters as query parameters
even on POST and wraps single body parameters differently, which is not the by-name contract;
validating one generated model per route is also cheaper than its per-parameter solving.
The routes are still FastAPI routes, with a generated OpenAPI schema for each. The binding
itself (signature analysis, request values, validation) is `runtime.route_binding`.

Also served: `GET /ping` (204 until the app's startup finished, then 200), `POST /execute`
only when `include_execute` (live endpoints: run a function by name or shipped code, upstream
body and `{success, result | error}` answer), `GET /manifest` (the local manifest on the
mothership, 403 elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from runtime.errors import TRACEBACK_HEADER
from runtime.payload import DEFAULT_MAX_DEPTH, BodyError, parse_json, validation_summary
from runtime.qb_handler import create_handler, format_user_traceback, user_location
from runtime.route_binding import (
    BODY_METHODS,
    QUERY_METHODS,
    BindError,
    RouteBinding,
    bind,
    read_capped,
    request_values,
    route_binding,
)

if TYPE_CHECKING:
    from runtime.mothership import Mothership

__all__ = ["CallGuard", "RESERVED_PATHS", "create_lb_app"]

RESERVED_PATHS = frozenset({"/ping", "/execute", "/manifest"})
MAX_BODY_BYTES = 30 * 1024 * 1024  # RunPod's load-balancer payload limit
DEFAULT_MAX_STUCK = 40  # anyio's default thread limiter: 40 stuck calls leave no thread


class CallGuard:
    """Per-app limits on route calls: timeout, body cap, JSON depth, and the stuck-call count."""

    def __init__(self) -> None:
        self.timeout: float | None = None
        self.max_stuck = DEFAULT_MAX_STUCK
        self.max_body_bytes = MAX_BODY_BYTES
        self.max_depth = DEFAULT_MAX_DEPTH
        self._stuck: set[asyncio.Future[Any]] = set()

    @property
    def stuck(self) -> int:
        """Calls answered 504 (or abandoned by their client) whose thread still runs."""
        return len(self._stuck)

    def abandon(self, call: asyncio.Future[Any]) -> None:
        """Count `call` as stuck until it finishes."""
        if call.done():
            return
        self._stuck.add(call)
        call.add_done_callback(self._stuck.discard)

    def unhealthy(self) -> str | None:
        """Why the app cannot serve any more, or None."""
        if self._stuck and len(self._stuck) >= self.max_stuck:
            return f"{len(self._stuck)} stuck requests (their code did not return after a timeout)"
        return None


# Same options as Starlette's JSONResponse; one encoder instance, since json.dumps() with
# options builds a new encoder per call.
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _json_response(content: Any, status: int = 200) -> Response:
    try:
        data = _encode(content)
    except (TypeError, ValueError):
        # Pydantic models, dataclasses, datetimes...: FastAPI's own encoder.
        data = _encode(jsonable_encoder(content))
    return Response(data.encode(), status_code=status, media_type="application/json")


def _error_response(request: Request, exc: BaseException) -> Response:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    tb = format_user_traceback(exc)
    sys.stderr.write(f"{request.method} {request.url.path} raised:\n{tb}")
    sys.stderr.flush()
    body: dict[str, Any] = {
        "detail": "Internal Server Error",
        "error": text,
        "type": type(exc).__name__,
        "message": str(exc),
        "location": user_location(exc),
    }
    if request.headers.get(TRACEBACK_HEADER):
        body["traceback"] = tb
    return JSONResponse(body, status_code=500)


class _RouteTimeout(Exception):
    """The route outlived the request timeout (distinct from a TimeoutError of its own)."""


async def _call(binding: RouteBinding, kwargs: dict[str, Any], guard: CallGuard) -> Any:
    """Call the route function within the request timeout (raises _RouteTimeout).

    A coroutine is cancelled at the deadline. A sync function runs in the thread pool; a
    thread cannot be stopped, so a call that outlives the timeout (or whose client went away)
    is counted as stuck until it returns.
    """
    fn = binding.function
    if guard.timeout is None:
        if binding.is_async:
            return await fn(**kwargs)
        return await run_in_threadpool(fn, **kwargs)
    if binding.is_async:
        return await _await_within(fn(**kwargs), guard.timeout)
    call = asyncio.ensure_future(run_in_threadpool(fn, **kwargs))
    try:
        # asyncio.wait neither raises on timeout nor cancels: anyio would wait for the thread.
        done, _ = await asyncio.wait((call,), timeout=guard.timeout)
    except asyncio.CancelledError:
        guard.abandon(call)
        raise
    if not done:
        guard.abandon(call)
        raise _RouteTimeout
    return call.result()


async def _await_within(coro: Any, timeout: float) -> Any:
    """Await `coro` in this task, cancelling it at the deadline (what asyncio.timeout does,
    on 3.10 too, and without a task per request); a TimeoutError of its own stays its own."""
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await coro
    except asyncio.CancelledError:
        if not expired:
            raise
        uncancel = getattr(task, "uncancel", None)  # 3.11+: our cancel is consumed here
        if uncancel is not None:
            uncancel()
        raise _RouteTimeout from None
    finally:
        handle.cancel()


def _make_endpoint(binding: RouteBinding, guard: CallGuard) -> Callable[[Request], Any]:
    fn = binding.function

    async def endpoint(request: Request) -> Response:
        try:
            values = await request_values(
                binding, request, max_bytes=guard.max_body_bytes, max_depth=guard.max_depth
            )
            kwargs = bind(binding, values)
            if binding.request_param is not None:
                kwargs[binding.request_param] = request
        except BodyError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except BindError as exc:
            return JSONResponse(
                {"detail": exc.detail, "error": validation_summary(exc.detail)}, status_code=422
            )
        try:
            result = await _call(binding, kwargs, guard)
            if inspect.isawaitable(result):
                result = await result
        except _RouteTimeout:
            message = (
                f"{request.method} {request.url.path} did not finish within "
                f"{guard.timeout:g}s (request timeout); its call is counted as stuck until it "
                "returns"
            )
            sys.stderr.write(f"error: {message}\n")
            sys.stderr.flush()
            return JSONResponse({"error": message}, status_code=504)
        except StarletteHTTPException:
            raise  # the user's deliberate HTTP error: FastAPI renders it
        except Exception as exc:
            return _error_response(request, exc)
        if isinstance(result, Response):
            return result
        try:
            return _json_response(result)
        except Exception as exc:  # a result that is not JSON-encodable is the function's bug
            return _error_response(request, exc)

    endpoint.__name__ = getattr(fn, "__name__", "endpoint")
    return endpoint


def _openapi(binding: RouteBinding) -> dict[str, Any] | None:
    """A request schema for the docs; None if the annotations have no JSON schema."""
    try:
        schema = binding.model.model_json_schema(by_alias=True)
    except Exception:
        return None
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    if binding.method in BODY_METHODS:
        if binding.whole_body is not None:
            body_schema = properties.get(binding.whole_body, {})
        else:
            body_schema = {k: v for k, v in schema.items() if k not in ("title",)}
        return {
            "requestBody": {
                "required": bool(required - binding.path_params),
                "content": {"application/json": {"schema": body_schema}},
            }
        }
    return {
        "parameters": [
            {
                "name": name,
                "in": "path" if name in binding.path_params else "query",
                "required": name in required or name in binding.path_params,
                "schema": prop,
            }
            for name, prop in properties.items()
        ]
    }


class _LoadBalancerApp(FastAPI):
    """FastAPI, serving the user's fixed-path routes without its per-request machinery.

    A request for one of them (exact method and path, no `{name}` segment) goes straight to
    its endpoint: FastAPI's telemetry probe, Starlette's error and exception middleware, the
    exit-stack middleware and the route-by-route regex matching cost a load balancer as much
    as the route itself, and our endpoints need none of it (they bind, validate and render
    errors themselves; no dependencies). What the endpoint leaves to FastAPI, an
    `HTTPException` raised by the user's code, goes to the app's exception handlers as in the
    full stack. Anything else (docs, `/ping`, HEAD, path parameters, an app given middleware
    later) takes the full stack.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.direct_routes: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.user_middleware and not self.root_path:
            endpoint = self.direct_routes.get((scope["method"], scope["path"]))
            if endpoint is not None:
                await self._serve_direct(endpoint, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _serve_direct(
        self,
        endpoint: Callable[[Request], Awaitable[Response]],
        scope: Any,
        receive: Any,
        send: Any,
    ) -> None:
        # What Starlette's app, router and route put in the scope (request.app, url_for...).
        scope["app"] = self
        scope["router"] = self.router
        scope["endpoint"] = endpoint
        scope["path_params"] = {}
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except StarletteHTTPException as exc:
            handler = self.exception_handlers.get(exc.status_code)
            if handler is None:
                handler = next(
                    (
                        self.exception_handlers[c]
                        for c in type(exc).__mro__
                        if c in self.exception_handlers
                    ),
                    None,
                )
            if handler is None:
                raise
            if inspect.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
            if response is None:
                return
        await response(scope, receive, send)


def _manifest_path(explicit: str | os.PathLike[str] | None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("FLASH_MANIFEST_PATH")
    if env:
        return Path(env)
    return Path.cwd() / "flash_manifest.json"


def _runpod_mothership(explicit: str | os.PathLike[str] | None) -> Mothership | None:
    """The RunPod mothership this endpoint is (None unless its template says so)."""
    if os.environ.get("FLASH_MOTHERSHIP_PLANE", "").strip().lower() != "runpod":
        return None
    # Imported here: no other endpoint pays for the provisioner's imports at start.
    from runtime.mothership import own_registry_env, runpod_mothership

    path = _manifest_path(explicit)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    name = os.environ.get("FLASH_RESOURCE_NAME", "")
    ship = runpod_mothership(path.parent, name, manifest, os.environ)
    if ship is not None:
        # A project's own mothership serves routes that call its children: its registry is its
        # own /manifest, as theirs is (read lazily, at the first call).
        for key, value in own_registry_env(os.environ).items():
            os.environ.setdefault(key, value)
    return ship


def create_lb_app(
    route_registry: Mapping[tuple[str, str], Any],
    include_execute: bool = False,
    is_mothership: bool = False,
    *,
    lifespan: Callable[[FastAPI], contextlib.AbstractAsyncContextManager[Any]] | None = None,
    manifest_path: str | os.PathLike[str] | None = None,
    title: str = "Flash Load-Balanced Handler",
) -> FastAPI:
    """Build the FastAPI app of a load-balanced endpoint.

    `route_registry` maps `(METHOD, path)` to the (possibly `@remote`-wrapped) function.
    Raises ValueError for an unknown method, a path not starting with "/" or a reserved path.
    """
    bindings: list[RouteBinding] = []
    for (method, path), function in route_registry.items():
        upper = str(method).upper()
        if upper not in BODY_METHODS | QUERY_METHODS:
            raise ValueError(f"route {method} {path}: unsupported HTTP method {method!r}")
        if not str(path).startswith("/"):
            raise ValueError(f"route {method} {path}: the path must start with '/'")
        if path in RESERVED_PATHS:
            raise ValueError(
                f"route {method} {path}: reserved path ({', '.join(sorted(RESERVED_PATHS))})"
            )
        bindings.append(route_binding(function, upper, str(path)))

    ship = _runpod_mothership(manifest_path) if is_mothership else None

    @contextlib.asynccontextmanager
    async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A mothership on RunPod provisions in the background: `/ping` answers at once.
        task = ship.start() if ship is not None else None
        try:
            if lifespan is None:
                app.state.flash_ready = True
                yield
            else:
                async with lifespan(app):
                    app.state.flash_ready = True
                    yield
        finally:
            app.state.flash_ready = False
            if task is not None:
                task.cancel()
                await ship.plane.aclose()  # type: ignore[union-attr]

    app = _LoadBalancerApp(title=title, lifespan=_lifespan)
    app.state.flash_ready = False
    app.state.route_bindings = bindings
    guard = CallGuard()
    app.state.flash_calls = guard

    @app.get("/ping", include_in_schema=False)
    async def ping() -> Response:
        if not app.state.flash_ready:
            return Response(status_code=204)
        unhealthy = guard.unhealthy()
        if unhealthy:
            return JSONResponse({"status": "unhealthy", "error": unhealthy}, status_code=503)
        return Response(b'{"status":"healthy"}', media_type="application/json")

    @app.get("/manifest", include_in_schema=False)
    async def manifest() -> Response:
        if not is_mothership:
            return JSONResponse({"error": "Only mothership serves manifest"}, status_code=403)
        if ship is not None:
            from runtime.mothership import manifest_answer

            status, body = await manifest_answer(ship)
            headers = {"Retry-After": "1"} if status == 503 else None
            return Response(
                body, status_code=status, media_type="application/json", headers=headers
            )
        path = _manifest_path(manifest_path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return JSONResponse({"error": "Manifest not found", "detail": str(path)}, 404)
        except (OSError, ValueError) as exc:
            return JSONResponse({"error": "Manifest unreadable", "detail": str(exc)}, 500)
        return JSONResponse(data)

    if include_execute:
        execute_handler = create_handler({b.function.__name__: b.function for b in bindings})

        @app.post("/execute", include_in_schema=False)
        async def execute(request: Request) -> Response:
            try:
                raw = await read_capped(request, guard.max_body_bytes)
                body = parse_json(raw, guard.max_depth) if raw else None
            except BodyError as exc:
                if not exc.invalid:
                    return JSONResponse({"error": exc.message}, status_code=exc.status)
                return JSONResponse({"success": False, "error": exc.message})
            if not isinstance(body, dict):
                return JSONResponse({"success": False, "error": "the body must be a JSON object"})
            body.pop("execution_type", None)  # /execute runs functions only
            return JSONResponse(await execute_handler({"id": "execute", "input": body}))

    for binding in bindings:
        endpoint = _make_endpoint(binding, guard)
        # Requests are served by a plain Starlette route (the endpoint does its own binding, so
        # FastAPI's per-request dependency solving would be pure overhead); a FastAPI route
        # registered after it, never reached, carries the OpenAPI description.
        app.router.routes.append(
            Route(binding.path, endpoint, methods=[binding.method], name=binding.function.__name__)
        )
        if not binding.path_params:
            app.direct_routes.setdefault((binding.method, binding.path), endpoint)
        app.add_api_route(
            binding.path,
            endpoint,
            methods=[binding.method],
            name=binding.function.__name__,
            summary=binding.function.__name__,
            description=inspect.getdoc(binding.function) or "",
            openapi_extra=_openapi(binding),
        )
    return app
