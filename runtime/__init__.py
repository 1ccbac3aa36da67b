"""What runs inside a deployed worker, and the Flash SDK users write their code against.

The public names mirror upstream `tetra_rp` / `runpod_flash`, so user code written for either runs
unchanged (see `runtime.shims`).

The names are imported on first use (PEP 562): a worker or the engine importing one submodule
(`runtime.worker`, `runtime.logline`) does not import the whole SDK and its resource models.
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

# The submodule that defines each public name.
_HOMES = {
    "Endpoint": "runtime.endpoint",
    "remote": "runtime.remote",
    **dict.fromkeys(
        [
            "CpuInstanceType",
            "CudaVersion",
            "DataCenter",
            "GpuGroup",
            "GpuType",
            "ServerlessScalerType",
            "ServerlessType",
        ],
        "runtime.enums",
    ),
}


def __getattr__(name: str) -> Any:
    """Import a public name from its submodule on first use."""
    home = _HOMES.get(name, "runtime.resources" if name in __all__ else None)
    if home is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


class _Package(types.ModuleType):
    """The package's module type: `runtime.remote` stays the decorator, as it always was.

    Importing the submodule `runtime.remote` (which `runtime.endpoint` does) would otherwise
    bind the submodule over the decorator's name, and `from runtime import remote` would
    return a module.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "remote" and isinstance(value, types.ModuleType):
            value = value.remote
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
