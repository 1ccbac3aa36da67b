"""An HTTP method that does not exist."""

from tetra_rp import CpuLiveLoadBalancer, remote

lb = CpuLiveLoadBalancer(name="bad_method_lb")


@remote(lb, method="FETCH", path="/things")
async def things() -> list:
    return []
