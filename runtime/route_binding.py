"""How a request binds to an LB route function's parameters, by name (see `runtime.lb_app`).

`route_binding` analyses a function's signature once: which parameters come from the path, the
query or the body, whether one parameter takes the whole body (a lone dict or model) or a bare
JSON array (a lone list), and a pydantic model that validates and coerces them. `request_values`
reads a request's raw values (body capped, JSON checked), `bind` validates them into the call's
keyword arguments or raises `BindError` naming each bad field (never echoing its value).
Shared with `runtime.calls`, which sends what a route binds.
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic
from fastapi import Request
from fastapi.encoders import jsonable_encoder

from runtime.payload import BodyError, parse_json
from runtime.qb_handler import unwrap

__all__ = [
    "BODY_METHODS",
    "QUERY_METHODS",
    "BindError",
    "RouteBinding",
    "bind",
    "read_capped",
    "request_values",
    "route_binding",
]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
QUERY_METHODS = frozenset({"GET", "DELETE"})
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


class BindError(Exception):
    """A request that does not bind: FastAPI-shaped `detail` entries, each naming its field."""

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


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body; BodyError(413) once it passes `limit` bytes (read no further)."""
    # From the scope's raw headers: a Headers object per request costs more than the check.
    declared = next((v for k, v in request.scope["headers"] if k == b"content-length"), b"")
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


async def request_values(
    binding: RouteBinding, request: Request, *, max_bytes: int, max_depth: int
) -> dict[str, Any]:
    """The raw (unvalidated) parameter values of a request (BodyError: too large, bad JSON)."""
    body_json: Any = None
    raw = await read_capped(request, max_bytes)
    if raw:
        try:
            body_json = parse_json(raw, max_depth)
        except BodyError as exc:
            if not exc.invalid:
                raise
            cause = exc.__cause__ or exc
            raise BindError(
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
        raise BindError(
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


def bind(binding: RouteBinding, values: dict[str, Any]) -> dict[str, Any]:
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
        raise BindError(detail) from exc
    kwargs = {name: getattr(validated, field) for field, name in binding.aliases}
    if binding.var_keyword and validated.model_extra:
        kwargs.update(validated.model_extra)
    return kwargs
