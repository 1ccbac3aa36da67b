"""The packages a build carries for upstream's worker images: our runtime and what they lack.

A generated handler imports `runtime` (this project's worker runtime), which needs pydantic,
cloudpickle, fastapi, uvicorn, httpx and httptools. Upstream's images preinstall runpod,
runpod-flash, fastapi, uvicorn, cloudpickle, pydantic, aiohttp and hf_transfer (with their
dependencies; the images' Dockerfiles and lock files), so the build ships the rest — the `runtime`
package and the distributions of the runtime's dependency closure that are not in the image's —
under `_flash_packages/` in the layout `pip install --target` leaves (package directories plus
their `.dist-info`).

The handler APPENDS that directory to `sys.path`: packages the interpreter already has win (in
the image, the image's own fastapi/pydantic, which `fastapi.FastAPI` checks and compiled
extensions must match; in the local cloud, this environment's), and only missing ones come from
the artifact. No top-level name of the artifact changes, so none can collide with the image's
files (handler.py, constants.py, ...).

The files come from this environment when it matches the image (CPython on linux x86_64, the
image's Python, see `images.python_version`); otherwise pip downloads manylinux x86_64 wheels
for the image's Python (`pip install --target --platform ...`, which needs the network).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata as metadata
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterable
from pathlib import Path

from engine.handlergen import VENDOR_DIR

__all__ = [
    "IMAGE_DISTRIBUTIONS",
    "RUNTIME_DISTRIBUTIONS",
    "VENDOR_DIR",
    "VendorError",
    "missing_distributions",
    "runtime_is_current",
    "vendor_files",
]

IMAGE_DISTRIBUTIONS = (
    "runpod",
    "runpod-flash",
    "fastapi",
    "uvicorn",
    "cloudpickle",
    "pydantic",
    "aiohttp",
    "hf-transfer",
)
# What those bring with them, for when this environment cannot tell (runpod not installed
# here): their dependency closure as locked in the worker's uv.lock, by distribution name.
_IMAGE_CLOSURE_KNOWN = frozenset(
    {
        "aiohappyeyeballs", "aiohttp", "aiohttp-retry", "aiosignal", "annotated-doc",
        "annotated-types", "anyio", "attrs", "backoff", "boto3", "botocore", "certifi",
        "charset-normalizer", "click", "cloudpickle", "fastapi", "frozenlist", "h11", "idna",
        "multidict", "propcache", "pydantic", "pydantic-core", "requests", "runpod", "sniffio",
        "starlette", "typing-extensions", "typing-inspection", "urllib3", "uvicorn", "yarl",
    }
)  # fmt: skip
RUNTIME_DISTRIBUTIONS = ("pydantic", "cloudpickle", "fastapi", "uvicorn", "httpx", "httptools")
_RUNTIME_PACKAGE = "runtime"


class VendorError(Exception):
    """The packages could not be gathered (a distribution is missing, pip failed)."""


def _closure(roots: Iterable[str], *, strict: bool) -> dict[str, metadata.Distribution]:
    """Installed distributions of `roots` and all they require (extras not taken), by name."""
    found: dict[str, metadata.Distribution] = {}
    # Here, not at the top: only vendoring walks requirements; a fresh build's check does not.
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pending = [canonicalize_name(r) for r in roots]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if strict:
                raise VendorError(f"{name} is not installed in {sys.prefix}") from None
            continue
        found[name] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(canonicalize_name(requirement.name))
    return found


def missing_distributions() -> dict[str, metadata.Distribution]:
    """The runtime's dependency closure minus the image's, from this environment.

    Remembered while the directories on `sys.path` are unchanged: every build asks (each save
    of a dev session), walking the metadata costs ~0.1 s, and installing or removing a
    distribution adds or removes an entry in its directory, which changes that one's mtime.
    """
    return dict(_missing_in(_environment_stamp()))


def _environment_stamp() -> tuple[tuple[str, int], ...]:
    stamp = []
    for entry in sys.path:
        with contextlib.suppress(OSError):
            stamp.append((entry, os.stat(entry or ".").st_mtime_ns))
    return tuple(stamp)


@functools.lru_cache(maxsize=4)
def _missing_in(
    _stamp: tuple[tuple[str, int], ...],
) -> tuple[tuple[str, metadata.Distribution], ...]:
    needed = _closure(RUNTIME_DISTRIBUTIONS, strict=True)
    image = set(_closure(IMAGE_DISTRIBUTIONS, strict=False)) | _IMAGE_CLOSURE_KNOWN
    return tuple((name, dist) for name, dist in sorted(needed.items()) if name not in image)


def _matches_image(python: str) -> bool:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    return (
        here == python
        and platform.python_implementation() == "CPython"
        and sysconfig.get_platform() == "linux-x86_64"
    )


def _dist_files(dist: metadata.Distribution) -> dict[str, Path]:
    """A distribution's files as `pip install --target` lays them out (no scripts, no .pyc)."""
    files: dict[str, Path] = {}
    for entry in dist.files or []:
        rel = Path(str(entry))
        if rel.parts[0] == ".." or "__pycache__" in rel.parts or rel.suffix in (".pyc", ".pyo"):
            continue
        source = Path(str(dist.locate_file(entry)))
        if source.is_file():
            files[rel.as_posix()] = source
    return files


def _runtime_files() -> dict[str, Path]:
    import runtime

    package = Path(runtime.__file__).resolve().parent
    return {
        f"{_RUNTIME_PACKAGE}/{path.relative_to(package).as_posix()}": path
        for path in sorted(package.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def runtime_is_current(build_dir: Path) -> bool:
    """True when the build's copy of our runtime is this one's (same files, sizes and mtimes:
    the copy keeps them), so an upgraded or edited runtime makes a build stale."""
    expected = {f"{VENDOR_DIR}/{rel}": path for rel, path in _runtime_files().items()}
    base = Path(build_dir)
    shipped = {
        path.relative_to(base).as_posix()
        for path in (base / VENDOR_DIR / _RUNTIME_PACKAGE).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    if shipped != set(expected):
        return False
    for rel, source in expected.items():
        try:
            ours, theirs = source.stat(), (base / rel).stat()
        except OSError:
            return False
        if (ours.st_size, ours.st_mtime_ns) != (theirs.st_size, theirs.st_mtime_ns):
            return False
    return True


def _pip_download(names: list[str], python: str, cache: Path, timeout: float) -> dict[str, Path]:
    # The exact versions installed here, as wheels for the image's platform and Python.
    pins = [f"{name}=={metadata.version(name)}" for name in names]
    target = cache / f"py{python}"
    if not (target / ".complete").is_file():
        shutil.rmtree(target, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix="vendor-", dir=cache))
        command = [
            sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
            "--no-compile", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", python, "--platform", "manylinux_2_28_x86_64",
            "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
            "--target", str(staging), *pins,
        ]  # fmt: skip
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise VendorError(f"pip did not finish within {timeout:g}s") from exc
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["pip failed"]
            raise VendorError(f"cannot fetch {', '.join(pins)} for Python {python}: {tail[0]}")
        (staging / ".complete").write_text("ok\n")
        staging.replace(target)
    return {
        path.relative_to(target).as_posix(): path
        for path in sorted(target.rglob("*"))
        if path.is_file() and path.name != ".complete" and "__pycache__" not in path.parts
    }


def vendor_files(python: str, cache: Path, *, timeout: float = 600.0) -> dict[str, Path]:
    """Files to ship under `VENDOR_DIR`: relative path (inside it) -> the file to copy.

    `cache` holds downloaded wheels when this environment does not match the image.
    """
    missing = missing_distributions()
    files = _runtime_files()
    if _matches_image(python):
        for dist in missing.values():
            files.update(_dist_files(dist))
    else:
        cache.mkdir(parents=True, exist_ok=True)
        files.update(_pip_download(sorted(missing), python, cache, timeout))
    return files
