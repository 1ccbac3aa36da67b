"""The environment step of a local deploy: each endpoint's environment found in the shared
cache or built now with uv (in threads, up to three distinct environments at a time), before the
endpoints are handed to the local cloud. Progress is one line per environment (the endpoints on
it, its package count, the time taken); uv's own output is shown only when it fails (its last
lines, in the error). A handler the build could not check (its environment did not exist yet,
`engine.build.interpreters`) is imported on the new environment right after it is built.

Each spec comes back with `python` (the interpreter of its environment; None: it needs none and
runs on the local cloud's own) or `setup_error` (the installer's message, or the handler's import
error on its new environment: the local cloud then records that endpoint `failed` and starts the
others). `system_dependencies` missing on this machine become warnings naming them.
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
    ProjectRequirements,
    endpoint_contents,
    env_cache_dir,
    project_requirements,
)
from engine.handlergen import check_handler_imports, handler_filename
from engine.provider import EndpointSpec
from engine.wording import plural

__all__ = [
    "INSTALLING",
    "PARALLEL_BUILDS",
    "SYSTEM_DEPENDENCY_MISSING",
    "EnvStepResult",
    "env_step",
    "expected_interpreters",
    "missing_system_dependencies",
]

SYSTEM_DEPENDENCY_MISSING = "env-system-dependency-missing"
# The state of the event that says an environment's install started.
INSTALLING = "installing"
PARALLEL_BUILDS = 3


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
    project: ProjectRequirements | None = None,
) -> dict[str, str | None]:
    """The interpreter each manifest resource's worker would run on if deployed now (None:
    the local cloud's own): a deployed endpoint on another one needs redeploying. `project`:
    the project's requirements when the caller has read them."""
    if project is None:
        project = project_requirements(root, dict(os.environ if environ is None else environ))
    out: dict[str, str | None] = {}
    for name, resource in (manifest.get("resources") or {}).items():
        contents = endpoint_contents(resource, project)
        out[str(name)] = cache.interpreter(contents) if contents is not None else None
    return out


def _check_on_env(
    build_dir: Path | None, resources: Mapping[str, Any], names: Sequence[str], python: str
) -> dict[str, str]:
    """name -> why its handler does not import on `python`, for those that do not."""
    if build_dir is None:
        return {}
    handlers = {handler_filename(n, resources.get(n) or {}): n for n in names}
    errors: dict[str, str] = {}
    for check in check_handler_imports(build_dir, list(handlers), python=python):
        if not check.ok:
            errors[handlers[check.handler]] = (
                f"{check.handler} does not import on its environment: {check.error}\n"
                f"{check.output.rstrip()}"
            )
    return errors


async def env_step(
    root: Path,
    manifest: Mapping[str, Any],
    specs: Sequence[EndpointSpec],
    emit: Callable[..., None],
    *,
    cache: EnvCache | None = None,
    environ: Mapping[str, str] | None = None,
    build_dir: Path | None = None,
    parallel: int = PARALLEL_BUILDS,
    project: ProjectRequirements | None = None,
) -> EnvStepResult:
    """Each of `specs` with its environment's interpreter, or the error that kept it from one.

    At most `parallel` environments are built at a time. With `build_dir`, the handlers of
    endpoints whose environment is built now are imported on it first (the build could not: it
    did not exist yet); one that fails gets that error. `project`: the project's requirements
    when the caller has read them."""
    environ = dict(os.environ if environ is None else environ)
    resources: Mapping[str, Any] = manifest.get("resources") or {}
    if project is None:
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
    total = len(by_key)
    finished = 0
    # Distinct keys build side by side (uv mostly waits on downloads and unpacking); the
    # per-key lock of the cache keeps two builds of one key from both installing.
    slots = asyncio.Semaphore(max(1, parallel))

    def say(names: list[str], message: str) -> None:
        # One line per environment; an environment of one endpoint is that endpoint's news.
        if len(names) == 1:
            emit("envs", message, name=names[0], done=finished, total=total)
        else:
            emit("envs", f"{', '.join(names)}: {message}", done=finished, total=total)

    async def prepare(names: list[str]) -> None:
        nonlocal finished
        contents = wanted[names[0]]
        who = ", ".join(names)
        count = plural(len(contents.requirements), "package")
        found = cache.find(contents)
        if found is not None:
            said = f"environment {found.key[:12]} reused ({count})"
            errors: dict[str, str] = {}
        else:
            async with slots:
                # The TUI's log and bar show it; the CLI's one line is the outcome.
                what = ", ".join(contents.requirements)
                emit("envs", f"installing {what} for {who}", state=INSTALLING)
                started = time.monotonic()
                try:
                    # uv's own lines stay out of the progress: its last ones are in the error.
                    found = await asyncio.to_thread(cache.ensure, contents)
                except EnvError as exc:
                    finished += 1
                    lines = str(exc).splitlines()
                    said = lines[0] + (f" {lines[-1].strip()}" if len(lines) > 1 else "")
                    for name in names:
                        outcome[name] = (None, str(exc))
                    say(names, f"environment failed: {said}")
                    return
                took = time.monotonic() - started
                # Checked by the build on our interpreter only for what this environment
                # lacked then (engine.build.interpreters): now on its own.
                errors = await asyncio.to_thread(
                    _check_on_env, build_dir, resources, names, str(found.python)
                )
            said = f"environment {found.key[:12]} ready ({count}, {took:.1f} s)"
            if not found.built:  # another deploy built it while we waited for its lock
                said = f"environment {found.key[:12]} reused ({count})"
        finished += 1
        cache.mark_used(found)
        for name in names:
            outcome[name] = (None, errors[name]) if name in errors else (str(found.python), None)
        say(names, said)
        for name, error in errors.items():
            emit("envs", error.splitlines()[0], name=name, done=finished, total=total)

    await asyncio.gather(*(prepare(names) for names in by_key.values()))
    updated = []
    for spec in specs:
        python, error = outcome.get(spec.name, (None, None))
        updated.append(spec.model_copy(update={"python": python, "setup_error": error}))
    built = sum(1 for p, e in outcome.values() if e is None)
    emit("envs", f"{plural(built, 'endpoint')} on their own environment", done=total, total=total)
    return EnvStepResult(tuple(updated), tuple(diagnostics))
