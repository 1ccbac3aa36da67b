"""What one endpoint's environment holds, and the key it is cached under.

An endpoint's environment holds the project's requirements (`requirements.txt` and
`[project].dependencies` of `pyproject.toml`), the `dependencies` of the endpoint's functions
and, for a GPU endpoint, what upstream's GPU worker images ship that the project uses: torch
(a CPU build from the user's find-links when there is one, `indexes.local_cpu_torch`) when the
project's code imports it anywhere (`engine.envs.imports`, read statically), or when
`[tool.flash] gpu-torch = true` forces it; `gpu-torch = false` turns it off, and
`FLASH_TUI_GPU_TORCH=on|off` overrides both for every project. Torch is never installed for a
project that does not use it: it is gigabytes when no local CPU build is at hand.
Upstream's SDK packages (`tetra-rp`, `runpod-flash`) are left out: workers serve them from this
project's runtime (`runtime.shims`). An endpoint whose environment would hold nothing has none:
it runs on the local cloud's own interpreter, as before.

The key is the SHA-256 of everything that makes two environments differ: the requirements
(normalized and sorted), the interpreter they are made from (path and version), the torch flag,
and where this install's runtime lives (the environment's `.pth` points there).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.diagnostics import Diagnostic
from engine.envs.imports import project_imports
from engine.envs.indexes import local_cpu_torch, pip_settings
from runtime.resourcekinds import RESOURCE_TYPES

__all__ = [
    "GPU_TORCH_ENV",
    "SDK_DISTRIBUTIONS",
    "EnvContents",
    "ProjectRequirements",
    "endpoint_contents",
    "gpu_torch_enabled",
    "is_gpu",
    "normalize",
    "project_requirements",
]

GPU_TORCH_ENV = "FLASH_TUI_GPU_TORCH"
# Served by our runtime's import shims: installing the real ones would only shadow nothing and
# pull in their whole tree.
SDK_DISTRIBUTIONS = frozenset({"tetra-rp", "runpod-flash"})
_TORCH = "torch"
_OFF = frozenset({"0", "off", "false", "no"})
_ON = frozenset({"1", "on", "true", "yes"})


@dataclass(frozen=True)
class ProjectRequirements:
    """The project-wide part of every endpoint's environment, and whether GPU endpoints get
    torch."""

    requirements: tuple[str, ...] = ()
    gpu_torch: bool = False
    diagnostics: tuple[Diagnostic, ...] = ()
    # What "torch" means for a GPU endpoint: a local CPU build when the index settings offer one.
    torch_requirement: str = _TORCH


@dataclass(frozen=True)
class EnvContents:
    """Everything one environment holds; equal contents share one cached environment."""

    requirements: tuple[str, ...]
    python: str = field(default_factory=lambda: sys.executable)
    torch: bool = False

    def key(self, runtime_paths: tuple[str, ...]) -> str:
        """The cache key: a hash of the contents, the interpreter and our runtime's paths."""
        identity = {
            "requirements": sorted(self.requirements),
            "python": os.path.realpath(self.python),
            "version": platform.python_version(),
            "implementation": sys.implementation.name,
            "torch": self.torch,
            "runtime": list(runtime_paths),
        }
        text = json.dumps(identity, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def normalize(line: str) -> str:
    """One requirement in a canonical spelling (name normalized, specifiers sorted); a line
    that is not a PEP 508 requirement (a URL, a path, an option) is kept as written."""
    # Here, not at the top: a warm deploy of a project without requirements never parses one.
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    text = line.strip()
    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        return text
    requirement.name = canonicalize_name(requirement.name)
    return str(requirement)


def _name(requirement: str) -> str | None:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        return canonicalize_name(Requirement(requirement).name)
    except InvalidRequirement:
        return None


def _requirements_txt(path: Path) -> list[str]:
    lines: list[str] = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _bool_setting(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _ON | _OFF:
        return value.strip().lower() in _ON
    return None


def gpu_torch_enabled(project: bool | None, environ: Mapping[str, str]) -> bool | None:
    """The project's `gpu-torch` setting (None: unset), unless `FLASH_TUI_GPU_TORCH` says
    otherwise."""
    override = _bool_setting(environ.get(GPU_TORCH_ENV, ""))
    return project if override is None else override


def project_requirements(root: Path, environ: Mapping[str, str]) -> ProjectRequirements:
    """requirements.txt + `[project].dependencies`, and whether GPU endpoints get torch (the
    `gpu-torch` setting, else whether the project's code imports torch)."""
    requirements: list[str] = []
    diagnostics: list[Diagnostic] = []
    req_file = root / "requirements.txt"
    if req_file.is_file():
        requirements.extend(_requirements_txt(req_file))
    gpu_torch: bool | None = None
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        # Here, not at the top: most projects have none.
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - the same parser, as a package before 3.11
            import tomli as tomllib

        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            data = {}
            diagnostics.append(
                Diagnostic("warning", "pyproject.toml", 0, f"not read: {exc}", "env-settings")
            )
        project = data.get("project")
        deps = project.get("dependencies") if isinstance(project, dict) else None
        if isinstance(deps, list):
            requirements.extend(str(d) for d in deps if isinstance(d, str))
        tool = data.get("tool")
        flash = tool.get("flash") if isinstance(tool, dict) else None
        if isinstance(flash, dict) and "gpu-torch" in flash:
            setting = _bool_setting(flash["gpu-torch"])
            if setting is None:
                diagnostics.append(
                    Diagnostic(
                        "warning",
                        "pyproject.toml",
                        0,
                        f"[tool.flash] gpu-torch must be true or false, not "
                        f"{flash['gpu-torch']!r}; torch goes to GPU endpoints only when "
                        "the code imports it",
                        "env-settings",
                    )
                )
            else:
                gpu_torch = setting
    gpu_torch = gpu_torch_enabled(gpu_torch, environ)
    if gpu_torch is None:
        gpu_torch = _TORCH in project_imports(root, {_TORCH})
    torch = (local_cpu_torch(pip_settings(environ)) if gpu_torch else None) or _TORCH
    return ProjectRequirements(tuple(requirements), gpu_torch, tuple(diagnostics), torch)


def is_gpu(resource: Mapping[str, Any]) -> bool:
    """Whether a manifest resource runs on upstream's GPU images (not a CPU class)."""
    kind = RESOURCE_TYPES.get(str(resource.get("resource_type") or ""))
    if kind is not None:
        return not kind.is_cpu
    config = resource.get("config")
    return isinstance(config, Mapping) and bool(config.get("gpuIds") or config.get("gpus"))


def endpoint_contents(
    resource: Mapping[str, Any], project: ProjectRequirements, python: str | None = None
) -> EnvContents | None:
    """What the environment of one manifest resource holds; None when it needs none."""
    wanted = list(project.requirements)
    for function in resource.get("functions") or []:
        wanted.extend(str(dep) for dep in function.get("dependencies") or [])
    kept = [normalize(r) for r in wanted if _name(r) not in SDK_DISTRIBUTIONS and r.strip()]
    torch = project.gpu_torch and is_gpu(resource)
    if torch and _TORCH not in {_name(r) for r in kept}:
        kept.append(normalize(project.torch_requirement))
    if not kept:
        return None
    requirements = tuple(sorted(dict.fromkeys(kept)))
    return EnvContents(requirements, python or sys.executable, torch)
