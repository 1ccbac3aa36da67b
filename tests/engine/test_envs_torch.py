"""The torch path (opt-in: `pytest -m torch`): a GPU endpoint's environment holds torch, as
upstream's GPU images do, and its worker answers with it. Uses the machine's pip settings (here
a CPU build of torch in a find-links directory); the first build takes seconds to minutes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from inprocess import deploy, invoke
from projectfiles import write_files

from engine.envs import EnvCache
from engine.home import Home

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


TARGET, ARGS = "gpu_torch:tensor_sum", {"values": [1.5, 2.5]}


def test_gpu_endpoint_imports_torch_from_its_environment(
    tmp_path: Path, localcloud_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASH_TUI_GPU_TORCH", "on")
    home = Home(localcloud_home)
    first = write_files(tmp_path / "first", PROJECT)
    second = tmp_path / "second"
    shutil.copytree(first, second)
    cache_dir = tmp_path / "cache"
    report, events = deploy(first, home, EnvCache(cache_dir))
    assert report.ok, report.to_dict()
    assert any(e.step == "envs" and "ready" in e.message for e in events)
    answer = invoke(first, home, TARGET, ARGS)
    assert answer.ok, answer.error
    assert answer.result["sum"] == 4.0 and answer.result["torch"]
    # Another project: the environment is reused, uv is not even there.
    report2, events2 = deploy(second, home, EnvCache(cache_dir, uv="/nonexistent/uv"))
    assert report2.ok, report2.to_dict()
    assert any(e.step == "envs" and "reused" in e.message for e in events2)
    assert invoke(second, home, TARGET, ARGS).result["sum"] == 4.0
