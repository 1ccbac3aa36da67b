"""The routes `flash-tui dev` serves, by upstream `flash run`'s rule, from the manifest.

Each file with decorated functions gets the prefix `/{its path without .py}`
(`workers/gpu_worker.py` -> `/workers/gpu_worker`). Its queue-based callables (functions, and
every method of its classes) answer `{prefix}/runsync` when the file has exactly one, else
`{prefix}/{function}/runsync` (a class method: `{prefix}/{method}/runsync`). Its load-balanced
routes answer `{prefix}{path}`. Upstream has no `/run` or `/status` in its dev server, so
neither do we.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from engine.invoke import CallSpec

__all__ = ["DevRoute", "dev_routes", "file_prefix"]


@dataclass(frozen=True)
class DevRoute:
    """One route of the dev server and the endpoint call it forwards to."""

    method: str
    path: str
    call: CallSpec
    file: str
    summary: str = ""
    # The parameters of the function (name, annotation, default), for the OpenAPI body.
    params: tuple[Mapping[str, Any], ...] = field(default=())

    @property
    def is_queue(self) -> bool:
        """A `/runsync` route (queue-based job) rather than a forwarded LB route."""
        return not self.call.is_load_balanced


def file_prefix(file: str) -> str:
    """`/workers/gpu_worker` for `workers/gpu_worker.py` (upstream's `file_to_url_prefix`)."""
    return "/" + str(PurePosixPath(file).with_suffix(""))


def _functions(manifest: Mapping[str, Any]) -> list[tuple[str, bool, Mapping[str, Any]]]:
    """(endpoint, is LB, function entry) for every decorated function, in manifest order."""
    out = []
    resources = manifest.get("resources") or {}
    for name in sorted(resources):
        entry = resources[name] or {}
        is_lb = bool(entry.get("is_load_balanced"))
        for fn in entry.get("functions") or []:
            if isinstance(fn, Mapping):
                out.append((name, is_lb, fn))
    return out


def dev_routes(manifest: Mapping[str, Any]) -> list[DevRoute]:
    """Every route of the dev server, files in path order, then by line."""
    by_file: dict[str, list[tuple[str, bool, Mapping[str, Any]]]] = {}
    for endpoint, is_lb, fn in _functions(manifest):
        by_file.setdefault(str(fn.get("file") or ""), []).append((endpoint, is_lb, fn))
    routes: list[DevRoute] = []
    for file in sorted(by_file):
        entries = sorted(by_file[file], key=lambda e: int(e[2].get("line") or 0))
        prefix = file_prefix(file)
        queue = [e for e in entries if not e[1]]
        callables = sum(
            len(fn.get("class_methods") or []) if fn.get("is_class") else 1 for _, _, fn in queue
        )
        multi = callables > 1
        for endpoint, _is_lb, fn in queue:
            name = str(fn.get("name"))
            if fn.get("is_class"):
                signatures = fn.get("method_signatures") or {}
                for method in fn.get("class_methods") or []:
                    path = f"{prefix}/{method}/runsync" if multi else f"{prefix}/runsync"
                    call = CallSpec(endpoint, False, function=name, class_method=str(method))
                    params = tuple(signatures.get(method) or ())
                    routes.append(DevRoute("POST", path, call, file, f"{name}.{method}", params))
            else:
                path = f"{prefix}/{name}/runsync" if multi else f"{prefix}/runsync"
                call = CallSpec(endpoint, False, function=name)
                params = tuple(fn.get("signature") or ())
                routes.append(DevRoute("POST", path, call, file, name, params))
        for endpoint, is_lb, fn in entries:
            if not is_lb or not fn.get("http_path"):
                continue
            method = str(fn.get("http_method") or "POST").upper()
            route_path = str(fn["http_path"])
            call = CallSpec(endpoint, True, method=method, path=route_path, function=fn.get("name"))
            params = tuple(fn.get("signature") or ())
            full = prefix + "/" + route_path.lstrip("/")
            routes.append(DevRoute(method, full, call, file, str(fn.get("name")), params))
    return routes


def route_table(routes: Sequence[DevRoute]) -> list[str]:
    """The routes as aligned lines (`POST  /cpu_worker/runsync  cpu_hello  QB`), for the CLI."""
    if not routes:
        return []
    width_m = max(len(r.method) for r in routes)
    width_p = max(len(r.path) for r in routes)
    width_n = max(len(r.summary) for r in routes)
    return [
        f"{r.method:<{width_m}}  {r.path:<{width_p}}  {r.summary:<{width_n}}  "
        f"{'QB' if r.is_queue else 'LB'} -> {r.call.endpoint}"
        for r in routes
    ]
