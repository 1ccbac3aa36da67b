"""Calling a `@remote` function: in this process, or on its endpoint over HTTP.

`runtime.remote`'s wrapper awaits `dispatch(original, resource_name, args, kwargs)`:

- local execution when no service registry is configured (development: `python main.py`) or
  when the function belongs to the endpoint this process serves (`FLASH_RESOURCE_NAME`);
  async functions are awaited, sync ones run in a thread so a worker's loop never blocks;
- otherwise an HTTP call to the owning endpoint, found through `runtime.registry`, on a kept-alive
  connection of this event loop's `runtime.httpwire` pool (httpx for `https://` endpoints):
  - queue-based: `POST /runsync` with the upstream job input (`function_name`,
    `execution_type`, base64-cloudpickle `args`/`kwargs`), polling `/status/{id}` if the job
    outlives the runsync wait; the result is unpickled. To a worker on this machine whose
    answer named its frame socket, the same body goes as a frame (`runtime.local_frames`);
  - load-balanced: the function's route with its parameters by name (JSON body for
    POST/PUT/PATCH, query parameters for GET/DELETE, `{name}` path segments filled in); the
    JSON answer is returned as is;
  - live load-balanced: `POST /execute` (function name + source, pickled arguments).

A decorated class owned by another endpoint is a `runtime.remote_class.RemoteClass`: its
instances' method calls are class jobs on the owner's queue (`call_class_method`).

A failure on the far side raises `RemoteExecutionError` carrying the remote traceback text;
an unknown endpoint raises `EndpointNotFoundError`; a call that exceeds `FLASH_CALL_TIMEOUT`
seconds (default 300) raises `TimeoutError`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import os
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from runtime.errors import TRACEBACK_HEADER, RemoteExecutionError
from runtime.httpwire import ConnectionPool, Response
from runtime.local_frames import FrameClient
from runtime.registry import EndpointInfo, FunctionTarget, ServiceRegistry
from runtime.serialization import (
    class_job,
    deserialize,
    function_job,
    serialize_args,
    serialize_kwargs,
)

if TYPE_CHECKING:
    from runtime.route_binding import RouteBinding

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "call_class_method",
    "call_remote",
    "dispatch",
    "function_source",
    "get_registry",
    "reset",
    "run_local",
    "set_registry",
]

DEFAULT_CALL_TIMEOUT = 300.0
_UNSET: Any = object()
_registry: Any = _UNSET
# Per event loop (a connection belongs to the loop that opened it): the keep-alive pool for
# http:// endpoints, and an httpx client for https:// ones.
_clients: dict[int, tuple[asyncio.AbstractEventLoop, ConnectionPool]] = {}
_tls_clients: dict[int, tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = {}
_frame_clients: dict[int, tuple[asyncio.AbstractEventLoop, FrameClient]] = {}
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_HttpResponse = Response | httpx.Response


def get_registry() -> ServiceRegistry | None:
    """The process's service registry (built from the environment once), or None."""
    global _registry
    if _registry is _UNSET:
        _registry = ServiceRegistry.from_env()
    return _registry


def set_registry(registry: ServiceRegistry | None) -> None:
    """Use `registry` for this process's calls (tests, embedding)."""
    global _registry
    _registry = registry


def reset() -> None:
    """Forget the registry (rebuilt from the environment on next use) and HTTP clients."""
    global _registry
    _registry = _UNSET
    _clients.clear()
    _tls_clients.clear()
    for _, frames in _frame_clients.values():
        frames.close()
    _frame_clients.clear()


def _timeout() -> float:
    try:
        return float(os.environ.get("FLASH_CALL_TIMEOUT") or DEFAULT_CALL_TIMEOUT)
    except ValueError:
        return DEFAULT_CALL_TIMEOUT


def _pool() -> ConnectionPool:
    """This event loop's keep-alive pool for http:// endpoints."""
    loop = asyncio.get_running_loop()
    entry = _clients.get(id(loop))
    if entry is None or entry[0] is not loop or entry[1].is_closed:
        pool = ConnectionPool(timeout=_timeout(), connect_timeout=10.0)
        _clients[id(loop)] = (loop, pool)
        return pool
    return entry[1]


def _frame_client() -> FrameClient:
    """This event loop's connections to same-machine workers' frame sockets."""
    loop = asyncio.get_running_loop()
    entry = _frame_clients.get(id(loop))
    if entry is None or entry[0] is not loop:
        client = FrameClient(timeout=_timeout(), connect_timeout=10.0)
        _frame_clients[id(loop)] = (loop, client)
        return client
    return entry[1]


def _tls_client() -> httpx.AsyncClient:
    """This event loop's httpx client for https:// endpoints."""
    loop = asyncio.get_running_loop()
    entry = _tls_clients.get(id(loop))
    if entry is None or entry[0] is not loop or entry[1].is_closed:
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(_timeout(), connect=10.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        _tls_clients[id(loop)] = (loop, client)
        return client
    return entry[1]


async def _http(
    method: str,
    url: str,
    *,
    params: Any = None,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
) -> _HttpResponse:
    """One request to an endpoint: the keep-alive pool for http://, httpx for https://."""
    if url.startswith("http://"):
        return await _pool().request(method, url, params=params, json=json, headers=headers)
    return await _tls_client().request(method, url, params=params, json=json, headers=headers)


async def run_local(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """Run `fn` here: awaited if async, in a thread if sync."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    result = await asyncio.to_thread(fn, *args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


async def dispatch(
    original: Callable[..., Any],
    resource_name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> Any:
    """Run a decorated function where it belongs (see the module docstring)."""
    registry = get_registry()
    if registry is None or registry.is_local(resource_name):
        return await run_local(original, args, kwargs)
    return await call_remote(registry, original, resource_name, args, kwargs)


@functools.lru_cache(maxsize=256)
def function_source(fn: Callable[..., Any]) -> str:
    """The function's source from its `def` line (decorators dropped), dedented."""
    try:
        lines = inspect.getsource(fn).splitlines(keepends=True)
    except (OSError, TypeError):
        return ""
    text = textwrap.dedent("".join(lines))
    for marker in ("async def ", "def "):
        index = text.find(marker)
        if index != -1 and (index == 0 or text[index - 1] == "\n"):
            return text[index:]
    return text


def _remote_config(original: Callable[..., Any]) -> Mapping[str, Any]:
    """`__remote_config__` of the wrapper that wraps `original` (it lives on the wrapper)."""
    module = sys.modules.get(getattr(original, "__module__", "") or "")
    wrapper = getattr(module, getattr(original, "__name__", ""), None) if module else None
    config = getattr(wrapper, "__remote_config__", None) or getattr(
        original, "__remote_config__", None
    )
    return config if isinstance(config, Mapping) else {}


def _target(
    registry: ServiceRegistry, original: Callable[..., Any], resource: str
) -> FunctionTarget:
    name = original.__name__
    target = registry.function_target(name, resource)
    if registry.knows_resource(resource) and (
        not target.is_load_balanced or (target.http_method and target.http_path)
    ):
        return target
    # Not (fully) in the manifest: fall back to what the decorator recorded.
    config = _remote_config(original)
    resource_config = config.get("resource_config")
    kind = type(resource_config) if resource_config is not None else None
    return FunctionTarget(
        name=name,
        resource=resource,
        resource_type=kind.__name__ if kind else target.resource_type,
        is_load_balanced=bool(getattr(kind, "is_load_balanced", target.is_load_balanced)),
        is_live=bool(getattr(kind, "is_live", target.is_live)),
        http_method=(config.get("method") or target.http_method or None),
        http_path=(config.get("path") or target.http_path or None),
    )


async def call_remote(
    registry: ServiceRegistry,
    original: Callable[..., Any],
    resource_name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> Any:
    """Call `original` on the endpoint `resource_name` over HTTP."""
    target = _target(registry, original, resource_name)
    return await _on_endpoint(registry, target, _FunctionCall(target, original, args, kwargs).send)


async def call_class_method(
    cls: type,
    resource_name: str,
    constructor: tuple[Sequence[Any], Mapping[str, Any]],
    method_name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    instance_id: str | None = None,
    create_new_instance: bool = True,
) -> Any:
    """Call `cls(*constructor).method_name(*args, **kwargs)` where `cls` belongs.

    On a queue-based endpoint elsewhere this is a class job; `instance_id` with
    `create_new_instance=False` reuses the instance an earlier call created there.
    """
    registry = get_registry()
    ctor_args, ctor_kwargs = constructor
    if registry is None or registry.is_local(resource_name):
        method = getattr(cls(*ctor_args, **ctor_kwargs), method_name)
        return await run_local(method, args, kwargs)
    target = registry.function_target(cls.__name__, resource_name)
    if registry.knows_resource(resource_name) and target.is_load_balanced:
        raise RemoteExecutionError(
            f"{cls.__name__} is on the load-balanced endpoint {resource_name}: classes run "
            "only on queue-based endpoints",
            endpoint=resource_name,
        )
    job_input = class_job(
        cls.__name__,
        method_name,
        constructor,
        args,
        kwargs,
        instance_id=instance_id,
        create_new_instance=create_new_instance,
    )
    return await _on_endpoint(
        registry, target, lambda endpoint: _call_queue(target, endpoint, job_input)
    )


async def _on_endpoint(
    registry: ServiceRegistry,
    target: FunctionTarget,
    send: Callable[[EndpointInfo], Awaitable[Any]],
) -> Any:
    """`send` to the target's endpoint, following it once if it moved; transport errors raise."""
    resource_name = target.resource
    endpoint = await registry.endpoint(resource_name)
    for attempt in range(2):
        try:
            return await send(endpoint)
        except httpx.TimeoutException as exc:
            raise TimeoutError(
                f"{target.name} on {resource_name} did not answer within {_timeout():g}s"
            ) from exc
        except httpx.TransportError as exc:
            # The endpoint may have been restarted elsewhere: look again once, and retry only
            # if it moved (a request that may have reached the old one is not resent there).
            fresh = await registry.endpoint(resource_name, refresh=True) if attempt == 0 else None
            if fresh is None or (fresh.url == endpoint.url and fresh.key == endpoint.key):
                raise RemoteExecutionError(
                    f"cannot reach {endpoint.url}: {type(exc).__name__}: {exc}",
                    endpoint=resource_name,
                ) from exc
            endpoint = fresh
    raise AssertionError("unreachable")  # the loop always returns or raises


def _raise_http_error(target: FunctionTarget, response: _HttpResponse) -> None:
    message, tb = response.text[:500], ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        message = str(body.get("error") or body.get("detail") or message)
        tb = str(body.get("traceback") or "")
    raise RemoteExecutionError(
        f"HTTP {response.status_code}: {message}",
        remote_traceback=tb,
        endpoint=target.resource,
        status=response.status_code,
    )


def _decode_function_response(target: FunctionTarget, output: Any, error: Any = None) -> Any:
    """Unpickle a `{success, result}` answer or raise with the remote error and traceback."""
    if isinstance(output, Mapping) and output.get("success") and error is None:
        if "result" not in output:
            raise RemoteExecutionError("the answer has no result", endpoint=target.resource)
        return deserialize(output["result"])
    tb = str(output.get("traceback") or "") if isinstance(output, Mapping) else ""
    if error is None and isinstance(output, Mapping):
        error = output.get("error")
    raise RemoteExecutionError(
        str(error or "the remote function failed without an error message"),
        remote_traceback=tb,
        endpoint=target.resource,
    )


_TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})


async def _call_queue(
    target: FunctionTarget, endpoint: EndpointInfo, job_input: Mapping[str, Any]
) -> Any:
    timeout = _timeout()
    deadline = time.monotonic() + timeout
    payload = {"input": job_input}
    wait_ms = int(min(60.0, timeout) * 1000)
    response = await _runsync_here(endpoint, payload, wait_ms)
    if response is None:
        response = await _http(
            "POST",
            f"{endpoint.url}/runsync?wait={wait_ms}",
            json=payload,
            headers=endpoint.headers(),
        )
    if response.status_code >= 400:
        _raise_http_error(target, response)
    job = response.json()
    pause = 0.05
    while job.get("status") not in _TERMINAL:
        if time.monotonic() > deadline:
            # Free the remote worker's slot before giving up.
            try:
                await _http(
                    "POST", f"{endpoint.url}/cancel/{job.get('id')}", headers=endpoint.headers()
                )
            except httpx.HTTPError:
                pass
            raise TimeoutError(
                f"{target.name} on {target.resource} did not finish within {_timeout():g}s"
            )
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, 1.0)
        response = await _http(
            "GET", f"{endpoint.url}/status/{job.get('id')}", headers=endpoint.headers()
        )
        if response.status_code >= 400:
            _raise_http_error(target, response)
        job = response.json()
    status = job.get("status")
    if status == "COMPLETED":
        return _decode_function_response(target, job.get("output"))
    if status == "FAILED":
        return _decode_function_response(
            target, job.get("output") or {}, job.get("error") or "job failed"
        )
    raise RemoteExecutionError(
        f"job {job.get('id')} ended {status}: {job.get('error') or ''}".rstrip(": "),
        endpoint=target.resource,
    )


async def _runsync_here(
    endpoint: EndpointInfo, payload: Mapping[str, Any], wait_ms: int
) -> Response | None:
    """The `/runsync` over the worker's frame socket when it is on this machine and an answer
    named one (`runtime.local_frames`); None: send it over HTTP."""
    if not endpoint.url.startswith("http://"):
        return None
    pool = _pool()
    path = pool.frame_socket(endpoint.url)
    if path is None:
        return None
    body = _dumps(payload).encode()
    response = await _frame_client().runsync(path, body, wait_ms, key=endpoint.key)
    if response is None:  # gone (stopped or replaced): HTTP, whose answer names the new one
        pool.forget_frame_socket(endpoint.url)
    return response


def _jsonable(value: Any) -> Any:
    from fastapi.encoders import jsonable_encoder  # only LB calls need it

    return jsonable_encoder(value)


@dataclass(frozen=True)
class _FunctionCall:
    """One call of a decorated function: the function, its arguments and where it runs."""

    target: FunctionTarget
    original: Callable[..., Any]
    args: Sequence[Any]
    kwargs: Mapping[str, Any]

    async def send(self, endpoint: EndpointInfo) -> Any:
        """Send the call the way its endpoint takes it: a job, `/execute`, or its own route."""
        target = self.target
        if not target.is_load_balanced:
            job = function_job(target.name, self.args, self.kwargs)
            return await _call_queue(target, endpoint, job)
        if target.is_live or not (target.http_method and target.http_path):
            return await self._execute(endpoint)
        return await self._route(endpoint)

    async def _execute(self, endpoint: EndpointInfo) -> Any:
        body: dict[str, Any] = {
            "function_name": self.target.name,
            "function_code": function_source(self.original),
            "dependencies": [],
            "system_dependencies": [],
        }
        if self.args:
            body["args"] = serialize_args(self.args)
        if self.kwargs:
            body["kwargs"] = serialize_kwargs(self.kwargs)
        url = f"{endpoint.url}/execute"
        response = await _http("POST", url, json=body, headers=endpoint.headers())
        if response.status_code >= 400:
            _raise_http_error(self.target, response)
        return _decode_function_response(self.target, response.json())

    async def _route(self, endpoint: EndpointInfo) -> Any:
        from runtime.route_binding import QUERY_METHODS

        target, original = self.target, self.original
        method, path = str(target.http_method), str(target.http_path)
        binding = _binding(original, method, path)
        try:
            bound = inspect.signature(original).bind_partial(*self.args, **self.kwargs)
        except TypeError as exc:
            raise TypeError(f"{target.name}(): {exc}") from None
        values: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            param = bound.signature.parameters[name]
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                values.update(value)
            elif param.kind is not inspect.Parameter.VAR_POSITIONAL:
                values[name] = value
        for name in binding.path_params:
            if name in values:
                path = path.replace(f"{{{name}}}", quote(str(values.pop(name)), safe=""))
        headers = {**endpoint.headers(), TRACEBACK_HEADER: "1"}
        url = f"{endpoint.url}{path}"
        if method in QUERY_METHODS:
            params: list[tuple[str, str]] = []
            for name, value in values.items():
                if value is None:
                    continue
                if isinstance(value, (list, tuple, set, frozenset)):
                    params += [(name, _query_text(item)) for item in value]
                else:
                    params.append((name, _query_text(value)))
            response = await _http(method, url, params=params, headers=headers)
        else:
            if binding.whole_body is not None:
                body = _jsonable(values.get(binding.whole_body, {}))
            else:
                body = _jsonable(values)
            response = await _http(method, url, json=body, headers=headers)
        if response.status_code >= 400:
            _raise_http_error(target, response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text


def _query_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return json.dumps(_jsonable(value))


_bindings: dict[tuple[Callable[..., Any], str, str], RouteBinding] = {}


def _binding(fn: Callable[..., Any], method: str, path: str) -> RouteBinding:
    """The route binding of `fn`, analysed once (imported late: only LB calls need FastAPI)."""
    from runtime.route_binding import route_binding

    key = (fn, method, path)
    binding = _bindings.get(key)
    if binding is None:
        binding = _bindings[key] = route_binding(fn, method, path)
    return binding
