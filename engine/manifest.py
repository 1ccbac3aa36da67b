"""The Flash manifest (upstream's v1.0 schema) built from scan results, validated.

`build_manifest()` takes what the scanner resolved (`FunctionInfo` per decorated function or
class, `ResourceDef` per resource config definition) and returns the manifest dict plus
diagnostics. Validation problems never raise: each becomes a `Diagnostic` (see
`engine.diagnostics` for the codes), and the manifest still lists what could be understood.

Upstream keys are kept as they are: `version`, `generated_at`, `project_name`, `resources`
(sorted by name), `function_registry`, and `routes` (only when some load-balanced resource has
routes). Extra fields of ours (see the README): per resource `config`, `config_hash`, `unresolved`,
`file`, `line`, `mothership` (the project's own mothership: its config is bound to a
module-level variable named `mothership`, upstream's `mothership.py` convention; one at most,
load-balanced), `makes_remote_calls` (runpod_flash's key: the resource's code
calls another endpoint's functions, from the scanner's call graph); per function `file`,
`line`, `signature`, `dependencies`, `system_dependencies`, `class_methods`,
`method_signatures` (per class method, its parameters without `self`). Every dict has sorted
keys and every list a defined order, so equal sources give equal JSON.

Deliberate differences from upstream 0.20.0, where these are bugs: CPU load balancers are
load-balanced and their routes are validated and listed (upstream gives them a queue handler and
skips their routes); `pkg/__init__.py` has module `pkg` (upstream: `pkg.__init__`, see
engine.scan); an invalid method is a diagnostic (upstream silently skips the whole file).

`generated_at` is a parameter: the build passes a reproducible value, the scan CLI uses now.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine import diagnostics as codes
from engine.diagnostics import Diagnostic
from engine.staticeval import to_json, unresolved_fields
from runtime.remote import HTTP_METHODS, RESERVED_PATHS
from runtime.resourcekinds import RESOURCE_TYPES

__all__ = [
    "MANIFEST_VERSION",
    "MOTHERSHIP_VARIABLE",
    "FunctionInfo",
    "ResourceDef",
    "build_manifest",
    "empty_manifest",
    "manifest_json",
    "now_iso",
    "write_manifest",
]

MANIFEST_VERSION = "1.0"
# The resource config bound to a module-level variable of this name is the project's own
# mothership (upstream's convention: `mothership = CpuLiveLoadBalancer(...)` in mothership.py).
MOTHERSHIP_VARIABLE = "mothership"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class FunctionInfo:
    """One decorated function or class, resolved to its resource."""

    name: str
    module: str
    file: str
    line: int
    resource: str
    is_async: bool = False
    is_class: bool = False
    http_method: str | None = None
    http_path: str | None = None
    config_variable: str | None = None
    dependencies: list[str] = field(default_factory=list)
    system_dependencies: list[str] = field(default_factory=list)
    signature: list[dict[str, Any]] = field(default_factory=list)
    # per public method of a class, in source order: its parameters without `self` (same shape
    # as `signature`)
    method_signatures: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # the line of the decorator, for route diagnostics
    decorator_line: int = 0
    # method/path given but not statically known: already diagnosed by the scanner
    route_unknown: bool = False
    # manifest entries already built for this function, by (lb, live, method): a rescan reuses
    # the FunctionInfo of unchanged files, so their entries are not rebuilt
    _entries: dict[tuple[bool, bool, str | None], dict[str, Any]] = field(
        default_factory=dict, repr=False, compare=False
    )


@dataclass
class ResourceDef:
    """One definition of a resource config (a config object, an inline config, an Endpoint)."""

    name: str
    resource_type: str
    config: dict[str, Any]
    file: str
    line: int
    config_variable: str | None = None
    config_hash: str | None = None
    # identifies the definition: two functions using the same config object share it
    origin: tuple[Any, ...] = ()
    _json: tuple[dict[str, Any], list[str]] | None = field(default=None, repr=False, compare=False)

    def config_json(self) -> tuple[dict[str, Any], list[str]]:
        """(the config as manifest JSON with sorted keys, the unresolved field names); cached."""
        if self._json is None:
            self._json = (_sorted_dict(to_json(self.config)), unresolved_fields(self.config))
        return self._json


def now_iso() -> str:
    """The current UTC time as upstream writes it: ISO-8601 with microseconds and `Z`."""
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def empty_manifest(project_name: str, generated_at: str | None = None) -> dict[str, Any]:
    """A manifest without resources (a directory with no Flash code)."""
    return {
        "function_registry": {},
        "generated_at": generated_at or now_iso(),
        "project_name": project_name,
        "resources": {},
        "version": MANIFEST_VERSION,
    }


def _sorted_dict(value: Any) -> Any:
    # Recursively rebuild dicts with sorted keys: whoever serialises the manifest (with or
    # without sort_keys) gets the same bytes.
    if isinstance(value, dict):
        return {k: _sorted_dict(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_dict(v) for v in value]
    return value


def _canonical(value: Any) -> str:
    return json.dumps(to_json(value), sort_keys=True, default=str)


def _pick_definitions(
    resources: list[ResourceDef], diags: list[Diagnostic]
) -> dict[str, ResourceDef]:
    """One definition per resource name (the first in file order); conflicts diagnosed."""
    by_name: dict[str, list[ResourceDef]] = {}
    for r in resources:
        by_name.setdefault(r.name, []).append(r)
    chosen: dict[str, ResourceDef] = {}
    for name, defs in by_name.items():
        unique: dict[tuple[Any, ...], ResourceDef] = {}
        for d in sorted(defs, key=lambda d: (d.file, d.line, d.origin)):
            unique.setdefault(d.origin, d)
        ordered = list(unique.values())
        first = ordered[0]
        chosen[name] = first
        for other in ordered[1:]:
            if other.resource_type != first.resource_type:
                diags.append(
                    Diagnostic(
                        "error",
                        other.file,
                        other.line,
                        f"resource {name!r} is defined as {other.resource_type} here but as "
                        f"{first.resource_type} in {first.file}:{first.line}; one name can only "
                        "be one endpoint — rename one of them",
                        codes.RESOURCE_CONFLICT,
                    )
                )
            elif _canonical(other.config) != _canonical(first.config):
                diags.append(
                    Diagnostic(
                        "warning",
                        other.file,
                        other.line,
                        f"resource {name!r} is also defined in {first.file}:{first.line} with a "
                        f"different config; the definition in {first.file} is used",
                        codes.RESOURCE_CONFLICT,
                    )
                )
    return chosen


def _function_entry(fn: FunctionInfo, lb: bool, live: bool) -> dict[str, Any]:
    key = (lb, live, fn.http_method)
    cached = fn._entries.get(key)
    if cached is None:
        cached = fn._entries[key] = _new_function_entry(fn, lb, live)
    return cached


def _new_function_entry(fn: FunctionInfo, lb: bool, live: bool) -> dict[str, Any]:
    # Keys are written in sorted order (cheaper than re-sorting the whole manifest per rescan).
    entry: dict[str, Any] = {
        "class_methods": list(fn.method_signatures),
        "config_variable": fn.config_variable,
        "dependencies": list(fn.dependencies),
        "file": fn.file,
    }
    if lb:
        entry["http_method"] = fn.http_method
        entry["http_path"] = fn.http_path
    entry["is_async"] = fn.is_async
    entry["is_class"] = fn.is_class
    entry["is_live_resource"] = live
    entry["is_load_balanced"] = lb
    entry["line"] = fn.line
    entry["method_signatures"] = {m: fn.method_signatures[m] for m in sorted(fn.method_signatures)}
    entry["module"] = fn.module
    entry["name"] = fn.name
    entry["signature"] = fn.signature
    entry["system_dependencies"] = list(fn.system_dependencies)
    return entry


def _validate_route(
    fn: FunctionInfo, resource: ResourceDef, diags: list[Diagnostic]
) -> tuple[str, str] | None:
    """The (METHOD, path) of a load-balanced function, or None with a diagnostic."""
    where = (fn.file, fn.decorator_line or fn.line)
    if fn.route_unknown:
        return None
    if not fn.http_method or not fn.http_path:
        missing = [
            what
            for what, value in (("method", fn.http_method), ("path", fn.http_path))
            if not value
        ]
        hint = ", ".join(
            f'{what}="{"POST" if what == "method" else "/" + fn.name}"' for what in missing
        )
        diags.append(
            Diagnostic(
                "error",
                *where,
                f"{fn.name!r} is on load-balanced endpoint {resource.name!r} "
                f"({resource.resource_type}) but has no {' and '.join(missing)}: add e.g. "
                f"{hint} to its decorator",
                codes.LB_MISSING_ROUTE,
            )
        )
        return None
    method = fn.http_method.upper()
    if method not in HTTP_METHODS:
        diags.append(
            Diagnostic(
                "error",
                *where,
                f"{fn.name!r}: HTTP method {fn.http_method!r} is not one of "
                f"{', '.join(sorted(HTTP_METHODS))}",
                codes.INVALID_METHOD,
            )
        )
        return None
    if not fn.http_path.startswith("/"):
        diags.append(
            Diagnostic(
                "error",
                *where,
                f"{fn.name!r}: path {fn.http_path!r} must start with '/'",
                codes.INVALID_PATH,
            )
        )
        return None
    return method, fn.http_path


def build_manifest(
    project_name: str,
    functions: list[FunctionInfo],
    resources: list[ResourceDef],
    *,
    generated_at: str | None = None,
    remote_callers: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], list[Diagnostic]]:
    """The manifest dict and its validation diagnostics (unsorted; callers sort them).

    `remote_callers`: the resources whose code calls another endpoint (`makes_remote_calls`).
    """
    diags: list[Diagnostic] = []
    defs = _pick_definitions(resources, diags)
    ordered = sorted(functions, key=lambda f: (f.file, f.line, f.name))

    # Duplicate function names anywhere (the registry maps a name to one resource).
    first_seen: dict[str, FunctionInfo] = {}
    for fn in ordered:
        prior = first_seen.get(fn.name)
        if prior is None:
            first_seen[fn.name] = fn
            continue
        diags.append(
            Diagnostic(
                "error",
                fn.file,
                fn.line,
                f"duplicate function name {fn.name!r}: also defined in {prior.file}:{prior.line} "
                f"(resources {prior.resource!r} and {fn.resource!r}); the function registry "
                "needs unique names — rename one",
                codes.DUPLICATE_FUNCTION,
            )
        )

    grouped: dict[str, list[FunctionInfo]] = {}
    for fn in ordered:
        if fn.resource in defs:
            grouped.setdefault(fn.resource, []).append(fn)

    manifest_resources: dict[str, Any] = {}
    registry: dict[str, str] = {}
    routes: dict[str, dict[str, str]] = {}
    for name in sorted(grouped):
        resource = defs[name]
        kind = RESOURCE_TYPES.get(resource.resource_type)
        lb = bool(kind and kind.is_load_balanced)
        live = bool(kind and kind.is_live)
        if not name or not _SAFE_NAME.fullmatch(name):
            diags.append(
                Diagnostic(
                    "error",
                    resource.file,
                    resource.line,
                    f"resource name {name!r} cannot be used as a file or module name "
                    "(handler_<name>.py): use only letters, digits, '_' and '-'",
                    codes.UNSAFE_NAME,
                )
            )
        entries = []
        seen_routes: dict[tuple[str, str], FunctionInfo] = {}
        for fn in grouped[name]:
            registry.setdefault(fn.name, name)
            if lb:
                route = _validate_route(fn, resource, diags)
                if route is not None:
                    prior = seen_routes.get(route)
                    where = (fn.file, fn.decorator_line or fn.line)
                    if prior is not None:
                        diags.append(
                            Diagnostic(
                                "error",
                                *where,
                                f"duplicate route {route[0]} {route[1]} on endpoint {name!r}: "
                                f"both {prior.name!r} ({prior.file}:{prior.line}) and "
                                f"{fn.name!r} are mapped to it",
                                codes.DUPLICATE_ROUTE,
                            )
                        )
                    elif route[1] in RESERVED_PATHS:
                        diags.append(
                            Diagnostic(
                                "error",
                                *where,
                                f"{fn.name!r} cannot use the reserved path {route[1]} (reserved: "
                                f"{', '.join(sorted(RESERVED_PATHS))})",
                                codes.RESERVED_PATH,
                            )
                        )
                    else:
                        seen_routes[route] = fn
                        routes.setdefault(name, {})[f"{route[0]} {route[1]}"] = fn.name
                    fn = _with_method(fn, route[0])
            elif fn.http_method or fn.http_path:
                diags.append(
                    Diagnostic(
                        "warning",
                        fn.file,
                        fn.decorator_line or fn.line,
                        f"{fn.name!r}: method/path are ignored, endpoint {name!r} is "
                        f"queue-based ({resource.resource_type}); use a load balancer type "
                        "for HTTP routes",
                        codes.ROUTE_ON_QB,
                    )
                )
            entries.append(_function_entry(fn, lb, live))
        config_json, unresolved = resource.config_json()
        manifest_resources[name] = {
            "config": config_json,
            "config_hash": resource.config_hash,
            "config_variable": resource.config_variable,
            "file": resource.file,
            "functions": entries,
            "handler_file": f"handler_{name}.py",
            "is_live_resource": live,
            "is_load_balanced": lb,
            "line": resource.line,
            "makes_remote_calls": name in remote_callers,
            "mothership": resource.config_variable == MOTHERSHIP_VARIABLE,
            "resource_type": resource.resource_type,
            "unresolved": unresolved,
        }

    _check_motherships(manifest_resources, defs, diags)
    manifest: dict[str, Any] = {
        "function_registry": {k: registry[k] for k in sorted(registry)},
        "generated_at": generated_at or now_iso(),
        "project_name": project_name,
        "resources": manifest_resources,
    }
    if routes:
        manifest["routes"] = {
            name: {key: table[key] for key in sorted(table)}
            for name, table in sorted(routes.items())
        }
    manifest["version"] = MANIFEST_VERSION
    return manifest, diags


def _check_motherships(
    resources: dict[str, dict[str, Any]], defs: dict[str, ResourceDef], diags: list[Diagnostic]
) -> None:
    """The flagged mothership must be load-balanced, and one at most; else it is unflagged
    (deploy --mothership refuses a build with errors) with a diagnostic at its definition."""
    flagged = [name for name, entry in resources.items() if entry["mothership"]]
    for name in flagged:
        resource = defs[name]
        if not resources[name]["is_load_balanced"]:
            resources[name]["mothership"] = False
            diags.append(
                Diagnostic(
                    "error",
                    resource.file,
                    resource.line,
                    f"{MOTHERSHIP_VARIABLE!r} names resource {name!r}, a "
                    f"{resource.resource_type}: a mothership is a load-balanced endpoint "
                    "(e.g. CpuLoadBalancerSlsResource); rename the variable or change its type",
                    codes.MOTHERSHIP_NOT_LB,
                )
            )
    flagged = [name for name in flagged if resources[name]["mothership"]]
    if len(flagged) < 2:
        return
    places = ", ".join(f"{n!r} ({defs[n].file}:{defs[n].line})" for n in flagged)
    for name in flagged:
        resources[name]["mothership"] = False
        diags.append(
            Diagnostic(
                "error",
                defs[name].file,
                defs[name].line,
                f"more than one resource is flagged as the mothership: {places}; an "
                f"environment has one: keep the variable {MOTHERSHIP_VARIABLE!r} for one of them",
                codes.MOTHERSHIP_CONFLICT,
            )
        )


def _with_method(fn: FunctionInfo, method: str) -> FunctionInfo:
    if fn.http_method == method:
        return fn
    from dataclasses import replace

    return replace(fn, http_method=method)


def manifest_json(manifest: dict[str, Any]) -> str:
    """The manifest as JSON text: sorted keys, indent 2, trailing newline."""
    return json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_manifest(manifest: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write `manifest_json(manifest)` to `path` (atomically, via a temporary file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.write_text(manifest_json(manifest), encoding="utf-8")
    os.replace(tmp, target)
    return target
