"""Canonical form and hash of a resource config: the basis of drift detection.

The same config must hash the same whether it comes from a live model object in a worker or from
the scanner's static evaluation of source code, so both go through `canonical_config`: validate
with the model (defaults filled in, enum names and values both accepted), keep only what a user
configures, and write enums by member name. The functions take the resource model class;
`runtime.resources.config_hash` / `canonical_config` take its type name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = [
    "GPU_ONLY_FIELDS",
    "RUNTIME_FIELDS",
    "canonical_json",
    "canonical_model_config",
    "code_hash",
    "describe_validation_error",
    "model_config_hash",
]

# Assigned by the API or derived from other fields: never part of what a user configures, so they
# never count as drift.
RUNTIME_FIELDS: frozenset[str] = frozenset(
    {
        "id",
        "template",
        "templateId",
        "aiKey",
        "userId",
        "createdAt",
        "activeBuildid",
        "computeType",
        "hubRelease",
        "repo",
        "gpuIds",
        "allowedCudaVersions",
        "locations",
        "networkVolumeId",
    }
)

# Fields that mean nothing for a CPU endpoint (the API gets gpuCount=0 regardless).
GPU_ONLY_FIELDS: frozenset[str] = frozenset({"gpus", "gpuCount", "cudaVersions"})


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


def canonical_model_config(
    cls: type[BaseModel], config: dict[str, Any], *, is_cpu: bool
) -> dict[str, Any]:
    """The user-configurable fields of `config` for the resource model `cls`, validated,
    defaults filled, enums by name, a CPU model's GPU-only fields left out. Raises `ValueError`
    naming the field when it is invalid."""
    try:
        model = cls.model_validate(config)
    except ValidationError as exc:
        raise ValueError(describe_validation_error(cls.__name__, exc)) from None
    skip = RUNTIME_FIELDS | (GPU_ONLY_FIELDS if is_cpu else frozenset())
    return {
        name: _plain(getattr(model, name))
        for name in sorted(cls.model_fields)
        if name not in skip and getattr(model, name) is not None
    }


def canonical_json(data: Any) -> str:
    """Compact, key-sorted JSON: the byte form that is hashed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def model_config_hash(cls: type[BaseModel], config: dict[str, Any], *, is_cpu: bool) -> str:
    """SHA-256 hex digest of the canonical JSON of the config (class name included)."""
    payload = canonical_json(
        {"type": cls.__name__, "config": canonical_model_config(cls, config, is_cpu=is_cpu)}
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def code_hash(root: Path, entry: Mapping[str, Any]) -> str | None:
    """SHA-256 over the source files that define a manifest resource (None if unknown).

    The engine hashes the project's files, a mothership the same files in its build: one
    function, so both see the same code change.
    """
    files: set[str] = set()
    if isinstance(entry.get("file"), str):
        files.add(entry["file"])
    for function in entry.get("functions") or []:
        if isinstance(function, Mapping) and isinstance(function.get("file"), str):
            files.add(function["file"])
    if not files:
        return None
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0")
        try:
            digest.update((root / rel).read_bytes())
        except OSError:
            digest.update(b"<missing>")
        digest.update(b"\0")
    return digest.hexdigest()
