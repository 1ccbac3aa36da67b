"""What runs inside a deployed worker, and the Flash SDK users write their code against.

The public names mirror upstream `tetra_rp` / `runpod_flash`, so user code written for either runs
unchanged (see `runtime.shims`). They are imported on first use (PEP 562): importing one
submodule (`runtime.errors`, `runtime.enums`) does not load the pydantic resource models.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.endpoint import Endpoint
    from runtime.enums import (
        CpuInstanceType,
        CudaVersion,
        DataCenter,
        GpuGroup,
        GpuType,
        ServerlessScalerType,
        ServerlessType,
    )
    from runtime.remote import remote
    from runtime.resources import (
        CpuLiveLoadBalancer,
        CpuLiveServerless,
        CpuLoadBalancerSlsResource,
        CpuServerlessEndpoint,
        LiveLoadBalancer,
        LiveServerless,
        LoadBalancerSlsResource,
        NetworkVolume,
        PodTemplate,
        ServerlessEndpoint,
        ServerlessResource,
    )

# The submodules that define the public names, light ones first: a name is looked up in each
# in turn, so asking for an enum (or `remote`) does not load the pydantic models.
_SUBMODULES = ("runtime.enums", "runtime.remote", "runtime.resources", "runtime.endpoint")

__all__ = [
    "CpuInstanceType",
    "CpuLiveLoadBalancer",
    "CpuLiveServerless",
    "CpuLoadBalancerSlsResource",
    "CpuServerlessEndpoint",
    "CudaVersion",
    "DataCenter",
    "Endpoint",
    "GpuGroup",
    "GpuType",
    "LiveLoadBalancer",
    "LiveServerless",
    "LoadBalancerSlsResource",
    "NetworkVolume",
    "PodTemplate",
    "ServerlessEndpoint",
    "ServerlessResource",
    "ServerlessScalerType",
    "ServerlessType",
    "remote",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its submodule on first use (then cached here)."""
    value = _defined(name)
    if name != "remote":  # see _Package
        globals()[name] = value
    return value


def _defined(name: str) -> Any:
    """The public `name`, from the submodule that defines it."""
    if name in __all__:
        for where in _SUBMODULES:
            value = getattr(importlib.import_module(where), name, None)
            if getattr(value, "__module__", None) == where:
                return value
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """`runtime.remote` is both a submodule and the decorator it defines: importing the
    submodule sets the package's attribute to the module, which would hide the decorator.
    The name stays the decorator (the eager `from runtime.remote import remote` did that)."""

    @property
    def remote(self) -> Any:
        return __getattr__("remote")

    @remote.setter
    def remote(self, value: Any) -> None:
        pass  # the submodule being bound by the import system: it stays in sys.modules


sys.modules[__name__].__class__ = _Package
