"""Worker isolation on the real local cloud: what a deployed worker's code can find, build copies.

Two apps are deployed to one local cloud; the `probe` app's user code reports what its process
was given (environment, inherited files, command line) through a route, and the test checks
that none of it leads to the home's token or database or to the `victim` app's key.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from worker_harness import deploy_lb_build, lb_build_archive

from engine.home import Home
from engine.localcloud.buildcopies import BUILD_MARKER
from engine.localcloud.client import CloudClient
from engine.localcloud.discovery import CloudInfo, ensure_cloud, stop_cloud
from engine.localcloud.store import Store
from engine.localcloud.supervisor import Supervisor

PROBE_HANDLER = """
import os

from runtime.lb_app import create_lb_app


def _fds() -> dict:
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return found


# At import, before the server opens anything of its own: what the process inherited.
INHERITED_FDS = _fds()


async def probe() -> dict:
    with open("/proc/self/cmdline", "rb") as handle:
        argv = handle.read().decode(errors="replace").split("\\0")
    return {"env": dict(os.environ), "fds": INHERITED_FDS, "argv": argv}


app = create_lb_app({("GET", "/probe"): probe})
"""


def make_build(root: Path, name: str) -> tuple[Path, str, dict[str, Any]]:
    """A one-endpoint build (LB `name` running the probe) as an archive: (archive, id, manifest)."""
    return lb_build_archive(root, name, PROBE_HANDLER, {"pkg/data.txt": "data\n"})


async def deploy(info: CloudInfo, app: str, archive: Path, build_id: str, manifest: dict) -> None:
    await deploy_lb_build(info, app, (archive, build_id, manifest), {"USER_SETTING": "from-config"})


async def key_and_url(info: CloudInfo, app: str, name: str) -> tuple[str, str]:
    async with CloudClient(info) as client:
        return await client.endpoint_key(app, name), str((await client.endpoint(app, name)).url)


@pytest.fixture(scope="module")
def cloud(
    localcloud_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Home, CloudInfo]]:
    home = Home(localcloud_home)
    # The service's own environment carries the home (conftest sets FLASH_TUI_HOME), a service
    # setting, a variable pointing into the home and an ordinary one.
    extra = {
        "FLASH_LOCALCLOUD_BACKOFF_MAX": "10",
        "PROBE_POINTS_HOME": str(home.cloud_dir),
        "PROBE_ORDINARY": "kept",
        "PROBE_PATH_LIST": os.pathsep.join(["/usr/bin", str(home.root / "bin"), "/bin"]),
    }
    with pytest.MonkeyPatch.context() as patch:
        # As a user's shell has it: Python writes bytecode (the build-copy test needs that).
        patch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
        info = ensure_cloud(home, extra_env=extra)
    root = tmp_path_factory.mktemp("isolation-builds")
    try:
        for app, name in (("victim", "vault"), ("probe", "spy")):
            archive, build_id, manifest = make_build(root, name)
            asyncio.run(deploy(info, app, archive, build_id, manifest))
        yield home, info
    finally:
        stop_cloud(home)


@pytest.fixture(scope="module")
def probed(cloud: tuple[Home, CloudInfo]) -> dict[str, Any]:
    _, info = cloud
    key, url = asyncio.run(key_and_url(info, "probe", "spy"))
    response = httpx.get(
        f"{url}/probe", headers={"Authorization": f"Bearer {key}"}, timeout=10, trust_env=False
    )
    assert response.status_code == 200, response.text
    return {"key": key, **response.json()}


def test_worker_environment_names_neither_the_home_nor_its_secrets(
    cloud: tuple[Home, CloudInfo], probed: dict[str, Any]
) -> None:
    home, info = cloud
    env: dict[str, str] = probed["env"]
    victim_key, _ = asyncio.run(key_and_url(info, "victim", "vault"))
    assert "FLASH_TUI_HOME" not in env
    assert "FLASH_LOCALCLOUD_BACKOFF_MAX" not in env  # the service's settings stay its own
    assert "PROBE_POINTS_HOME" not in env  # a value pointing into the home is not passed on
    assert env["PROBE_ORDINARY"] == "kept" and env["USER_SETTING"] == "from-config"
    assert env["PROBE_PATH_LIST"] == os.pathsep.join(["/usr/bin", "/bin"])
    assert env["FLASH_ENDPOINT_KEY"] == probed["key"]
    everything = json.dumps(env) + json.dumps(probed["argv"])
    assert info.token not in everything
    assert victim_key not in everything
    assert str(home.cloud_dir) not in everything
    assert str(home.app_dir("victim")) not in everything


def test_worker_endpoint_table_holds_only_its_own_app(
    cloud: tuple[Home, CloudInfo], probed: dict[str, Any]
) -> None:
    _, info = cloud
    victim_key, victim_url = asyncio.run(key_and_url(info, "victim", "vault"))
    table_path = Path(probed["env"]["FLASH_ENDPOINTS_FILE"])
    text = table_path.read_text()
    assert set(json.loads(text)["endpoints"]) == {"spy"}
    assert victim_key not in text and victim_url not in text
    assert stat.S_IMODE(table_path.stat().st_mode) == 0o600


def test_worker_inherits_no_file_of_the_home_but_its_log(
    cloud: tuple[Home, CloudInfo], probed: dict[str, Any]
) -> None:
    home, _ = cloud
    targets = [t for t in probed["fds"].values() if t.startswith("/")]
    assert all(
        not t.startswith(str(home.cloud_dir)) and not t.startswith(str(home.app_dir("victim")))
        for t in targets
    ), targets
    in_home = [t for t in targets if t.startswith(str(home.root))]
    assert {Path(t).name for t in in_home} <= {"spy.log"}, in_home


def test_build_copies_are_private(cloud: tuple[Home, CloudInfo]) -> None:
    home, _ = cloud
    copies = [p for p in home.builds_dir("probe").iterdir() if p.is_dir()]
    assert len(copies) == 1
    # The workers imported from it: the copy is still as built (no __pycache__ of theirs).
    assert not list(copies[0].rglob("__pycache__"))
    for path in [copies[0], *copies[0].rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_dir():
            assert mode == 0o700, (path, oct(mode))
        else:
            assert mode in (0o600, 0o700), (path, oct(mode))


def test_supervisor_start_removes_partial_build_copies(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    builds = home.builds_dir("app")
    # an extraction interrupted by a crash, and a copy never completed (no marker)
    partial = builds / f".{'a' * 64}.tmp-123-deadbeef"
    (partial / "pkg").mkdir(parents=True)
    (partial / "pkg" / "half.py").write_text("x = ")
    unmarked = builds / ("b" * 64)
    unmarked.mkdir()
    (unmarked / "handler_x.py").write_text("")
    complete = builds / ("c" * 64)
    complete.mkdir()
    (complete / BUILD_MARKER).write_text("c" * 64 + "\n")
    store = Store(home.db_path)

    async def start_and_close() -> None:
        supervisor = Supervisor(home, store)
        await supervisor.start()
        await supervisor.close(stop_workers=True)

    try:
        asyncio.run(start_and_close())
    finally:
        store.close()
    assert sorted(p.name for p in builds.iterdir()) == [complete.name]
    assert os.path.isdir(complete)
