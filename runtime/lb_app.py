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
The routes are still FastAPI routes, with a generated OpenAPI schema for each.

Also served: `GET /ping` (204 until the app's startup finished, then 200), `POST /execute`
only when `include_execute` (live endpoints: run a function by name or shipped code, upstream
body and `{success, result | error}` answer), `GET /manifest` (the local manifest on the
mothership, 403 elsewhere).
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import inspect
import json
import os
import re
import sys
import types
import typing
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from runtime.payload import DEFAULT_MAX_DEPTH, BodyError, parse_json, validation_summary
from runtime.qb_handler import create_handler, format_user_traceback, unwrap, user_location

__all__ = [
    "BODY_METHODS",
    "CallGuard",
    "RESERVED_PATHS",
    "RouteBinding",
    "TRACEBACK_HEADER",
    "create_lb_app",
    "route_binding",
]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
QUERY_METHODS = frozenset({"GET", "DELETE"})
RESERVED_PATHS = frozenset({"/ping", "/execute", "/manifest"})
# A caller that sends this header gets the remote traceback in a 500 body (cross-endpoint
# calls do); other clients get only the error line.
TRACEBACK_HEADER = "x-flash-traceback"
MAX_BODY_BYTES = 30 * 1024 * 1024  # RunPod's load-balancer payload limit
DEFAULT_MAX_STUCK = 40  # anyio's default thread limiter: 40 stuck calls leave no thread

_PATH_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?}")
_NONE_TYPE = type(None)


def _strip_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(annotation) if a is not _NONE_TYPE]
        if len(members) == 1:
            return members[0]
    return annotation


def _is_mapping(annotation: Any) -> bool:
    annotation = _strip_optional(annotation)
    origin = typing.get_origin(annotation) or annotation
    return origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _is_model(annotation: Any) -> bool:
    annotation = _strip_optional(annotation)
    return inspect.isclass(annotation) and issubclass(annotation, pydantic.BaseModel)


def _is_sequence(annotation: Any) -> bool:
    annotation = _strip_optional(annotation)
    origin = typing.get_origin(annotation) or annotation
    return origin in (list, tuple, set, frozenset, collections.abc.Sequence)


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


@dataclass(frozen=True)
class RouteBinding:
    """How requests bind to one function's parameters (shared with `runtime.calls`)."""

    function: Callable[..., Any]
    method: str
    path: str
    params: tuple[str, ...]  # bindable parameter names, in signature order
    path_params: frozenset[str]
    whole_body: str | None  # the lone dict/model parameter that receives the whole body
    list_param: str | None  # a lone list parameter (accepts a bare JSON array too)
    sequence_params: frozenset[str]  # list-like: repeated query parameters
    structured_params: frozenset[str]  # dict/model/list: a JSON string in a query is decoded
    var_keyword: bool  # **kwargs: unknown fields are passed through instead of rejected
    request_param: str | None  # a parameter annotated `Request` receives the request
    model: type[pydantic.BaseModel]
    aliases: tuple[tuple[str, str], ...]  # (model field, parameter name)
    is_async: bool


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        return dict(getattr(fn, "__annotations__", {}) or {})


def route_binding(function: Any, method: str, path: str) -> RouteBinding:
    """Analyse a route function's signature once (at app creation)."""
    fn = unwrap(function)
    method = method.upper()
    signature = inspect.signature(fn)
    hints = _hints(fn)
    path_params = frozenset(_PATH_PARAM.findall(path))
    params: list[str] = []
    fields: dict[str, Any] = {}
    aliases: list[tuple[str, str]] = []
    sequence: set[str] = set()
    structured: set[str] = set()
    var_keyword = False
    request_param: str | None = None
    for index, param in enumerate(signature.parameters.values()):
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        annotation = hints.get(param.name, Any)
        if annotation is inspect.Parameter.empty:
            annotation = Any
        if inspect.isclass(annotation) and issubclass(annotation, Request):
            request_param = param.name  # FastAPI style: the request object itself
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        # Internal field names avoid clashes with BaseModel attributes and "_private" names;
        # the alias keeps the parameter's own name in requests and in error locations.
        field = f"p{index}"
        fields[field] = (annotation, pydantic.Field(default, alias=param.name))
        aliases.append((field, param.name))
        params.append(param.name)
        if _is_sequence(annotation):
            sequence.add(param.name)
        if _is_sequence(annotation) or _is_mapping(annotation) or _is_model(annotation):
            structured.add(param.name)
    body_params = [p for p in params if p not in path_params]
    whole_body = None
    list_param = None
    if len(body_params) == 1 and not var_keyword:
        only = body_params[0]
        if _is_mapping(hints.get(only)) or _is_model(hints.get(only)):
            whole_body = only
        elif only in sequence:
            list_param = only
    config = pydantic.ConfigDict(
        extra="allow" if var_keyword else "forbid",
        arbitrary_types_allowed=True,
        populate_by_name=False,
    )
    model = pydantic.create_model(  # type: ignore[call-overload]
        f"{fn.__name__}_request", __config__=config, **fields
    )
    return RouteBinding(
        function=fn,
        method=method,
        path=path,
        params=tuple(params),
        path_params=path_params,
        whole_body=whole_body,
        list_param=list_param,
        sequence_params=frozenset(sequence),
        structured_params=frozenset(structured),
        var_keyword=var_keyword,
        request_param=request_param,
        model=model,
        aliases=tuple(aliases),
        is_async=inspect.iscoroutinefunction(fn),
    )


class _BindError(Exception):
    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.detail = detail


def _query_values(binding: RouteBinding, request: Request) -> dict[str, Any]:
    query = request.query_params
    values: dict[str, Any] = {}
    for key in query:
        if key in values:
            continue
        if key in binding.sequence_params:
            items = query.getlist(key)
            if len(items) == 1 and items[0].startswith("["):
                values[key] = _maybe_json(items[0])
            else:
                values[key] = items
        elif key in binding.structured_params:
            values[key] = _maybe_json(query[key])
        else:
            values[key] = query[key]
    return values


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _read_capped(request: Request, limit: int) -> bytes:
    """The request body; BodyError(413) once it passes `limit` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyError(413, f"request body too large (limit {limit} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyError(413, f"request body too large (limit {limit} bytes)")
        chunks.append(chunk)
    body = b"".join(chunks)
    # Starlette's own cache of the body: a route taking the Request can still read it.
    request._body = body
    return body


async def _request_values(
    binding: RouteBinding, request: Request, guard: CallGuard
) -> dict[str, Any]:
    """The raw (unvalidated) parameter values of a request."""
    body_json: Any = None
    raw = await _read_capped(request, guard.max_body_bytes)
    if raw:
        try:
            body_json = parse_json(raw, guard.max_depth)
        except BodyError as exc:
            if not exc.invalid:
                raise
            cause = exc.__cause__ or exc
            raise _BindError(
                [{"type": "json_invalid", "loc": ["body"], "msg": f"JSON decode error: {cause}"}]
            ) from exc
    if binding.method in QUERY_METHODS and (
        request.scope.get("query_string") or not isinstance(body_json, dict)
    ):
        values = _query_values(binding, request)
    elif binding.whole_body is not None:
        values = {binding.whole_body: {} if body_json is None else body_json}
    elif binding.list_param is not None and isinstance(body_json, list):
        values = {binding.list_param: body_json}
    elif body_json is None:
        values = {}
    elif isinstance(body_json, dict):
        values = body_json
    else:
        names = ", ".join(p for p in binding.params if p not in binding.path_params)
        raise _BindError(
            [
                {
                    "type": "model_attributes_type",
                    "loc": ["body"],
                    "msg": f"expected a JSON object with the fields: {names}",
                }
            ]
        )
    if binding.path_params:
        values = {**values, **request.path_params}
    return values


def _bind(binding: RouteBinding, values: dict[str, Any]) -> dict[str, Any]:
    """Validate and coerce the values; the keyword arguments of the call."""
    try:
        validated = binding.model.model_validate(values)
    except pydantic.ValidationError as exc:
        detail = []
        for error in exc.errors(include_url=False, include_context=False):
            name = error["loc"][0] if error["loc"] else None
            where = (
                "path"
                if name in binding.path_params
                else ("query" if binding.method in QUERY_METHODS else "body")
            )
            if binding.whole_body is not None and name == binding.whole_body:
                loc = ["body", *error["loc"][1:]]
            else:
                loc = [where, *error["loc"]]
            # No "input": the rejected value may be a secret, and it was the caller's anyway.
            item = {"type": error["type"], "loc": loc, "msg": error["msg"]}
            detail.append(jsonable_encoder(item))
        raise _BindError(detail) from exc
    kwargs = {name: getattr(validated, field) for field, name in binding.aliases}
    if binding.var_keyword and validated.model_extra:
        kwargs.update(validated.model_extra)
    return kwargs


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
            kwargs = _bind(binding, await _request_values(binding, request, guard))
            if binding.request_param is not None:
                kwargs[binding.request_param] = request
        except BodyError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except _BindError as exc:
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


def _manifest_path(explicit: str | os.PathLike[str] | None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("FLASH_MANIFEST_PATH")
    if env:
        return Path(env)
    return Path.cwd() / "flash_manifest.json"


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

    @contextlib.asynccontextmanager
    async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
        if lifespan is None:
            app.state.flash_ready = True
            yield
        else:
            async with lifespan(app):
                app.state.flash_ready = True
                yield
        app.state.flash_ready = False

    app = FastAPI(title=title, lifespan=_lifespan)
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
                raw = await _read_capped(request, guard.max_body_bytes)
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
