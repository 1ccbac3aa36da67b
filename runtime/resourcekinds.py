"""What each resource class is (load-balanced, live, CPU), without the pydantic models.

The scanner, the build and the plan only need these facts; importing `runtime.resources` for
them costs a warm deploy the models' class construction. `runtime.resources` checks at import
that this table matches its classes, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "IMAGE_FIELDS",
    "LIVE_COUNTERPART",
    "RESOURCE_TYPES",
    "ResourceKind",
    "missing_image_message",
    "needs_image",
]


@dataclass(frozen=True)
class ResourceKind:
    """What a resource class is, without instantiating it."""

    name: str
    is_load_balanced: bool
    is_live: bool
    is_cpu: bool


def _kind(name: str, *, lb: bool, live: bool, cpu: bool) -> tuple[str, ResourceKind]:
    return name, ResourceKind(name, lb, live, cpu)


RESOURCE_TYPES: dict[str, ResourceKind] = dict(
    [
        _kind("LiveServerless", lb=False, live=True, cpu=False),
        _kind("CpuLiveServerless", lb=False, live=True, cpu=True),
        _kind("ServerlessEndpoint", lb=False, live=False, cpu=False),
        _kind("CpuServerlessEndpoint", lb=False, live=False, cpu=True),
        _kind("LoadBalancerSlsResource", lb=True, live=False, cpu=False),
        _kind("LiveLoadBalancer", lb=True, live=True, cpu=False),
        _kind("CpuLoadBalancerSlsResource", lb=True, live=False, cpu=True),
        _kind("CpuLiveLoadBalancer", lb=True, live=True, cpu=True),
    ]
)

# The class to use instead of a non-live one when the code should run on Flash's own image.
LIVE_COUNTERPART: dict[str, str] = {
    "ServerlessEndpoint": "LiveServerless",
    "CpuServerlessEndpoint": "CpuLiveServerless",
    "LoadBalancerSlsResource": "LiveLoadBalancer",
    "CpuLoadBalancerSlsResource": "CpuLiveLoadBalancer",
}

IMAGE_FIELDS: tuple[str, ...] = ("imageName", "template", "templateId")


def needs_image(type_name: str) -> bool:
    """True for the classes upstream rejects without imageName, template or templateId."""
    return type_name in LIVE_COUNTERPART


def missing_image_message(type_name: str, name: str) -> str:
    """Why a non-live resource with no image is refused, and what to write instead."""
    return (
        f"{type_name} {name!r} needs imageName, template or templateId (upstream rejects it); "
        f"use {LIVE_COUNTERPART.get(type_name, 'a Live class')} to run on Flash's runtime image, "
        "or set imageName"
    )
