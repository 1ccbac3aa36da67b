"""The worker sandbox on the real local cloud: a worker's code cannot read other apps' secrets.

Two apps are deployed to one local cloud whose home and whose user's `HOME` are outside
`/tmp` (so that `/tmp`, which workers may write, holds neither). The `probe` app's code tries
to read the `victim` app's build copy and endpoint table, the service token and database, a
planted `~/.runpod/config.toml` and the victim worker's `/proc/<pid>/environ`; each must be
denied by the kernel, while its own code and build files, site-packages imports, `/tmp`, its
temporary directory and a child process keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from headless import run_cli
from projectfiles import copy_example
from worker_harness import deploy_lb_build, lb_build_archive

from engine.home import Home
from engine.localcloud.client import CloudClient
from engine.localcloud.discovery import CloudInfo, ensure_cloud, kill_home_workers, stop_cloud
from engine.localcloud.isolation import describe_isolation
from engine.localcloud.wire import WorkerIsolation, WorkerIsolationList
from runtime.sandbox import landlock_abi

pytestmark = pytest.mark.skipif(
    landlock_abi() == 0, reason="Landlock is not available on this system (not Linux or disabled)"
)

PROBE_HANDLER = """
import json
import os
import subprocess
import sys
import tempfile

from runtime.lb_app import create_lb_app


def _try_read(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
        return "read"
    except PermissionError:
        return "denied"
    except OSError as exc:
        return f"error {exc.errno}"


def _try_list(path: str) -> str:
    try:
        os.listdir(path)
        return "listed"
    except PermissionError:
        return "denied"
    except OSError as exc:
        return f"error {exc.errno}"


async def attempts() -> dict:
    targets = json.loads(os.environ["PROBE_TARGETS"])
    found = {label: _try_read(path) for label, path in targets["read"].items()}
    found.update({label: _try_list(path) for label, path in targets["list"].items()})
    return found


async def works() -> dict:
    import httpx
    import pydantic

    out = {"imports": bool(json.dumps({}) and httpx.__name__ and pydantic.VERSION)}
    out["own_code"] = _try_read(__file__)
    out["own_build_file"] = open("pkg/data.txt").read().strip()
    tmp = f"/tmp/flash-sandbox-probe-{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write("x")
    out["tmp"] = open(tmp).read()
    os.unlink(tmp)
    with tempfile.NamedTemporaryFile("w+") as handle:
        handle.write("y")
        handle.flush()
        out["tempfile"] = open(handle.name).read()
    child = subprocess.run(
        [sys.executable, "-c", "print(1)"], capture_output=True, text=True, timeout=60
    )
    out["subprocess"] = child.stdout.strip() + child.stderr.strip()
    out["proc_self"] = _try_read("/proc/self/status")
    return out


app = create_lb_app({("GET", "/attempts"): attempts, ("GET", "/works"): works})
"""


def make_build(root: Path, name: str) -> tuple[Path, str, dict[str, Any]]:
    """A one-endpoint build (LB `name` running the probe) as an archive: (archive, id, manifest)."""
    return lb_build_archive(root, name, PROBE_HANDLER, {"pkg/data.txt": "data\n"})


def deploy_lb(
    info: CloudInfo, app: str, archive: Path, build_id: str, manifest: dict, env: dict
) -> None:
    """Deploy the one LB endpoint of `manifest` to `app` with the user settings `env`."""
    asyncio.run(deploy_lb_build(info, app, (archive, build_id, manifest), env))


async def key_and_url(info: CloudInfo, app: str, name: str) -> tuple[str, str]:
    async with CloudClient(info) as client:
        return await client.endpoint_key(app, name), str((await client.endpoint(app, name)).url)


def _outside_tmp() -> Path:
    """A fresh directory not under /tmp (nor the system's temp dir), removed by the caller."""
    for base in ("/var/tmp", str(Path.home() / ".cache")):
        base_path = Path(base)
        if base_path.is_dir() and os.access(base_path, os.W_OK):
            resolved = base_path.resolve()
            if not resolved.is_relative_to(Path(tempfile.gettempdir()).resolve()):
                return Path(tempfile.mkdtemp(prefix="flash-sandbox-", dir=resolved))
    pytest.skip("no writable directory outside /tmp for a home the sandbox can protect")


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = _outside_tmp()
    user_home = root / "user"
    (user_home / ".runpod").mkdir(parents=True)
    runpod_config = user_home / ".runpod" / "config.toml"
    runpod_config.write_text('[default]\napi_key = "planted-not-a-real-key"\n')
    home = Home(root / "home")
    previous = os.environ.get("FLASH_TUI_HOME")
    os.environ["FLASH_TUI_HOME"] = str(home.root)
    try:
        info = ensure_cloud(home, extra_env={"HOME": str(user_home)})
        builds = tmp_path_factory.mktemp("sandbox-builds")
        archive, build_id, manifest = make_build(builds, "vault")
        deploy_lb(info, "victim", archive, build_id, manifest, {})
        victim = asyncio.run(_endpoint(info, "victim", "vault"))
        victim_build = Path(victim["build_path"])
        targets = {
            "read": {
                "other_build": str(victim_build / "handler_vault.py"),
                "other_endpoint_table": str(home.endpoints_file("victim")),
                "token": str(home.token_file),
                "database": str(home.db_path),
                "runpod_config": str(runpod_config),
                "other_worker_environ": f"/proc/{victim['pid']}/environ",
            },
            "list": {"home": str(home.root), "user_home": str(user_home)},
        }
        archive, build_id, manifest = make_build(builds, "spy")
        env = {"PROBE_TARGETS": json.dumps(targets)}
        deploy_lb(info, "probe", archive, build_id, manifest, env)
        yield {"home": home, "info": info, "targets": targets}
    finally:
        with contextlib.suppress(Exception):
            stop_cloud(home, timeout=10.0)
        with contextlib.suppress(Exception):
            kill_home_workers(home)
        if previous is None:
            os.environ.pop("FLASH_TUI_HOME", None)
        else:
            os.environ["FLASH_TUI_HOME"] = previous
        shutil.rmtree(root, ignore_errors=True)


async def _endpoint(info: CloudInfo, app: str, name: str) -> dict[str, Any]:
    async with CloudClient(info) as client:
        return (await client.endpoint(app, name)).model_dump()


def _get(info: CloudInfo, path: str) -> dict[str, Any]:
    key, url = asyncio.run(key_and_url(info, "probe", "spy"))
    response = httpx.get(
        f"{url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=60, trust_env=False
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_worker_cannot_read_other_apps_secrets_nor_the_users(sandboxed: dict[str, Any]) -> None:
    # Every target exists and the test process itself can read it: only the sandbox denies.
    for path in sandboxed["targets"]["read"].values():
        with open(path, "rb") as handle:
            handle.read(1)
    found = _get(sandboxed["info"], "/attempts")
    assert found == {
        "other_build": "denied",
        "other_endpoint_table": "denied",
        "token": "denied",
        "database": "denied",
        "runpod_config": "denied",
        "other_worker_environ": "denied",
        "home": "denied",
        "user_home": "denied",
    }


def test_worker_still_runs_its_own_code_imports_tmp_and_children(
    sandboxed: dict[str, Any],
) -> None:
    assert _get(sandboxed["info"], "/works") == {
        "imports": True,
        "own_code": "read",
        "own_build_file": "data",
        "tmp": "x",
        "tempfile": "y",
        "subprocess": "1",
        "proc_self": "read",
    }


def test_cloud_status_reports_the_isolation(sandboxed: dict[str, Any], tmp_path: Path) -> None:
    env = {**os.environ, "FLASH_TUI_HOME": str(sandboxed["home"].root)}
    expected = f"landlock-v{landlock_abi()} (2/2 workers)"
    out = run_cli(["cloud", "status", "--json"], env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["isolation"] == expected
    each = {
        (w["app"], w["name"]): w["isolation"] for w in json.loads(out.stdout)["worker_isolation"]
    }
    assert each == {
        ("probe", "spy"): f"landlock-v{landlock_abi()}",
        ("victim", "vault"): f"landlock-v{landlock_abi()}",
    }
    text = run_cli(["cloud", "status"], env, timeout=60)
    assert f"worker isolation: {expected}" in text.stdout, text.stdout
    project = copy_example("quickstart", tmp_path / "quickstart")
    status = run_cli(["status", "--json", "--no-probe"], env, project=project, timeout=120)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["isolation"] == expected


def test_sandbox_off_lets_a_worker_read_the_home(sandboxed: dict[str, Any], tmp_path: Path) -> None:
    """FLASH_SANDBOX=off: the documented way out, for code that must read the home."""
    home = Home(tmp_path / "home")
    try:
        info = ensure_cloud(home, extra_env={"FLASH_SANDBOX": "off"})
        archive, build_id, manifest = make_build(tmp_path, "spy")
        targets = {"read": {"token": str(home.token_file)}, "list": {}}
        env = {"PROBE_TARGETS": json.dumps(targets)}
        deploy_lb(info, "probe", archive, build_id, manifest, env)
        assert _get(info, "/attempts") == {"token": "read"}

        async def health() -> tuple[str, str]:
            async with CloudClient(info) as client:
                report = await client.worker_isolation()
                return (await client.health()).isolation, describe_isolation(report)

        assert asyncio.run(health()) == ("none", "none (1/1 workers)")
    finally:
        with contextlib.suppress(Exception):
            stop_cloud(home, timeout=10.0)
        with contextlib.suppress(Exception):
            kill_home_workers(home)


def test_status_says_what_each_running_worker_applied_not_the_services_setting(
    tmp_path: Path,
) -> None:
    """A worker started with `FLASH_SANDBOX=off` keeps running unsandboxed after the service
    restarts with the sandbox on (it adopts the worker): status names that worker, where the
    service's own setting would say every worker is sandboxed."""
    home = Home(tmp_path / "home")
    env = {**os.environ, "FLASH_TUI_HOME": str(home.root)}
    landlock = f"landlock-v{landlock_abi()}"
    try:
        info = ensure_cloud(home, extra_env={"FLASH_SANDBOX": "off"})
        archive, build_id, manifest = make_build(tmp_path, "loose")
        deploy_lb(info, "old", archive, build_id, manifest, {})
        stop_cloud(home, stop_workers=False, timeout=10.0)
        info = ensure_cloud(home, extra_env={"FLASH_SANDBOX": "on"})
        archive, build_id, manifest = make_build(tmp_path, "tight")
        deploy_lb(info, "new", archive, build_id, manifest, {})

        out = run_cli(["cloud", "status", "--json"], env, timeout=60)
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["isolation"] == f"{landlock} (1/2 workers); none: old/loose"
        assert {(w["app"], w["name"], w["isolation"]) for w in data["worker_isolation"]} == {
            ("old", "loose", "none"),
            ("new", "tight", landlock),
        }
        text = run_cli(["cloud", "status"], env, timeout=60)
        assert f"worker isolation: {landlock} (1/2 workers); none: old/loose" in text.stdout
    finally:
        with contextlib.suppress(Exception):
            stop_cloud(home, timeout=10.0)
        with contextlib.suppress(Exception):
            kill_home_workers(home)


def test_the_isolation_line_names_the_workers_without_it() -> None:
    def report(default: str, *levels: str) -> WorkerIsolationList:
        workers = [
            WorkerIsolation(app="a", name=f"w{i}", pid=i, isolation=level)
            for i, level in enumerate(levels)
        ]
        return WorkerIsolationList(default=default, workers=workers)

    assert describe_isolation(report("landlock-v7")) == "landlock-v7 (no workers running)"
    assert describe_isolation(report("none", *["landlock-v7"] * 6)) == "landlock-v7 (6/6 workers)"
    assert (
        describe_isolation(report("landlock-v7", "none", "landlock-v7", "unknown", "none"))
        == "landlock-v7 (1/4 workers); none: a/w0, a/w3; unknown: a/w2"
    )
    many = describe_isolation(report("none", "landlock-v7", *["none"] * 7))
    assert many.endswith("none: a/w1, a/w2, a/w3, a/w4, a/w5 and 2 more")
