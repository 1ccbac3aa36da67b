"""The service registry in workers deployed to RunPod: the environment's state as endpoint table."""

from __future__ import annotations

import asyncio

import pytest

from runtime.errors import EndpointNotFoundError
from runtime.registry import ServiceRegistry, parse_endpoints

STATE = {
    "resources": {
        "cpu_worker": {
            "resource_type": "CpuLiveServerless",
            "aiKey": "ai-cpu",
            "endpoint_id": "e1",
        },
        "gateway": {"resource_type": "CpuLoadBalancerSlsResource", "endpoint_id": "e2"},
    },
    "resources_endpoints": {
        "cpu_worker": "https://api.runpod.ai/v2/e1/",
        "gateway": "https://e2.api.runpod.ai",
    },
}


def test_an_environment_manifest_is_an_endpoint_table() -> None:
    table = parse_endpoints(STATE)
    assert table["cpu_worker"].url == "https://api.runpod.ai/v2/e1"
    assert table["cpu_worker"].headers() == {"Authorization": "Bearer ai-cpu"}
    assert table["gateway"].key is None and "ai-cpu" not in repr(table["cpu_worker"])


def test_a_deployed_worker_without_a_table_does_not_run_calls_locally() -> None:
    assert ServiceRegistry.from_env({"FLASH_RESOURCE_NAME": "gateway"}) is None  # development
    registry = ServiceRegistry.from_env(
        {"FLASH_RESOURCE_NAME": "gateway", "FLASH_ENVIRONMENT_ID": "env-1"}
    )
    assert registry is not None and registry.is_local("gateway")
    with pytest.raises(EndpointNotFoundError, match="no endpoint table"):
        asyncio.run(registry.endpoint("cpu_worker"))
