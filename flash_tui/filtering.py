"""The dashboard's `/` filter: which endpoints, functions and diagnostics a filter text keeps.

A filter matches, case-insensitively, an endpoint's name, its type (`LiveLoadBalancer`,
`LB · CPU · live`, `LB CPU`) or its status (`healthy`, `not_deployed`); a function by its name
or route; a diagnostic by its file or message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.diagnostics import Diagnostic
from flash_tui import present
from flash_tui.widgets.dashboard.endpoints_table import EndpointRow


def _has(needle: str, *texts: object) -> bool:
    return any(needle in str(text).lower() for text in texts if text)


def _resource_matches(needle: str, name: str, resource: Mapping[str, Any], status: str) -> bool:
    rtype = resource.get("resource_type")
    short = present.short_type(rtype, bool(resource.get("is_load_balanced")))
    return _has(needle, name, rtype, present.resource_badges(resource), short, status)


def _function_matches(needle: str, function: Mapping[str, Any]) -> bool:
    return _has(needle, function.get("name"), function.get("http_path"))


def filter_manifest(
    manifest: Mapping[str, Any],
    diagnostics: Sequence[Diagnostic],
    text: str,
    statuses: Mapping[str, str],
) -> tuple[dict[str, Any], tuple[Diagnostic, ...]]:
    """The manifest and diagnostics `text` keeps: a matching endpoint with all its functions,
    otherwise only its matching functions (the endpoint is dropped when none match)."""
    needle = text.strip().lower()
    if not needle:
        return dict(manifest), tuple(diagnostics)
    kept: dict[str, Any] = {}
    for name, resource in (manifest.get("resources") or {}).items():
        if _resource_matches(needle, name, resource, statuses.get(name, "")):
            kept[name] = resource
            continue
        functions = [f for f in resource.get("functions") or [] if _function_matches(needle, f)]
        if functions:
            kept[name] = {**resource, "functions": functions}
    shown = tuple(d for d in diagnostics if _has(needle, d.file, d.message))
    return {**manifest, "resources": kept}, shown


def filter_rows(
    rows: Sequence[EndpointRow], text: str, manifest: Mapping[str, Any] | None = None
) -> list[EndpointRow]:
    """The table rows `text` keeps: the endpoints `filter_manifest` keeps in the tree (so a type
    such as `LiveServerless` or a function's name keeps the same endpoints in both), and a row
    whose name, type or status matches (an endpoint deployed but no longer in the manifest)."""
    needle = text.strip().lower()
    if not needle:
        return list(rows)
    resources = (manifest or {}).get("resources") or {}
    kept = {
        name
        for name, resource in resources.items()
        if _resource_matches(needle, name, resource, "")
        or any(_function_matches(needle, f) for f in resource.get("functions") or [])
    }
    return [r for r in rows if r.name in kept or _has(needle, r.name, r.type, r.status)]
