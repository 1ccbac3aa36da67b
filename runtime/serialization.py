"""Argument/result encoding of the job contract: base64 text of a cloudpickle dump.

`function_job` and `class_job` build a job's `input` (the keys `runtime.qb_handler` reads), for
every caller: cross-endpoint calls in a worker and `flash-tui invoke` alike.

Same format as upstream (`base64.b64encode(cloudpickle.dumps(value)).decode()`), so payloads
produced by upstream stubs and by ours are interchangeable.
"""

from __future__ import annotations

import base64
import binascii
import pickle
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import cloudpickle

from runtime.errors import SerializationError

__all__ = [
    "class_job",
    "deserialize",
    "deserialize_args",
    "deserialize_kwargs",
    "function_job",
    "serialize",
    "serialize_args",
    "serialize_kwargs",
]


def _b64decode(data: str | bytes) -> bytes:
    # binascii's strict mode (3.11+) rejects the same garbage as b64decode(validate=True)
    # without its per-call regex check.
    if sys.version_info >= (3, 11):
        return binascii.a2b_base64(data, strict_mode=True)
    return base64.b64decode(data, validate=True)


_SCALARS = (type(None), bool, int, float, str, bytes)


def _plain(value: Any, depth: int = 0) -> bool:
    """True for builtin scalars and small list/tuple/dict trees of them."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth > 3:
        return False
    if kind is list or kind is tuple:
        return len(value) <= 64 and all(_plain(v, depth + 1) for v in value)
    if kind is dict:
        return len(value) <= 64 and all(
            type(k) in _SCALARS and _plain(v, depth + 1) for k, v in value.items()
        )
    return False


def serialize(value: Any) -> str:
    """Encode one value as base64 cloudpickle text; SerializationError if it cannot be pickled."""
    try:
        if _plain(value):
            # Plain data pickles identically by value with the stdlib pickler, ~6x faster
            # than cloudpickle's; anything that could reference code goes to cloudpickle.
            data = pickle.dumps(value, protocol=cloudpickle.DEFAULT_PROTOCOL)
        else:
            data = cloudpickle.dumps(value)
        return base64.b64encode(data).decode("ascii")
    except Exception as exc:  # cloudpickle raises many types (PicklingError, TypeError, ...)
        raise SerializationError(
            f"cannot serialize value of type {type(value).__name__}: {exc}"
        ) from exc


def deserialize(data: str | bytes) -> Any:
    """Decode base64 cloudpickle text; SerializationError on bad base64 or a broken pickle."""
    if not isinstance(data, (str, bytes)):
        raise SerializationError(f"expected base64 text, got {type(data).__name__}")
    try:
        raw = _b64decode(data)
    except (binascii.Error, ValueError) as exc:
        raise SerializationError(f"invalid base64 payload: {exc}") from exc
    try:
        return cloudpickle.loads(raw)
    except Exception as exc:  # unpickling can raise anything, including ImportError
        raise SerializationError(
            f"cannot deserialize payload: {type(exc).__name__}: {exc}"
        ) from exc


def serialize_args(args: Sequence[Any]) -> list[str]:
    """Encode positional arguments, one base64 string each."""
    return [serialize(value) for value in args]


def serialize_kwargs(kwargs: Mapping[str, Any]) -> dict[str, str]:
    """Encode keyword arguments, one base64 string per name."""
    return {name: serialize(value) for name, value in kwargs.items()}


def deserialize_args(data: Sequence[str] | None) -> list[Any]:
    """Decode a list of base64 strings (None or missing means no arguments)."""
    if data is None:
        return []
    if not isinstance(data, (list, tuple)):
        raise SerializationError(
            f"args must be a list of base64 strings, got {type(data).__name__}"
        )
    return [deserialize(item) for item in data]


def deserialize_kwargs(data: Mapping[str, str] | None) -> dict[str, Any]:
    """Decode a dict of name -> base64 string (None or missing means no keyword arguments)."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SerializationError(
            f"kwargs must be an object of base64 strings, got {type(data).__name__}"
        )
    return {str(name): deserialize(item) for name, item in data.items()}


def function_job(
    name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A job input that calls the function `name(*args, **kwargs)`."""
    return {
        "function_name": name,
        "execution_type": "function",
        "args": serialize_args(args),
        "kwargs": serialize_kwargs(kwargs or {}),
    }


def class_job(
    class_name: str,
    method_name: str,
    constructor: tuple[Sequence[Any], Mapping[str, Any]] = ((), {}),
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    instance_id: str | None = None,
    create_new_instance: bool = True,
) -> dict[str, Any]:
    """A job input that calls `class_name(*constructor).method_name(*args, **kwargs)`.

    `instance_id` with `create_new_instance=False` reuses the instance an earlier job with the
    same id created on that worker.
    """
    ctor_args, ctor_kwargs = constructor
    job: dict[str, Any] = {
        "function_name": class_name,
        "execution_type": "class",
        "class_name": class_name,
        "args": serialize_args(ctor_args),
        "kwargs": serialize_kwargs(ctor_kwargs),
        "method_name": method_name,
        "method_args": serialize_args(args),
        "method_kwargs": serialize_kwargs(kwargs or {}),
    }
    if instance_id is not None:
        job["instance_id"] = instance_id
        job["create_new_instance"] = create_new_instance
    return job
