"""Import shims: `import tetra_rp` / `import runpod_flash` give this runtime's SDK.

User projects are written against the upstream packages (`from tetra_rp import remote,
LiveServerless`, `from runpod_flash import Endpoint`). Our build import-check and our workers run
that code with *our* runtime, so `install()` adds a meta-path finder that serves those package
names (and the submodules user code commonly imports) as thin modules re-exporting
`runtime.__all__`.

Ours always wins, also when the real package is installed next to us (as real users have it):
with the real SDK, `@remote` and cross-endpoint calls would try to reach RunPod. So the finder
goes FIRST on `sys.meta_path`, and modules of the real package already imported are dropped from
`sys.modules`. Only workers and the build's import check install it; the engine never imports
user code.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence

__all__ = ["SHIMMED_PACKAGES", "SHIMMED_SUBMODULES", "install", "is_shim", "uninstall"]

SHIMMED_PACKAGES: tuple[str, ...] = ("tetra_rp", "runpod_flash")

# Submodules (relative to each shimmed package) that user code imports in the wild. Each one
# re-exports the whole public API: a superset of what the upstream module has, which is harmless
# and keeps the table short. Anything not listed raises ModuleNotFoundError as usual.
SHIMMED_SUBMODULES: tuple[str, ...] = (
    "client",
    "endpoint",
    "core",
    "core.resources",
    "core.resources.base",
    "core.resources.cpu",
    "core.resources.gpu",
    "core.resources.live_serverless",
    "core.resources.load_balancer_sls_resource",
    "core.resources.network_volume",
    "core.resources.serverless",
    "core.resources.serverless_cpu",
    "core.resources.template",
)

# Marks shim modules and the finder; a plain attribute survives `importlib.reload(shims)`,
# which would otherwise create a second finder class and defeat the idempotency check.
_MARKER = "__flash_tui_shim__"

_PACKAGE_SUFFIXES: frozenset[str] = frozenset(
    name.rsplit(".", 1)[0] for name in SHIMMED_SUBMODULES if "." in name
)


def _relative(fullname: str) -> tuple[str, str] | None:
    """Split `tetra_rp.core.resources` into ("tetra_rp", "core.resources"); None if not ours."""
    top, _, rest = fullname.partition(".")
    if top not in SHIMMED_PACKAGES:
        return None
    if rest and rest not in SHIMMED_SUBMODULES:
        return None
    return top, rest


class _ShimLoader(importlib.abc.Loader):
    """Creates a module that re-exports `runtime.__all__`."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # default module creation

    def exec_module(self, module: types.ModuleType) -> None:
        import runtime

        names = list(runtime.__all__)
        for name in names:
            setattr(module, name, getattr(runtime, name))
        module.__all__ = names  # type: ignore[attr-defined]
        module.__doc__ = (
            f"flash-tui shim: {module.__name__} re-exports the flash-tui runtime SDK "
            "(the real package is not installed)."
        )
        setattr(module, _MARKER, True)


class _ShimFinder(importlib.abc.MetaPathFinder):
    """Serves the shimmed names, ahead of any installed package of the same name."""

    def __init__(self) -> None:
        setattr(self, _MARKER, True)
        self._loader = _ShimLoader()

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        split = _relative(fullname)
        if split is None:
            return None
        top, rest = split
        if rest:
            # Submodules only under our own shim parent; under a real package, never.
            parent = sys.modules.get(fullname.rpartition(".")[0])
            if parent is None or not getattr(parent, _MARKER, False):
                return None
        is_package = not rest or rest in _PACKAGE_SUFFIXES
        spec = importlib.machinery.ModuleSpec(fullname, self._loader, is_package=is_package)
        if is_package:
            # An empty search path: unknown submodules fail with ModuleNotFoundError.
            spec.submodule_search_locations = []
        return spec


def install() -> bool:
    """Put the shim finder first on `sys.meta_path` (once). Returns True if it was added now."""
    if any(getattr(finder, _MARKER, False) for finder in sys.meta_path):
        return False
    # A real package imported earlier would keep answering `import tetra_rp` from sys.modules.
    for name in [n for n, m in sys.modules.items() if _is_real_sdk_module(n, m)]:
        del sys.modules[name]
    sys.meta_path.insert(0, _ShimFinder())
    return True


def _is_real_sdk_module(name: str, module: types.ModuleType | None) -> bool:
    top = name.partition(".")[0]
    return top in SHIMMED_PACKAGES and not getattr(module, _MARKER, False)


def uninstall() -> None:
    """Remove the shim finder and any shim modules already imported (used by tests)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, _MARKER, False)]
    for name in [n for n, m in sys.modules.items() if getattr(m, _MARKER, False)]:
        del sys.modules[name]


def is_shim(module: types.ModuleType) -> bool:
    """True if `module` is one of our shim modules rather than a real upstream package."""
    return bool(getattr(module, _MARKER, False))
