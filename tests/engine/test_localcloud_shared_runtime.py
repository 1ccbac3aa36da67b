"""The build's bundled packages on a real local cloud: two builds of one project share one
extracted directory of them, and every worker (old and new, across a blue/green update) reads
and imports them through its own build copy as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from projectfiles import write_files
from waiting import eventually
from worker_harness import home_worker_pids

from engine.home import Home
from engine.localcloud.buildcopies import runtimes_dir, shared_runtime
from engine.operations import Engine

_PROBE = """
from tetra_rp import CpuLiveServerless, remote

config = CpuLiveServerless(name="probe", workersMin=0, workersMax=1)


@remote(config)
async def look(x: int) -> dict:
    import importlib.util
    import os
    import sys

    (bundled,) = [p for p in sys.path if p.endswith("_flash_packages")]
    # A real import of a module of the bundled runtime, from the build's packages.
    path = os.path.join(bundled, "runtime", "enums.py")
    spec = importlib.util.spec_from_file_location("bundled_enums", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {
        "version": {version},
        "cwd": os.getcwd(),
        "bundled": bundled,
        "real": os.path.realpath(bundled),
        "module": module.__file__,
        "names": len(vars(module)),
    }
"""


@pytest.fixture
def home(cloud_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own home; replaced workers drain briefly."""
    monkeypatch.setenv("FLASH_LOCALCLOUD_DRAIN_GRACE", "0.5")
    return cloud_home


async def _look(engine: Engine) -> dict[str, Any]:
    answer = await engine.invoke("look", {"x": 1}, timeout=60)
    assert answer.ok, answer
    assert isinstance(answer.result, dict)
    return answer.result


async def test_builds_share_their_bundled_packages_and_workers_import_them(
    tmp_path: Path, home: Path
) -> None:
    project = tmp_path / "p"
    write_files(project, {"probe.py": _PROBE.replace("{version}", "1")})
    async with Engine(project) as engine:
        assert (await engine.deploy()).ok
        first = await _look(engine)
        (before,) = await engine.status(probe=False)

        write_files(project, {"probe.py": _PROBE.replace("{version}", "2")})
        report = await engine.deploy()
        assert report.ok and report.plan.names("update") == ["probe"], report
        second = await _look(engine)
        (after,) = await engine.status(probe=False)

        shared = runtimes_dir(Home(home), engine.app)
        assert first["version"] == 1 and second["version"] == 2
        # Two build copies, each its own directory, both reading one shared directory.
        assert first["cwd"] != second["cwd"]
        assert first["bundled"] == str(Path(first["cwd"]) / "_flash_packages")
        assert second["bundled"] == str(Path(second["cwd"]) / "_flash_packages")
        assert first["real"] == second["real"]
        assert Path(first["real"]).parent == shared.resolve()
        assert [p.name for p in shared.iterdir()] == [Path(first["real"]).name]
        assert shared_runtime(Path(second["cwd"])) == Path(second["real"])
        # The module was imported through the copy's path, from the shared files.
        assert second["module"].startswith(second["bundled"] + "/runtime/")
        assert first["names"] == second["names"] > 5

        # The old worker drained and stopped; its copy stays as the spare, sharing the
        # directory, which the running worker still uses.
        await eventually(
            lambda: home_worker_pids(home) == {after.pid}, 30, "the old worker to stop"
        )
        assert before.pid != after.pid
        assert Path(first["real"]).is_dir() and (await _look(engine))["version"] == 2

        # A third version: the first copy is pruned, the shared directory is still in use.
        write_files(project, {"probe.py": _PROBE.replace("{version}", "3")})
        assert (await engine.deploy()).ok
        third = await _look(engine)
        assert third["version"] == 3 and third["real"] == first["real"]
        await eventually(
            lambda: not Path(first["cwd"]).exists(), 30, "the first build copy to be pruned"
        )
        assert Path(third["real"]).is_dir() and (await _look(engine))["version"] == 3
