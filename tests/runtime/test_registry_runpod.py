"""The service registry in workers deployed to RunPod: the environment's state as endpoint table."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from runtime.errors import EndpointNotFoundError, ManifestError
from runtime.registry import EndpointInfo, ServiceRegistry, parse_endpoints

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


def test_the_table_in_the_template_env_resolves_other_endpoints(tmp_path: Path) -> None:
    """A RunPod deploy writes the caller's table into `FLASH_ENDPOINTS`: each callee's URL and
    its endpoint-scoped key, no URL or file to fetch it from."""
    table = {
        "endpoints": {
            "cpu_worker": {"url": "https://api.runpod.ai/v2/e1/", "key": "ai-cpu"},
            "gpu_worker": {"url": "https://api.runpod.ai/v2/e3", "key": "ai-gpu"},
        }
    }
    registry = ServiceRegistry.from_env(
        {
            "FLASH_RESOURCE_NAME": "gateway",
            "FLASH_ENVIRONMENT_ID": "env-1",
            "FLASH_ENDPOINTS": json.dumps(table),
            "FLASH_MANIFEST_PATH": str(tmp_path / "none.json"),
            "FLASH_ENDPOINTS_TTL": "0",  # every look reloads: the table must survive reloads
        }
    )
    assert registry is not None

    async def look() -> list[EndpointInfo]:
        return [await registry.endpoint(n) for n in ("cpu_worker", "gpu_worker", "cpu_worker")]

    cpu, gpu, again = asyncio.run(look())
    assert cpu.url == "https://api.runpod.ai/v2/e1" and cpu.headers()["Authorization"] == (
        "Bearer ai-cpu"
    )
    assert gpu.key == "ai-gpu" and again == cpu and "ai-cpu" not in repr(cpu)
    with pytest.raises(EndpointNotFoundError, match=r"'gateway' is not in the service registry"):
        asyncio.run(registry.endpoint("gateway"))


def test_a_table_that_is_not_json_names_the_variable() -> None:
    with pytest.raises(ManifestError, match="^FLASH_ENDPOINTS is not JSON"):
        ServiceRegistry.from_env({"FLASH_ENDPOINTS": "{not json"})
