"""Invoke a deployed endpoint: an LB route, or a QB function through the RunPod job API.

Targets are named the way a person would (`resolve_call`):

- `"POST /compute"`, `"/compute"` (method inferred when the path has one route),
  `"api:/compute"`, `"api:POST /compute"`: a load-balanced route;
- `"embed"`, `"gpu_worker:embed"`: a queue-based function (found through the manifest's
  function registry); `"cpu_worker:TextAnalyzer.keywords"`: a method of a QB class.

LB calls send the data as the JSON body (as the query string for GET/DELETE). QB calls send a
`/runsync` job in the upstream contract (kwargs as base64 cloudpickle; for a class, data keys
`init` (constructor kwargs) and the rest as method kwargs), wait for it (polling `/status` if
`/runsync` returns before the job ends) and decode the result. Both report status, latency and
the decoded result; a call that fails in user code carries a `RemoteError` (type, message and
the file:line of the deepest user-code frame) for both kinds. The key is sent, never shown:
`curl_command` prints a placeholder unless asked to reveal it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from engine.provider import EndpointTarget
from runtime.errors import TRACEBACK_HEADER
from runtime.payload import validation_summary

if TYPE_CHECKING:  # httpx is imported by the first call: the TUI's first frame needs none
    import httpx

__all__ = [
    "CallSpec",
    "InvokeError",
    "InvokeResult",
    "JSONText",
    "RemoteError",
    "build_job",
    "curl_command",
    "invoke",
    "loads_strict",
    "resolve_call",
]

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+)', re.MULTILINE)


class InvokeError(Exception):
    """The call could not be resolved or sent; the message says why."""


def loads_strict(text: str) -> Any:
    """Parse JSON the way a server reads it; ValueError naming what is not JSON.

    Python's `json` accepts NaN, Infinity and out-of-range numbers and keeps the last of
    duplicate keys; a server may do otherwise, so none of them is sent silently.
    """

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON value")

    def number(literal: str) -> float:
        value = float(literal)
        if value in (float("inf"), float("-inf")):
            raise ValueError(f"the number {literal} is out of range")
        return value

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen[key] = value
        return seen

    return json.loads(text, parse_constant=constant, parse_float=number, object_pairs_hook=pairs)


class JSONText(str):
    """A request body exactly as a person typed it (the route tester's editor).

    A load-balanced route that takes a body is sent these characters unchanged; query strings
    and queue-based keyword arguments get `value`. Blank text means no body.
    """

    @property
    def value(self) -> Any:
        """The parsed body (None when blank); raises ValueError as `loads_strict` does."""
        return loads_strict(self) if self.strip() else None


def _unwrap(data: Any) -> tuple[Any, str | None]:
    """(parsed data, the exact text to send as a body, if the caller gave one)."""
    if not isinstance(data, JSONText):
        return data, None
    try:
        value = data.value
    except ValueError as exc:
        raise InvokeError(f"the body is not valid JSON: {exc}") from exc
    return value, (str(data) if value is not None else None)


@dataclass(frozen=True)
class CallSpec:
    """A resolved call: which endpoint, and which route or function."""

    endpoint: str
    is_load_balanced: bool
    method: str | None = None
    path: str | None = None
    function: str | None = None
    class_method: str | None = None

    def describe(self) -> str:
        """`api POST /compute` or `gpu_worker embed()`."""
        if self.is_load_balanced:
            return f"{self.endpoint} {self.method} {self.path}"
        name = f"{self.function}.{self.class_method}" if self.class_method else self.function
        return f"{self.endpoint} {name}()"


@dataclass(frozen=True)
class RemoteError:
    """An exception raised by the endpoint's code: what, and where in the user's code."""

    type: str
    message: str
    location: str | None = None  # file:line of the deepest user-code frame
    traceback: str = ""

    def summary(self) -> str:
        """`KeyError: 'x' (at userfns.py:12)`."""
        text = f"{self.type}: {self.message}" if self.message else self.type
        return f"{text} (at {self.location})" if self.location else text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "type": self.type,
            "message": self.message,
            "location": self.location,
            "traceback": self.traceback,
        }

    @classmethod
    def from_body(cls, body: Any) -> RemoteError | None:
        """From a worker's structured error (LB 500 body or failed QB job output), if any."""
        if not isinstance(body, Mapping):
            return None
        error = body.get("error")
        kind = body.get("type") or body.get("error_type")
        message = body.get("message")
        if not isinstance(kind, str) or not kind:
            # An older worker: `error` is "Type: message" when it came from an exception.
            if not isinstance(error, str) or not body.get("traceback"):
                return None
            kind, _, message = error.partition(": ")
        tb = str(body.get("traceback") or "")
        location = body.get("location")
        if not isinstance(location, str) or not location:
            frames = _FRAME.findall(tb)
            location = f"{frames[-1][0]}:{frames[-1][1]}" if frames else None
        return cls(kind, str(message if message is not None else ""), location, tb)


@dataclass
class InvokeResult:
    """The outcome of one call."""

    call: CallSpec
    url: str
    ok: bool
    status_code: int | None
    latency_ms: float
    result: Any = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    job_status: str | None = None
    remote_error: RemoteError | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`invoke --json`)."""
        return {
            "endpoint": self.call.endpoint,
            "call": self.call.describe(),
            "url": self.url,
            "ok": self.ok,
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "job_status": self.job_status,
            "result": _jsonable(self.result),
            "error": self.error,
            "remote_error": self.remote_error.to_dict() if self.remote_error else None,
        }


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _functions(manifest: Mapping[str, Any], resource: str) -> list[Mapping[str, Any]]:
    entry = (manifest.get("resources") or {}).get(resource) or {}
    return [f for f in entry.get("functions") or [] if isinstance(f, Mapping)]


def _is_lb(manifest: Mapping[str, Any], resource: str) -> bool:
    entry = (manifest.get("resources") or {}).get(resource) or {}
    return bool(entry.get("is_load_balanced"))


def _routes(manifest: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(resource, METHOD, path) of every LB route."""
    out = []
    for resource in sorted(manifest.get("resources") or {}):
        if not _is_lb(manifest, resource):
            continue
        for fn in _functions(manifest, resource):
            if fn.get("http_method") and fn.get("http_path"):
                out.append((resource, str(fn["http_method"]).upper(), str(fn["http_path"])))
    return out


def resolve_call(manifest: Mapping[str, Any], target: str) -> CallSpec:
    """Resolve a target string against the manifest (see the module docstring)."""
    text = target.strip()
    resources = manifest.get("resources") or {}
    endpoint: str | None = None
    rest = text
    head, sep, tail = text.partition(":")
    if sep and head in resources:
        endpoint, rest = head, tail.strip()
    method: str | None = None
    parts = rest.split(None, 1)
    if len(parts) == 2 and parts[0].upper() in _METHODS:
        method, rest = parts[0].upper(), parts[1].strip()
    if rest.startswith("/"):
        matches = [
            r
            for r in _routes(manifest)
            if r[2] == rest and (method is None or r[1] == method) and endpoint in (None, r[0])
        ]
        if not matches:
            raise InvokeError(f"no load-balanced route matches {text!r}")
        if len(matches) > 1:
            options = ", ".join(f"{r[0]}:{r[1]} {r[2]}" for r in matches)
            raise InvokeError(f"{text!r} is ambiguous: {options}")
        resource, route_method, path = matches[0]
        return CallSpec(resource, True, method=route_method, path=path)
    name, _, class_method = rest.partition(".")
    if endpoint is None:
        registry = manifest.get("function_registry") or {}
        endpoint = registry.get(name)
        if endpoint is None:
            if text in resources:
                raise InvokeError(
                    f"{text!r} is an endpoint: name a route (`{text}:/path`) or a function "
                    f"(`{text}:function`)"
                )
            raise InvokeError(f"no function or route named {text!r} in the manifest")
    fn = next((f for f in _functions(manifest, endpoint) if f.get("name") == name), None)
    if fn is None:
        raise InvokeError(f"endpoint {endpoint!r} has no function {name!r}")
    if _is_lb(manifest, endpoint):
        return CallSpec(
            endpoint,
            True,
            method=str(fn.get("http_method") or "POST").upper(),
            path=str(fn.get("http_path") or "/"),
            function=name,
        )
    if fn.get("is_class") and not class_method:
        methods = ", ".join(fn.get("class_methods") or []) or "?"
        raise InvokeError(f"{name} is a class: call a method, e.g. {name}.<method> ({methods})")
    return CallSpec(endpoint, False, function=name, class_method=class_method or None)


@dataclass(frozen=True)
class CallSignature:
    """A call the project offers, with the parameters its body carries."""

    call: CallSpec
    signature: tuple[Mapping[str, Any], ...] = ()
    # For a class method: the constructor's parameters (sent under `init`).
    init_signature: tuple[Mapping[str, Any], ...] = ()


def list_calls(manifest: Mapping[str, Any]) -> list[CallSignature]:
    """Every call of the manifest: LB routes, QB functions, class methods one by one."""
    calls = []
    for endpoint in sorted(manifest.get("resources") or {}):
        is_lb = _is_lb(manifest, endpoint)
        for fn in _functions(manifest, endpoint):
            name = str(fn.get("name"))
            signature = tuple(fn.get("signature") or ())
            if is_lb:
                # The same call `resolve_call` makes of the function's name.
                method = str(fn.get("http_method") or "POST").upper()
                path = str(fn.get("http_path") or "/")
                spec = CallSpec(endpoint, True, method=method, path=path, function=name)
                calls.append(CallSignature(spec, signature))
            elif fn.get("is_class"):
                methods = fn.get("method_signatures") or {}
                for m in fn.get("class_methods") or []:
                    spec = CallSpec(endpoint, False, function=name, class_method=m)
                    calls.append(CallSignature(spec, tuple(methods.get(m) or ()), signature))
            else:
                calls.append(CallSignature(CallSpec(endpoint, False, function=name), signature))
    return calls


def build_job(call: CallSpec, data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `/runsync` body of a QB call (upstream job contract)."""
    # Here, not at the top: cloudpickle is a cost every headless command would pay.
    from runtime.serialization import class_job, function_job

    data = dict(data or {})
    if call.class_method:
        init = data.pop("init", None) or {}
        if not isinstance(init, Mapping):
            raise InvokeError(
                '"init" must be a JSON object of constructor arguments, got '
                f'{json.dumps(init)} (e.g. {{"init": {{"name": 1}}}})'
            )
        return {"input": class_job(call.function, call.class_method, ((), dict(init)), (), data)}
    return {"input": function_job(call.function, (), data)}


def _response_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


async def invoke(
    target: EndpointTarget,
    call: CallSpec,
    data: Any = None,
    *,
    timeout: float = 120.0,
    client: httpx.AsyncClient | None = None,
    headers: Mapping[str, str] | None = None,
) -> InvokeResult:
    """Send the call and return status, latency and the decoded result (`headers`: extra ones)."""
    import httpx

    data, raw = _unwrap(data)
    if headers:
        target = replace(target, extra_headers=tuple(headers.items()))
    own = client is None
    http = client or httpx.AsyncClient(trust_env=False)
    started = time.perf_counter()
    try:
        if call.is_load_balanced:
            return await _invoke_lb(http, target, call, data, timeout, started, raw)
        if data is not None and not isinstance(data, Mapping):
            raise InvokeError("a queue-based function takes a JSON object of keyword arguments")
        return await _invoke_qb(http, target, call, data, timeout, started)
    finally:
        if own:
            await http.aclose()


def _elapsed(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def _invoke_lb(
    http: httpx.AsyncClient,
    target: EndpointTarget,
    call: CallSpec,
    data: Any,
    timeout: float,
    started: float,
    raw: str | None = None,
) -> InvokeResult:
    import httpx

    assert call.method and call.path
    url = target.url(call.path)
    headers = {**target.headers(), TRACEBACK_HEADER: "1"}
    kwargs: dict[str, Any] = {"headers": headers, "timeout": timeout}
    if call.method in ("GET", "DELETE"):
        if data is not None and not isinstance(data, Mapping):
            raise InvokeError(f"{call.method} takes a JSON object (sent as query parameters)")
        kwargs["params"] = {k: _query_value(v) for k, v in (data or {}).items()}
    elif raw is not None:
        kwargs["content"] = raw.encode("utf-8")
        kwargs["headers"] = {**target.headers(), "Content-Type": "application/json"}
    elif data is not None:
        kwargs["json"] = data
    try:
        response = await http.request(call.method, url, **kwargs)
    except httpx.HTTPError as exc:
        return InvokeResult(
            call, url, False, None, _elapsed(started), error=_transport_error(exc, timeout)
        )
    body = _response_body(response)
    ok = response.status_code < 400
    remote = None if ok else RemoteError.from_body(body)
    return InvokeResult(
        call,
        url,
        ok,
        response.status_code,
        _elapsed(started),
        result=body,
        body=body,
        headers=dict(response.headers),
        error=None if ok else _remote_text(remote) or _error_text(body, response),
        remote_error=remote,
    )


def _remote_text(remote: RemoteError | None) -> str | None:
    if remote is None:
        return None
    text = remote.summary()
    return f"{text}\n{remote.traceback.rstrip()}" if remote.traceback else text


def _query_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _transport_error(exc: httpx.HTTPError, timeout: float) -> str:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {timeout:g} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)


def _error_text(body: Any, response: httpx.Response) -> str:
    if isinstance(body, Mapping):
        detail = body.get("detail")
        if isinstance(detail, list) and detail and all(isinstance(d, Mapping) for d in detail):
            return f"HTTP {response.status_code}: {validation_summary(detail)}"
        for key in ("detail", "error", "message"):
            if key in body:
                return f"HTTP {response.status_code}: {body[key]}"
    return f"HTTP {response.status_code}: {str(body)[:300]}"


async def _invoke_qb(
    http: httpx.AsyncClient,
    target: EndpointTarget,
    call: CallSpec,
    data: Mapping[str, Any] | None,
    timeout: float,
    started: float,
) -> InvokeResult:
    import httpx

    url = target.url("/runsync")
    job = build_job(call, data)
    deadline = time.monotonic() + timeout
    try:
        response = await http.post(url, json=job, headers=target.headers(), timeout=timeout)
        body = _response_body(response)
        while (
            response.status_code == 200
            and isinstance(body, Mapping)
            and body.get("status") not in _TERMINAL
            and body.get("id")
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.2)
            response = await http.get(
                target.url(f"/status/{body['id']}"), headers=target.headers(), timeout=timeout
            )
            body = _response_body(response)
    except httpx.HTTPError as exc:
        return InvokeResult(
            call, url, False, None, _elapsed(started), error=_transport_error(exc, timeout)
        )
    latency = _elapsed(started)
    if response.status_code >= 400 or not isinstance(body, Mapping):
        return InvokeResult(
            call,
            url,
            False,
            response.status_code,
            latency,
            body=body,
            error=_error_text(body, response),
        )
    status = body.get("status")
    output = body.get("output")

    def job_failed(error: str, remote: RemoteError | None = None) -> InvokeResult:
        # The job was answered (HTTP 200) but did not give a usable result.
        return InvokeResult(
            call,
            url,
            False,
            200,
            latency,
            body=body,
            error=error,
            job_status=status,
            remote_error=remote,
        )

    if status not in _TERMINAL and body.get("id"):  # still running at the deadline
        return job_failed(f"timed out after {timeout:g} s (job {body.get('id')} is {status})")
    if isinstance(output, Mapping) and output.get("success") is False:
        # The function failed: runpod's rule moves the output's "error" to the job's.
        failure = {**output, "error": output.get("error") or body.get("error")}
        remote = RemoteError.from_body(failure)
        return job_failed(
            _remote_text(remote) or str(failure["error"] or "the function failed"), remote
        )
    if status != "COMPLETED" or not isinstance(output, Mapping):
        return job_failed(str(body.get("error") or f"job {status}"))
    from runtime.serialization import deserialize

    try:
        result = deserialize(output["result"]) if output.get("result") is not None else None
    except Exception as exc:  # a result we cannot unpickle here is still a completed call
        return job_failed(f"cannot decode the result: {exc}")
    return InvokeResult(call, url, True, 200, latency, result=result, body=body, job_status=status)


def curl_command(
    target: EndpointTarget,
    call: CallSpec,
    data: Any = None,
    *,
    reveal: bool = False,
    headers: Mapping[str, str] | None = None,
) -> str:
    """The same request as a curl command line; the key is `$FLASH_ENDPOINT_KEY` unless
    `reveal`; `headers` (extra ones) follow it, an Authorization among them redacted likewise."""
    import httpx

    data, raw = _unwrap(data)
    key = target.key if reveal and target.key else "$FLASH_ENDPOINT_KEY"
    auth = f"Authorization: Bearer {key}"
    auth_arg = shlex.quote(auth) if reveal else f'"{auth}"'
    extra = ""
    for name, value in (headers or {}).items():
        if name.lower() == "authorization":
            auth_arg = shlex.quote(f"{name}: {value if reveal else '<redacted>'}")
        else:
            extra += " -H " + shlex.quote(f"{name}: {value}")
    auth_arg += extra
    if call.is_load_balanced:
        assert call.method and call.path
        url = target.url(call.path)
        if call.method in ("GET", "DELETE"):
            query = httpx.QueryParams({k: _query_value(v) for k, v in (data or {}).items()})
            url = f"{url}?{query}" if query else url
            return f"curl -X {call.method} -H {auth_arg} {shlex.quote(url)}"
        body = raw if raw is not None else json.dumps(data if data is not None else {})
        return (
            f"curl -X {call.method} -H {auth_arg} -H 'Content-Type: application/json' "
            f"-d {shlex.quote(body)} {shlex.quote(url)}"
        )
    body = json.dumps(build_job(call, data if isinstance(data, Mapping) else None))
    return (
        f"curl -X POST -H {auth_arg} -H 'Content-Type: application/json' "
        f"-d {shlex.quote(body)} {shlex.quote(target.url('/runsync'))}"
    )
