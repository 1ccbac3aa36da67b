"""Live load-balanced API: plain HTTP routes, no queue."""

import platform

from tetra_rp import LiveLoadBalancer, remote

api_config = LiveLoadBalancer(name="api", workersMin=1, workersMax=3)


@remote(api_config, method="GET", path="/health")
async def health() -> dict:
    """Liveness of the app itself (the platform's /ping is separate)."""
    return {"status": "ok", "python": platform.python_version()}


@remote(api_config, method="GET", path="/greet")
def greet(name: str = "world") -> dict:
    """Query parameter `name`."""
    return {"message": f"Hello, {name}!"}


@remote(api_config, method="POST", path="/compute")
async def compute(numbers: list[float], scale: float = 1.0) -> dict:
    """JSON body `{"numbers": [...], "scale": 2}`."""
    scaled = [n * scale for n in numbers]
    return {"count": len(scaled), "sum": sum(scaled), "max": max(scaled, default=None)}
