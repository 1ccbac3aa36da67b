"""What runs inside a deployed worker, and the Flash SDK users write their code against.

The public names mirror upstream `tetra_rp` / `runpod_flash`, so user code written for either runs
unchanged (see `runtime.shims`).
"""

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
