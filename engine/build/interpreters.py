"""Which interpreter the build's import check (step 6) imports each handler on: the one its
endpoint will run on.

An endpoint with no environment (`engine.envs`) runs on the local cloud's own interpreter: its
handler is checked there. One whose environment is already in the cache is checked on that
environment's interpreter. One whose environment is not built yet (environments are built after
the plan is confirmed, in the deploy's `envs` step) is checked on ours, and a
`ModuleNotFoundError` for a module that environment will provide (one of its requirements, by
name or by a well-known import name such as `PIL` for `pillow`, or torch) does not fail the
build: that handler's check is deferred to right after its environment is built
(`engine.env_step`), where a failure marks that endpoint `failed`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.diagnostics import Diagnostic
from engine.handlergen import VENDOR_DIR, HandlerCheck, handler_filename

if TYPE_CHECKING:  # engine.envs is imported when a build checks handlers, not with the build
    from engine.envs import EnvCache, EnvContents

__all__ = [
    "HandlerInterpreter",
    "deferred",
    "missing_import_diagnostics",
    "handler_interpreters",
    "missing_module",
    "provides_module",
]

# Import names that differ from their distribution's name (canonical distribution prefixes).
_IMPORT_NAMES: dict[str, tuple[str, ...]] = {
    "PIL": ("pillow",),
    "cv2": ("opencv-",),
    "yaml": ("pyyaml",),
    "sklearn": ("scikit-learn",),
    "skimage": ("scikit-image",),
    "bs4": ("beautifulsoup4",),
    "dateutil": ("python-dateutil",),
    "dotenv": ("python-dotenv",),
    "jwt": ("pyjwt",),
    "attr": ("attrs",),
    "Crypto": ("pycryptodome",),
    "OpenSSL": ("pyopenssl",),
    "fitz": ("pymupdf",),
    "docx": ("python-docx",),
    "google": ("google-", "protobuf"),
    "huggingface_hub": ("huggingface-hub",),
}
_MISSING = re.compile(r"ModuleNotFoundError: No module named '([^']+)'")
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


@dataclass(frozen=True)
class HandlerInterpreter:
    """Where one handler is checked: `python` (None: ours), and what its environment, when not
    built yet, will hold (`pending`; None: nothing pending)."""

    python: str | None = None
    pending: EnvContents | None = None


def missing_module(check: HandlerCheck) -> str | None:
    """The module a failed check's `ModuleNotFoundError` names, if that is why it failed."""
    found = _MISSING.search(check.error) or _MISSING.search(check.output)
    return found.group(1) if found else None


def provides_module(contents: EnvContents, module: str) -> bool:
    """Whether an environment of `contents` will provide the top-level module of `module`."""
    # Here, not at the top: the build module imports this one, and a fresh build's check
    # parses no requirement.
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    top = module.partition(".")[0]
    if contents.torch and top == "torch":
        return True
    names: list[str] = []
    for line in contents.requirements:
        try:
            names.append(canonicalize_name(Requirement(line).name))
        except InvalidRequirement:
            return True  # a URL or a path: what it provides is not known before installing
    if canonicalize_name(top) in names:
        return True
    prefixes = _IMPORT_NAMES.get(top, ())
    return any(name.startswith(prefix) for name in names for prefix in prefixes)


def handler_interpreters(
    root: Path,
    manifest: Mapping[str, Any],
    *,
    cache: EnvCache | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, HandlerInterpreter]:
    """Each handler file of `manifest` -> where the build's import check imports it."""
    from engine.envs import EnvCache, endpoint_contents, env_cache_dir, project_requirements

    environ = dict(os.environ if environ is None else environ)
    project = project_requirements(root, environ)
    out: dict[str, HandlerInterpreter] = {}
    for name, resource in (manifest.get("resources") or {}).items():
        filename = handler_filename(str(name), resource)
        contents = endpoint_contents(resource, project)
        if contents is None:
            out[filename] = HandlerInterpreter()
            continue
        cache = cache or EnvCache(env_cache_dir(environ), environ=environ)
        found = cache.find(contents)
        if found is not None:
            out[filename] = HandlerInterpreter(python=str(found.python))
        else:
            out[filename] = HandlerInterpreter(pending=contents)
    return out


def deferred(check: HandlerCheck, where: HandlerInterpreter | None) -> bool:
    """Whether a failed check waits for its environment (the deploy's `envs` step re-checks):
    it misses a module that the environment, not built yet, will provide."""
    module = missing_module(check)
    pending = where.pending if where is not None else None
    return module is not None and pending is not None and provides_module(pending, module)


def _importing_frame(check: HandlerCheck, build_dir: Path) -> tuple[str, int] | None:
    """(file relative to the build, line) of the project's innermost frame in the traceback."""
    base = os.path.realpath(build_dir)
    found = None
    for path, line in _FRAME.findall(check.output):
        real = os.path.realpath(path)
        if not real.startswith(base + os.sep):
            continue
        rel = Path(os.path.relpath(real, base)).as_posix()
        if rel != check.handler and not rel.startswith(VENDOR_DIR + "/"):
            found = (rel, int(line))
    return found


def missing_import_diagnostics(checks: list[HandlerCheck], build_dir: Path) -> list[Diagnostic]:
    """For each failed check that misses a module: the project file and line importing it, and
    the module, said first (the handler's own diagnostic keeps the traceback)."""
    out: list[Diagnostic] = []
    for check in checks:
        module = missing_module(check)
        frame = _importing_frame(check, build_dir) if module else None
        if module is None or frame is None:
            continue
        rel, line = frame
        out.append(
            Diagnostic(
                "error",
                rel,
                line,
                f"imports {module!r}, which nothing provides: neither this "
                "interpreter nor the endpoint's environment (add its package to the "
                "endpoint's dependencies=[...] or to requirements.txt)",
                "build-import-missing",
            )
        )
    return out
