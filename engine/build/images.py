"""The upstream worker image each resource of a build runs in on RunPod, fixed at build time.

Our artifacts run in upstream's own Flash worker images (runpod-workers/flash): the
current ones (`runpod/flash`, `-cpu`, `-lb`, `-lb-cpu`, tag `py{V}-latest`) load
`handler_<name>.py` from the artifact. The build writes the chosen name into each resource of
the manifest as `imageName` (as flash 1.21's build does), so a deploy never guesses it.

- The Python `V` is the build's interpreter (3.10-3.13, the versions those images exist for;
  3.12, the images' default, otherwise): the packages vendored into the artifact and the
  build's import check are for that interpreter.
- A resource naming one of upstream's older Flash images (`runpod/tetra-rp*`, which ignore the
  artifact's handlers) gets the current image of its class; any other `imageName` (a custom
  image) is kept as written.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from runtime.resourcekinds import RESOURCE_TYPES

__all__ = [
    "BUILD_KEYS",
    "IMAGE_FILES",
    "IMAGE_REPOSITORY",
    "image_clashes",
    "image_name",
    "python_version",
    "with_images",
]

IMAGE_REPOSITORY = "runpod/flash"
SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
DEFAULT_PYTHON = "3.12"
# Keys the build adds to each manifest resource (the scan does not know them).
BUILD_KEYS = ("imageName",)
_FLASH_IMAGES = ("runpod/tetra-rp", "runpod/flash")
# The worker's own files in the images' code directory, which an artifact is unpacked over
# (runpod-workers/flash `src/`): a project file of one of these names replaces the image's.
IMAGE_FILES = frozenset(
    {
        "handler.py", "lb_handler.py", "remote_executor.py", "function_executor.py",
        "class_executor.py", "dependency_installer.py", "constants.py", "logger.py",
        "log_streamer.py", "unpack_volume.py", "manifest_reconciliation.py",
        "serialization_utils.py", "subprocess_utils.py", "cache_sync_manager.py", "version.py",
        "rp_logger_adapter.py", "api_key_context.py", "sitecustomize.py", "uv.lock",
    }
)  # fmt: skip


def python_version() -> str:
    """The Python (`major.minor`) of the worker image this build targets."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    return here if here in SUPPORTED_PYTHONS else DEFAULT_PYTHON


def image_name(resource: Mapping[str, Any], python: str) -> str:
    """The image of one manifest resource for a worker Python `python`."""
    config = resource.get("config")
    configured = config.get("imageName") if isinstance(config, Mapping) else None
    if isinstance(configured, str) and configured:
        repository = configured.split(":", 1)[0]
        if not repository.startswith(_FLASH_IMAGES):
            return configured  # a custom image: the user's choice
    kind = RESOURCE_TYPES.get(str(resource.get("resource_type", "")))
    load_balanced = kind.is_load_balanced if kind else bool(resource.get("is_load_balanced"))
    cpu = kind.is_cpu if kind else False
    suffix = ("-lb" if load_balanced else "") + ("-cpu" if cpu else "")
    return f"{IMAGE_REPOSITORY}{suffix}:py{python}-latest"


def image_clashes(paths: Iterable[str]) -> list[str]:
    """The top-level files among `paths` (relative, posix) that would replace the image's."""
    return sorted(path for path in paths if path in IMAGE_FILES)


def with_images(manifest: Mapping[str, Any], python: str | None = None) -> dict[str, Any]:
    """A copy of `manifest` whose resources carry their `imageName`."""
    out = copy.deepcopy(dict(manifest))
    version = python or python_version()
    for resource in (out.get("resources") or {}).values():
        resource["imageName"] = image_name(resource, version)
    return out
