"""Canonical form and hash of a resource config: the basis of drift detection.

The same config must hash the same whether it comes from a live model object in a worker or from
the scanner's static evaluation of source code, so both go through `canonical_config`: validate
with the model (defaults filled in, enum names and values both accepted), keep only what a user
configures, and write enums by member name.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from typing import Any

from pydantic import BaseModel, ValidationError

from runtime.resources import GPU_ONLY_FIELDS, RUNTIME_FIELDS, resource_class


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, BaseModel):
        return _plain(
            {k: getattr(value, k) for k in type(value).model_fields if k not in RUNTIME_FIELDS}
        )
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def describe_validation_error(resource_type: str, error: ValidationError) -> str:
    """One readable line per problem: `LiveServerless.workersMax: ...`."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "config"
        parts.append(f"{resource_type}.{where}: {item['msg']}")
    return "; ".join(parts)


def canonical_config(resource_type: str, config: dict[str, Any]) -> dict[str, Any]:
    """The user-configurable fields of `config`, validated, defaults filled, enums by name.

    Raises `ValueError` naming the field when the config is invalid, `KeyError` for an unknown
    resource type.
    """
    cls = resource_class(resource_type)
    try:
        model = cls.model_validate(config)
    except ValidationError as exc:
        raise ValueError(describe_validation_error(resource_type, exc)) from None
    skip = RUNTIME_FIELDS | (GPU_ONLY_FIELDS if cls.is_cpu else frozenset())
    return {
        name: _plain(getattr(model, name))
        for name in sorted(cls.model_fields)
        if name not in skip and getattr(model, name) is not None
    }


def canonical_json(data: Any) -> str:
    """Compact, key-sorted JSON: the byte form that is hashed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(resource_type: str, config: dict[str, Any]) -> str:
    """SHA-256 hex digest of the canonical JSON of the config (class name included)."""
    payload = canonical_json(
        {"type": resource_type, "config": canonical_config(resource_type, config)}
    )
    return hashlib.sha256(payload.encode()).hexdigest()
