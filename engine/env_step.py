"""The environment step of a local deploy: each endpoint's environment found in the shared
cache or built now with uv (in a thread), its progress as `emit`s, before the endpoints are
handed to the local cloud.

Each spec comes back with `python` (the interpreter of its environment; None: it needs none and
runs on the local cloud's own) or `setup_error` (the installer's message: the local cloud then
records that endpoint `failed` and starts the others). `system_dependencies` missing on this
machine become warnings naming them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.diagnostics import Diagnostic
from engine.envs import (
    EnvCache,
    EnvContents,
    EnvError,
    endpoint_contents,
    env_cache_dir,
    project_requirements,
)
from engine.provider import EndpointSpec
from engine.wording import plural

__all__ = [
    "SYSTEM_DEPENDENCY_MISSING",
    "EnvStepResult",
    "env_step",
    "expected_interpreters",
    "missing_system_dependencies",
]

SYSTEM_DEPENDENCY_MISSING = "env-system-dependency-missing"


@dataclass(frozen=True)
class EnvStepResult:
    """The specs with their interpreter (or setup error), and the warnings found on the way."""

    specs: tuple[EndpointSpec, ...]
    diagnostics: tuple[Diagnostic, ...] = ()


def missing_system_dependencies(
    resource: Mapping[str, Any], which: Callable[[str], str | None] = shutil.which
) -> list[str]:
    """The `system_dependencies` of a resource's functions that this machine lacks."""
    wanted: list[str] = []
    for function in resource.get("functions") or []:
        wanted.extend(str(d) for d in function.get("system_dependencies") or [])
    return [name for name in dict.fromkeys(wanted) if which(name) is None]


def expected_interpreters(
    root: Path,
    manifest: Mapping[str, Any],
    cache: EnvCache,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """The interpreter each manifest resource's worker would run on if deployed now (None:
    the local cloud's own): a deployed endpoint on another one needs redeploying."""
    environ = dict(os.environ if environ is None else environ)
    project = project_requirements(root, environ)
    out: dict[str, str | None] = {}
    for name, resource in (manifest.get("resources") or {}).items():
        contents = endpoint_contents(resource, project)
        out[str(name)] = cache.interpreter(contents) if contents is not None else None
    return out


async def env_step(
    root: Path,
    manifest: Mapping[str, Any],
    specs: Sequence[EndpointSpec],
    emit: Callable[..., None],
    *,
    cache: EnvCache | None = None,
    environ: Mapping[str, str] | None = None,
) -> EnvStepResult:
    """Each of `specs` with its environment's interpreter, or the error that kept it from one."""
    environ = dict(os.environ if environ is None else environ)
    resources: Mapping[str, Any] = manifest.get("resources") or {}
    project = await asyncio.to_thread(project_requirements, root, environ)
    diagnostics = list(project.diagnostics)
    wanted: dict[str, EnvContents] = {}
    for spec in specs:
        resource = resources.get(spec.name) or {}
        missing = missing_system_dependencies(resource)
        if missing:
            message = (
                f"{spec.name}: system dependencies not found on this machine: "
                f"{', '.join(missing)} (the worker may fail where it uses them)"
            )
            diagnostics.append(
                Diagnostic(
                    "warning",
                    str(resource.get("file") or ""),
                    int(resource.get("line") or 0),
                    message,
                    SYSTEM_DEPENDENCY_MISSING,
                )
            )
            emit("envs", f"warning: {message}", name=spec.name)
        contents = endpoint_contents(resource, project)
        if contents is not None:
            wanted[spec.name] = contents
    if not wanted:
        return EnvStepResult(tuple(specs), tuple(diagnostics))
    cache = cache or EnvCache(env_cache_dir(environ), environ=environ)
    by_key: dict[str, list[str]] = {}
    for name, contents in wanted.items():
        by_key.setdefault(cache.key(contents), []).append(name)
    outcome: dict[str, tuple[str | None, str | None]] = {}  # name -> (python, error)
    loop = asyncio.get_running_loop()
    total = len(by_key)
    for done, names in enumerate(by_key.values()):
        contents = wanted[names[0]]
        who = ", ".join(names)
        found = cache.find(contents)
        if found is None:
            emit(
                "envs",
                f"installing {', '.join(contents.requirements)} for {who}",
                done=done,
                total=total,
            )

            def forward(line: str) -> None:
                loop.call_soon_threadsafe(lambda: emit("envs", line, build_step="uv"))

            started = time.monotonic()
            try:
                found = await asyncio.to_thread(cache.ensure, contents, forward)
            except EnvError as exc:
                lines = str(exc).splitlines()
                said = lines[0] + (f" {lines[-1].strip()}" if len(lines) > 1 else "")
                for name in names:
                    outcome[name] = (None, str(exc))
                    emit("envs", f"environment failed: {said}", name=name)
                continue
            took = time.monotonic() - started
            said = f"environment {found.key[:12]} ready ({took:.1f} s)"
            if not found.built:  # another deploy built it while we waited for its lock
                said = f"environment {found.key[:12]} reused"
        else:
            said = f"environment {found.key[:12]} reused"
        for name in names:
            outcome[name] = (str(found.python), None)
            emit("envs", said, name=name, done=done + 1, total=total)
    updated = []
    for spec in specs:
        python, error = outcome.get(spec.name, (None, None))
        updated.append(spec.model_copy(update={"python": python, "setup_error": error}))
    built = sum(1 for p, e in outcome.values() if e is None)
    emit("envs", f"{plural(built, 'endpoint')} on their own environment", done=total, total=total)
    return EnvStepResult(tuple(updated), tuple(diagnostics))
