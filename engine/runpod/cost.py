"""Cost marks for the plan: endpoints that never scale to zero, with their hourly price.

An endpoint with `workersMin > 0` keeps that many workers running, and billed, even when idle.
The price is the API's: the lowest price of the endpoint's GPU pool or type (`gpuTypes`
`lowestPrice`, times its GPU count) or of its cheapest CPU instance type (`cpuFlavors`
`specifics.slsPrice`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.runpod.api import RunPodApi
from engine.runpod.endpoints import Deployment, endpoint_input
from engine.runpod.graphql import RunPodError

__all__ = ["cost_notes"]


async def _hourly(
    api: RunPodApi, gpu_ids: str, gpu_count: int, cpu: list[str] | None
) -> float | None:
    prices: list[float] = []
    if cpu is not None:
        for instance in cpu:
            price = await api.cpu_price(instance)
            if price is not None:
                prices.append(price)
    else:
        for gpu in (g.strip() for g in gpu_ids.split(",") if g.strip()):
            price = await api.gpu_price(gpu, gpu_count)
            if price is not None:
                prices.append(price * max(1, gpu_count))
    return min(prices) if prices else None


async def cost_notes(api: RunPodApi, local: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """`{name: note}` for each resource in code whose workers never scale to zero."""
    notes: dict[str, str] = {}
    for name, entry in sorted(local.items()):
        config = entry.get("config")
        resource_type = entry.get("resource_type")
        if not isinstance(config, Mapping) or not isinstance(resource_type, str):
            continue
        try:
            sent = endpoint_input(name, resource_type, config, Deployment("", "", ""))
        except (ValueError, KeyError, TypeError):
            continue  # an invalid or unresolved config has its own diagnostics
        if sent.workersMin <= 0:
            continue
        try:
            price = await _hourly(api, sent.gpuIds, sent.gpuCount, sent.instanceIds)
        except RunPodError:
            price = None
        workers = sent.workersMin
        shown = "price unknown" if price is None else f"≥ ${price * workers:.2f}/h"
        notes[name] = f"never scales to zero (workersMin {workers}): {shown} while idle"
    return notes
