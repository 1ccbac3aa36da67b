"""Cost marks for the plan: endpoints that never scale to zero, with their hourly price.

An endpoint with `workersMin > 0` keeps that many workers running, and billed, even when idle.
The price is the API's: the lowest price of the GPU types in the endpoint's pools (`gpuTypes`
`lowestPrice` for its GPU count) or of its cheapest CPU instance type (`cpuFlavors`
`specifics.slsPrice`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.runpod.api import RunPodApi
from engine.runpod.graphql import RunPodError
from runtime.runpod_endpoints import Deployment, endpoint_input

__all__ = ["POOL_TYPES", "cost_notes"]

# RunPod's GPU pools (the `gpuIds` values) and the GPU types in each: `gpuTypes` lists types,
# not pools.
POOL_TYPES: dict[str, tuple[str, ...]] = {
    "AMPERE_16": ("NVIDIA RTX A4000",),
    "AMPERE_24": ("NVIDIA RTX A5000",),
    "ADA_24": ("NVIDIA GeForce RTX 4090", "NVIDIA L4"),
    "ADA_32_PRO": ("NVIDIA GeForce RTX 5090",),
    "AMPERE_48": ("NVIDIA RTX A6000", "NVIDIA A40"),
    "ADA_48_PRO": ("NVIDIA L40S",),
    "AMPERE_80": ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"),
    "ADA_80_PRO": ("NVIDIA H100 80GB HBM3",),
    "HOPPER_141": ("NVIDIA H200",),
}


def _gpu_types(gpu_ids: str) -> list[str]:
    """The GPU types a `gpuIds` value allows: its pools' types and named types, minus `-type`s."""
    wanted: list[str] = []
    banned = set()
    for token in (t.strip() for t in gpu_ids.split(",") if t.strip()):
        if token.startswith("-"):
            banned.add(token[1:])
        else:
            wanted.extend(POOL_TYPES.get(token, (token,)))
    return [t for t in dict.fromkeys(wanted) if t not in banned]


async def _hourly(
    api: RunPodApi, gpu_ids: str, gpu_count: int, cpu: list[str] | None
) -> float | None:
    if cpu is not None:
        prices = [p for p in [await api.cpu_price(i) for i in cpu] if p is not None]
    else:
        types = _gpu_types(gpu_ids)
        prices = list((await api.gpu_prices(types, gpu_count)).values()) if types else []
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
        shown = "price unknown" if price is None else f"${price * workers:.2f}/h"
        notes[name] = f"never scales to zero (workersMin {workers}): {shown} while idle"
    return notes
