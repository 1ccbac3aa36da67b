"""The mothership's `/manifest` cache: a TTL, invalidated by its own reconcile, and stale
beats nothing while the state manager is away."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.control_plane import PlaneUnavailable
from runtime.mothership import ManifestCache, fingerprint


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_cache_holds_for_its_ttl_and_reloads_after_invalidate() -> None:
    clock = Clock()
    cache = ManifestCache(300.0, clock)
    loads: list[int] = []

    async def load() -> dict[str, Any]:
        loads.append(1)
        return {"resources": {"a": {"n": len(loads)}}}

    assert (await cache.get(load))["resources"]["a"]["n"] == 1
    clock.now += 299
    assert (await cache.get(load))["resources"]["a"]["n"] == 1
    clock.now += 2
    assert (await cache.get(load))["resources"]["a"]["n"] == 2
    cache.invalidate()
    assert (await cache.get(load))["resources"]["a"]["n"] == 3


async def test_cache_serves_stale_while_the_state_manager_is_away() -> None:
    clock = Clock()
    cache = ManifestCache(1.0, clock)
    up = True

    async def load() -> dict[str, Any]:
        if not up:
            raise PlaneUnavailable("local cloud unreachable")
        return {"resources": {"a": {}}}

    await cache.get(load)
    up = False
    clock.now += 5
    assert await cache.get(load) == {"resources": {"a": {}}}
    empty = ManifestCache(1.0, clock)
    with pytest.raises(PlaneUnavailable):
        await empty.get(load)


def test_fingerprint_is_config_and_code() -> None:
    assert fingerprint({"config_hash": "c", "code_hash": "k"}) == "c:k"
    assert fingerprint({"config_hash": "c"}) == "c:"
    assert fingerprint({"code_hash": "k"}) is None  # never provisioned: changed
