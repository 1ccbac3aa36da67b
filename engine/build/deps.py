"""Build step 2 (only with `deps=True`): pip-install requirements.txt and every function's
`dependencies` for RunPod's platform (linux x86_64 CPython wheels) into a cache under
`.flash/.deps/`, keyed by the requirement set, which the build then merges in."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from engine.build.files import remove_path
from engine.build.images import python_version
from engine.build.model import DEPS_DIR, BuildError
from engine.diagnostics import Diagnostic

__all__ = ["collect_requirements", "install_deps"]


def collect_requirements(root: Path, manifest: dict[str, Any]) -> list[str]:
    """requirements.txt lines + every function's `dependencies`, de-duplicated in order."""
    requirements: list[str] = []
    req_file = root / "requirements.txt"
    if req_file.is_file():
        for line in req_file.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                requirements.append(line)
    for resource_name in sorted(manifest.get("resources") or {}):
        for function in manifest["resources"][resource_name].get("functions") or []:
            requirements.extend(str(dep) for dep in function.get("dependencies") or [])
    return list(dict.fromkeys(requirements))


def _pip_command(target: Path, requirements_file: Path) -> list[str]:
    # RunPod workers are linux x86_64 CPython: fetch wheels for that platform, whatever this
    # machine is (binary wheels only: nothing can be compiled for another platform), for the
    # Python of the worker image the build targets (engine.build.images).
    version = python_version()
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--no-compile",  # .pyc files would differ per run and are excluded anyway
        "--target",
        str(target),
        "--python-version",
        version,
        "--implementation",
        "cp",
        "--only-binary=:all:",
        "--platform",
        "manylinux_2_28_x86_64",
        "--platform",
        "manylinux_2_17_x86_64",
        "--platform",
        "manylinux2014_x86_64",
        "--upgrade",
        "-r",
        str(requirements_file),
    ]


def install_deps(root: Path, requirements: list[str], timeout: float) -> Path | None:
    """Install `requirements` into a cache directory keyed by their hash; return it."""
    if not requirements:
        return None
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:16]
    cache = root / DEPS_DIR / key
    # Only the current requirement set is kept: older caches would pile up with every change.
    if cache.parent.is_dir():
        for other in cache.parent.iterdir():
            if other.name != key:
                remove_path(other)
    if (cache / ".complete").is_file():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=cache.parent))
    try:
        req_file = staging / "requirements.txt"
        req_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        target = staging / "site"
        try:
            result = subprocess.run(
                _pip_command(target, req_file),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise BuildError(
                f"dependency installation did not finish within {timeout:g}s", step="deps"
            ) from exc
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise BuildError(
                "dependency installation failed",
                [Diagnostic("error", "requirements.txt", 0, tail or "pip failed", "build-deps")],
                step="deps",
            )
        for junk in list(target.rglob("__pycache__")):
            shutil.rmtree(junk, ignore_errors=True)
        (target / ".complete").write_text(key + "\n")
        remove_path(cache)
        os.replace(target, cache)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache
