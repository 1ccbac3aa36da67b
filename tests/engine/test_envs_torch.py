"""The torch path (opt-in: `pytest -m torch`): a GPU endpoint's environment holds torch, as
upstream's GPU images do, and its worker answers with it. Uses the machine's pip settings (here
a CPU build of torch in a find-links directory); the first build takes seconds to minutes."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from projectfiles import write_files

from engine.envs import EnvCache
from engine.home import Home
from engine.operation_results import OpEvent

pytestmark = pytest.mark.torch

PROJECT = {
    "gpu_worker.py": """
        from tetra_rp import GpuGroup, LiveServerless, remote

        gpu_config = LiveServerless(name="gpu_torch", gpus=[GpuGroup.ANY])


        @remote(resource_config=gpu_config)
        def tensor_sum(values: list[float]) -> dict:
            import torch

            return {"sum": float(torch.tensor(values).sum()), "torch": str(torch.__version__)}
    """,
}


def _deploy(project: Path, home: Home, cache: EnvCache) -> tuple[Any, list[OpEvent]]:
    from engine.localcloud.provider import LocalCloudProvider
    from engine.operations import Engine

    events: list[OpEvent] = []

    async def main() -> Any:
        async with Engine(project, LocalCloudProvider(home), env_cache=cache) as engine:
            return await engine.deploy(on_event=events.append)

    return asyncio.run(main()), events


def _invoke(project: Path, home: Home) -> Any:
    from engine.localcloud.provider import LocalCloudProvider
    from engine.operations import Engine

    async def main() -> Any:
        async with Engine(project, LocalCloudProvider(home, start=False)) as engine:
            return await engine.invoke("gpu_torch:tensor_sum", {"values": [1.5, 2.5]})

    return asyncio.run(main())


def test_gpu_endpoint_imports_torch_from_its_environment(
    tmp_path: Path, localcloud_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASH_TUI_GPU_TORCH", "on")
    home = Home(localcloud_home)
    first = write_files(tmp_path / "first", PROJECT)
    second = tmp_path / "second"
    shutil.copytree(first, second)
    cache_dir = tmp_path / "cache"
    report, events = _deploy(first, home, EnvCache(cache_dir))
    assert report.ok, report.to_dict()
    assert any(e.step == "envs" and "ready" in e.message for e in events)
    answer = _invoke(first, home)
    assert answer.ok, answer.error
    assert answer.result["sum"] == 4.0 and answer.result["torch"]
    # Another project: the environment is reused, uv is not even there.
    report2, events2 = _deploy(second, home, EnvCache(cache_dir, uv="/nonexistent/uv"))
    assert report2.ok, report2.to_dict()
    assert any(e.step == "envs" and "reused" in e.message for e in events2)
    assert _invoke(second, home).result["sum"] == 4.0
