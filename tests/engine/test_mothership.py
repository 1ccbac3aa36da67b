"""The mothership on the real local cloud: `deploy --mothership` in a subprocess, real workers.

One flash-tui home and one small project for the module; in file order the tests are a session
(first boot -> /manifest -> second boot -> one config change -> one removal -> the state manager
away at boot -> status -> undeploy). The local cloud is started by the module on a port it
chose, so the test of an unreachable state manager can bring it back at the same address.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from headless import FAST_BACKOFF, cli_env, cli_for, json_of, run_cli
from projectfiles import MOTHERSHIP_CHILDREN, MOTHERSHIP_PROJECT, write_files
from waiting import wait_for

from engine.home import Home
from engine.identity import app_slug, canonical_path
from engine.localcloud.discovery import read_state
from engine.localcloud.ports import pick_port
from engine.localcloud.scopes import scoped_token
from runtime.control_plane import LocalControlPlane
from runtime.mothership import Mothership, MothershipApp

ENV = "staging"
FILES = MOTHERSHIP_PROJECT
CHILDREN = MOTHERSHIP_CHILDREN
# Kinds of event that mean an endpoint was touched.
TOUCHES = {"deployed", "updated", "undeployed"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_files(tmp_path_factory.mktemp("mship") / "shipapp", FILES)


@pytest.fixture(scope="module")
def slug(project: Path) -> str:
    return app_slug(canonical_path(project))


@pytest.fixture(scope="module")
def app(slug: str) -> str:
    """The local cloud's app of the environment: `{app}.{env}`, apart from the app's others."""
    return f"{slug}.{ENV}"


@pytest.fixture(scope="module")
def home(localcloud_home: Path) -> Home:
    return Home(localcloud_home)


@pytest.fixture(scope="module")
def env(localcloud_home: Path) -> dict[str, str]:
    return cli_env(localcloud_home, **FAST_BACKOFF, FLASH_MOTHERSHIP_WAIT="60")


class Cloud:
    """The module's local cloud, on one port across restarts."""

    def __init__(self, home: Home, env: dict[str, str]) -> None:
        self.home, self.env = home, env
        self.port = pick_port(set())
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the service on the module's port and wait until it answers."""
        command = [sys.executable, "-m", "engine.localcloud", "--home", str(self.home.root)]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(lambda: self.info() is not None, 30, "the local cloud answers")

    def info(self) -> Any:
        info = read_state(self.home)
        return info if info is not None and info.pid == self.process.pid else None  # type: ignore[union-attr]

    def kill(self) -> None:
        """SIGKILL the service (its workers keep running, as after a crash)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def client(self) -> httpx.Client:
        info = read_state(self.home)
        assert info is not None, "the local cloud is not running"
        return httpx.Client(base_url=info.url, headers=info.headers(), trust_env=False)


@pytest.fixture(scope="module")
def cloud(home: Home, env: dict[str, str]) -> Iterator[Cloud]:
    cloud = Cloud(home, env)
    cloud.start()
    try:
        yield cloud
    finally:
        if cloud.process is not None and cloud.process.poll() is None:
            run_cli(["cloud", "stop"], env, timeout=60)
            if cloud.process.poll() is None:
                cloud.process.kill()
            cloud.process.wait(10)


@pytest.fixture(scope="module")
def cli(
    env: dict[str, str], project: Path, cloud: Cloud
) -> Callable[..., subprocess.CompletedProcess[str]]:
    return cli_for(env, project)


def records(cloud: Cloud, app: str) -> dict[str, dict[str, Any]]:
    with cloud.client() as client:
        endpoints = client.get(f"/v1/apps/{app}/endpoints").json()["endpoints"]
    return {r["name"]: r for r in endpoints}


def state(cloud: Cloud, app: str) -> dict[str, dict[str, Any]]:
    with cloud.client() as client:
        response = client.get(f"/v1/apps/{app}/environments/{ENV}/manifest")
    return response.json()["resources"] if response.status_code == 200 else {}


def touches(cloud: Cloud, app: str, since: int) -> list[tuple[str, str]]:
    """(kind, endpoint) of every child touched after event `since`."""
    with cloud.client() as client:
        events = client.get(f"/v1/apps/{app}/events", params={"since": since}).json()["events"]
    return [(e["kind"], e["endpoint"]) for e in events if e["kind"] in TOUCHES]


def last_event(cloud: Cloud, app: str) -> int:
    with cloud.client() as client:
        events = client.get(f"/v1/apps/{app}/events", params={"limit": 5000}).json()["events"]
    return events[-1]["id"] if events else 0


def key_of(cloud: Cloud, app: str, name: str) -> str:
    with cloud.client() as client:
        return client.get(f"/v1/apps/{app}/endpoints/{name}/key").json()["key"]


def deploy(cli: Callable[..., Any]) -> dict[str, Any]:
    proc = cli("deploy", "--mothership", "--env", ENV, "--yes", "--json")
    report = json_of(proc)
    assert proc.returncode == 0 and report["ok"], proc.stderr
    return report


def reboot_mothership(cloud: Cloud, app: str) -> int:
    """SIGKILL the mothership; the supervisor restarts it; returns the new pid once it has
    reconciled."""
    old = records(cloud, app)["mothership"]["pid"]
    os.kill(old, signal.SIGKILL)

    def rebooted() -> int | None:
        entry = state(cloud, app).get("mothership") or {}
        pid = entry.get("pid")
        return pid if pid not in (None, old) and entry.get("status") == "reconciled" else None

    return wait_for(rebooted, 60, "the mothership rebooted and reconciled", retry_errors=True)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


# -- the flow ---------------------------------------------------------------------------------


def test_first_boot_provisions_every_child(cli: Callable[..., Any], cloud: Cloud, app: str) -> None:
    since = last_event(cloud, app)
    report = deploy(cli)
    assert [i["name"] for i in report["plan"]["items"]] == ["mothership"]
    assert {n: c["status"] for n, c in report["children"].items()} == dict.fromkeys(
        CHILDREN, "deployed"
    )
    found = records(cloud, app)
    assert {n: r["role"] for n, r in found.items()} == {
        "mothership": "mothership",
        **dict.fromkeys(CHILDREN, "child"),
    }
    assert all(found[n]["mothership"] == "mothership" for n in CHILDREN)
    assert all(r["status"] == "healthy" and r["environment"] == ENV for r in found.values())
    assert sorted(touches(cloud, app, since)) == sorted(
        [("deployed", "mothership"), *(("deployed", n) for n in CHILDREN)]
    )
    # Every child's URL is in the persisted state and served by the mothership.
    persisted = state(cloud, app)
    mothership = found["mothership"]
    with httpx.Client(trust_env=False) as http:
        answer = http.get(
            f"{mothership['url']}/manifest",
            headers={"Authorization": f"Bearer {key_of(cloud, app, 'mothership')}"},
        )
    assert answer.status_code == 200
    served = answer.json()["resources"]
    assert set(served) == CHILDREN
    for name in CHILDREN:
        assert served[name]["endpoint_url"] == found[name]["url"] == persisted[name]["endpoint_url"]
        assert persisted[name]["status"] == "deployed" and persisted[name]["config_hash"]


def test_children_know_who_they_are_and_who_provisioned_them(cloud: Cloud, app: str) -> None:
    for name, record in records(cloud, app).items():
        environ = psutil.Process(record["pid"]).environ()
        assert environ["FLASH_RESOURCE_NAME"] == name
        if name != "mothership":
            assert environ["FLASH_MOTHERSHIP_ID"] == "mothership"
            assert (
                environ["FLASH_ENDPOINTS_URL"]
                == f"{records(cloud, app)['mothership']['url']}/manifest"
            )
            assert not environ.get("FLASH_ENDPOINTS_FILE")  # the mothership is the registry


def test_manifest_is_404_while_nothing_is_provisioned(cloud: Cloud, app: str, home: Home) -> None:
    """A mothership of an environment with no provisioned child yet (its own app, real state
    manager, before its first reconcile) answers 404."""
    found = records(cloud, app)["mothership"]
    info = read_state(home)
    assert info is not None
    token = scoped_token(home.token_file.read_text().strip(), app, "fresh")
    build = Path(found["build_path"])
    manifest = json.loads((build / "flash_manifest.json").read_text())

    async def ask() -> httpx.Response:
        plane = LocalControlPlane(info.url, token, app, "fresh", found["build_id"])
        ship = MothershipApp(Mothership("mothership", build, manifest, plane), None)
        transport = httpx.ASGITransport(app=ship)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://m") as http:
                return await http.get("/manifest")
        finally:
            await plane.aclose()

    answer = asyncio.run(ask())
    assert answer.status_code == 404 and answer.json()["error"] == "Manifest not found"


def test_manifest_needs_the_key_and_is_refused_on_children(cloud: Cloud, app: str) -> None:
    found = records(cloud, app)
    with httpx.Client(trust_env=False) as http:
        assert http.get(f"{found['mothership']['url']}/manifest").status_code == 401
        headers = {"Authorization": f"Bearer {key_of(cloud, app, 'gateway')}"}
        refused = http.get(f"{found['gateway']['url']}/manifest", headers=headers)
    assert refused.status_code == 403
    assert refused.json() == {"error": "Only mothership serves manifest"}


def test_a_mothership_credential_reaches_its_own_app_and_environment_only(
    cloud: Cloud, app: str, home: Home
) -> None:
    master = home.token_file.read_text().strip()
    token = scoped_token(master, app, ENV)
    found = records(cloud, app)
    build = found["mothership"]["build_id"]
    # The mothership holds its scoped credential, never the service's token.
    environ = psutil.Process(found["mothership"]["pid"]).environ()
    assert environ["FLASH_STATE_TOKEN"] == token
    assert not any(master in value for value in environ.values())
    with cloud.client() as client:
        client.headers["Authorization"] = f"Bearer {token}"
        mine = f"/v1/apps/{app}/environments/{ENV}/manifest"
        assert client.get(mine).status_code == 200
        assert client.get(f"/v1/apps/{app}/endpoints/worker/key").status_code == 200
        # Not the service, another app, another environment, or the endpoints' own routes.
        assert client.get("/v1/health").status_code == 401
        assert client.get("/v1/apps").status_code == 401
        assert client.post("/v1/shutdown", json={}).status_code == 401
        assert client.get(f"/v1/apps/other-{app}/endpoints").status_code == 401
        assert client.get(f"/v1/apps/{app}/environments/other/manifest").status_code == 401
        assert client.get(f"/v1/apps/{app}/endpoints/worker/logs").status_code == 401
        forged = scoped_token("not-the-token", app, ENV)
        assert client.get(mine, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        # Children only, from a build the app has, never the mothership, never everything.
        child = {"name": "worker", "role": "child", "mothership": "mothership"}
        body = {"endpoints": [child], "build": {"build_id": "ab" * 32}}
        assert client.post(f"/v1/apps/{app}/deploy", json=body).status_code == 403
        body = {"endpoints": [{**child, "role": "endpoint"}], "build": {"build_id": build}}
        assert client.post(f"/v1/apps/{app}/deploy", json=body).status_code == 403
        body = {"endpoints": [{**child, "name": "mothership"}], "build": {"build_id": build}}
        assert client.post(f"/v1/apps/{app}/deploy", json=body).status_code == 403
        assert client.post(f"/v1/apps/{app}/undeploy", json={"names": None}).status_code == 403
        undeploy = {"names": ["mothership"]}
        assert client.post(f"/v1/apps/{app}/undeploy", json=undeploy).status_code == 403
    assert records(cloud, app).keys() == found.keys()


def test_children_call_each_other_through_the_mothership(
    cli: Callable[..., Any], cloud: Cloud, app: str
) -> None:
    proc = cli("invoke", "POST /hello", "--env", ENV, "--data", '{"text": "hi"}', "--json")
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc)["result"] == {"echo": "HI"}


def test_second_boot_of_the_same_build_touches_no_child(cloud: Cloud, app: str) -> None:
    before = {n: r["pid"] for n, r in records(cloud, app).items() if n != "mothership"}
    since = last_event(cloud, app)
    reboot_mothership(cloud, app)
    assert touches(cloud, app, since) == []
    assert state(cloud, app)["mothership"]["diff"]["unchanged"] == sorted(CHILDREN)
    after = {n: r["pid"] for n, r in records(cloud, app).items() if n != "mothership"}
    assert after == before


def test_one_changed_config_value_is_exactly_one_update(
    cli: Callable[..., Any], cloud: Cloud, app: str, project: Path
) -> None:
    edit(project / "workers.py", "workersMax=1", "workersMax=2")
    since = last_event(cloud, app)
    report = deploy(cli)
    assert report["children"]["worker"]["status"] == "updated"
    assert sorted(touches(cloud, app, since)) == [("updated", "mothership"), ("updated", "worker")]
    assert records(cloud, app)["worker"]["config"]["workersMax"] == 2


def test_a_removed_resource_is_exactly_one_delete(
    cli: Callable[..., Any], cloud: Cloud, app: str, project: Path
) -> None:
    (project / "extra.py").unlink()
    since = last_event(cloud, app)
    report = deploy(cli)
    assert set(report["children"]) == CHILDREN - {"extra"}
    assert sorted(touches(cloud, app, since)) == [
        ("undeployed", "extra"),
        ("updated", "mothership"),
    ]
    assert "extra" not in records(cloud, app) and "extra" not in state(cloud, app)


def test_state_manager_unreachable_at_boot(
    cloud: Cloud, app: str, home: Home, project: Path, tmp_path: Path
) -> None:
    """A mothership booting while the local cloud is down answers /ping, retries (saying why)
    and converges once the cloud is back at its address."""
    found = records(cloud, app)
    master = home.token_file.read_text().strip()
    with cloud.client() as client:  # a stale hash: the next reconcile must repair it
        client.patch(
            f"/v1/apps/{app}/environments/{ENV}/manifest/resources/worker",
            json={"config_hash": "stale"},
        ).raise_for_status()
    cloud.kill()
    port = pick_port({cloud.port, *(r["port"] for r in found.values())})
    log = tmp_path / "mothership.log"
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("FLASH_")}
    worker_env.update(
        {
            "FLASH_ENDPOINT_KEY": "k-" + os.urandom(8).hex(),
            "FLASH_IS_MOTHERSHIP": "true",
            "FLASH_STATE_URL": f"http://127.0.0.1:{cloud.port}",
            "FLASH_STATE_TOKEN": scoped_token(master, app, ENV),
            "FLASH_APP_NAME": app,
            "FLASH_ENV": ENV,
            "FLASH_BUILD_ID": found["mothership"]["build_id"],
        }
    )
    # A copy outside the home: the cloud, back, would end a worker of its home it has no
    # record of.
    build_dir = str(shutil.copytree(found["mothership"]["build_path"], tmp_path / "build"))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime.worker", "--build-dir", build_dir]
            + ["--resource", "mothership", "--port", str(port)],
            env=worker_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with httpx.Client(trust_env=False) as http:
            wait_for(
                lambda: http.get(f"http://127.0.0.1:{port}/ping").status_code == 200,
                20,
                "/ping of the mothership while the state manager is down",
                retry_errors=True,
            )
        wait_for(lambda: "state manager unreachable" in log.read_text(), 20, "it says why")
        assert process.poll() is None
        with httpx.Client(trust_env=False) as http:
            headers = {"Authorization": f"Bearer {worker_env['FLASH_ENDPOINT_KEY']}"}
            away = http.get(f"http://127.0.0.1:{port}/manifest", headers=headers)
        assert away.status_code == 503 and away.json()["error"] == "Manifest unavailable"
        cloud.start()

        def repaired() -> bool:
            entries = state(cloud, app)
            mine = entries.get("mothership") or {}
            return (
                mine.get("pid") == process.pid
                and mine.get("status") == "reconciled"
                and entries["worker"]["config_hash"] != "stale"
            )

        wait_for(repaired, 60, "the mothership converged once the cloud was back")
        assert records(cloud, app)["worker"]["pid"] == found["worker"]["pid"]  # no duplicate
        assert set(records(cloud, app)) == set(found)
    finally:
        process.terminate()
        process.wait(10)


def test_children_stopped_with_the_cloud_are_restarted_by_the_next_boot(
    cli: Callable[..., Any], cloud: Cloud, app: str, env: dict[str, str]
) -> None:
    """The state says provisioned, the cloud says stopped: the mothership trusts the cloud."""
    assert run_cli(["cloud", "stop"], env, timeout=60).returncode == 0
    cloud.start()
    assert {r["status"] for r in records(cloud, app).values()} == {"stopped"}
    proc = cli("deploy", "--mothership", "--env", ENV, "--yes", "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    wait_for(
        lambda: {r["status"] for r in records(cloud, app).values()} == {"healthy"},
        30,
        "every endpoint healthy again",
    )


def test_a_cloud_restarted_elsewhere_reboots_the_mothership_with_its_new_address(
    cloud: Cloud, app: str
) -> None:
    before = records(cloud, app)
    with cloud.client() as client:
        client.post("/v1/shutdown", json={"stop_workers": False}).raise_for_status()
    assert cloud.process is not None
    cloud.process.wait(30)
    cloud.port = pick_port({cloud.port, *(r["port"] for r in before.values())})
    cloud.start()

    def rebooted() -> bool:
        mine = state(cloud, app).get("mothership") or {}
        return mine.get("pid") != before["mothership"]["pid"] and mine.get("status") == "reconciled"

    wait_for(rebooted, 60, "the mothership rebooted and reconciled", retry_errors=True)
    after = records(cloud, app)
    assert {n: r["pid"] for n, r in after.items() if n != "mothership"} == {
        n: r["pid"] for n, r in before.items() if n != "mothership"
    }
    with httpx.Client(trust_env=False) as http:
        answer = http.get(
            f"{after['mothership']['url']}/manifest",
            headers={"Authorization": f"Bearer {key_of(cloud, app, 'mothership')}"},
        )
    assert answer.status_code == 200 and set(answer.json()["resources"]) == set(before) - {
        "mothership"
    }


def test_status_lists_roles_and_provisioning(cli: Callable[..., Any]) -> None:
    proc = cli("status", "--env", ENV, "--json", "--no-probe")
    assert proc.returncode == 0, proc.stderr
    found = {e["name"]: e for e in json_of(proc)["endpoints"]}
    assert found["mothership"]["role"] == "mothership"
    # Generated, so not in the code, yet not orphaned: it is what the code makes it.
    assert found["mothership"]["drift"] == "in_sync" and not found["mothership"]["in_code"]
    for name in CHILDREN - {"extra"}:
        assert found[name]["role"] == "child"
        assert found[name]["provisioning"] in ("deployed", "updated")
        assert found[name]["provisioning_error"] is None


def _manifest_of(cloud: Cloud, cloud_app: str) -> dict[str, Any]:
    mothership = records(cloud, cloud_app)["mothership"]
    with httpx.Client(trust_env=False) as http:
        answer = http.get(
            f"{mothership['url']}/manifest",
            headers={"Authorization": f"Bearer {key_of(cloud, cloud_app, 'mothership')}"},
        )
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["resources"])


def test_environments_and_direct_mode_coexist_and_undeploy_apart(
    cli: Callable[..., Any], cloud: Cloud, app: str, slug: str
) -> None:
    """Another environment, and direct mode, get their own endpoints; neither replaces
    staging's, and removing them leaves staging answering."""
    staging = {n: (r["pid"], r["url"]) for n, r in records(cloud, app).items()}
    proc = cli("deploy", "--mothership", "--env", "other", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    children = set(json.loads(proc.stdout)["children"])
    assert children == CHILDREN - {"extra"}
    proc = cli("deploy", "--yes", "--json")  # direct mode: environment `local`
    assert proc.returncode == 0, proc.stderr

    other, direct = records(cloud, f"{slug}.other"), records(cloud, slug)
    assert {n: (r["pid"], r["url"]) for n, r in records(cloud, app).items()} == staging
    assert set(other) == {"mothership", *children}
    assert {r["environment"] for r in other.values()} == {"other"}
    assert set(direct) == children and {r["role"] for r in direct.values()} == {"endpoint"}
    assert {r["environment"] for r in direct.values()} == {"local"}
    pids = [p for p, _ in staging.values()]
    pids += [r["pid"] for r in [*other.values(), *direct.values()]]
    assert len(set(pids)) == len(pids)  # every worker its own
    # Each mothership serves its own children only; each child reads its own mothership.
    assert {n: e["endpoint_url"] for n, e in _manifest_of(cloud, app).items()} == {
        n: url for n, (_, url) in staging.items() if n != "mothership"
    }
    assert {n: e["endpoint_url"] for n, e in _manifest_of(cloud, f"{slug}.other").items()} == {
        n: r["url"] for n, r in other.items() if n != "mothership"
    }
    gateway = psutil.Process(other["gateway"]["pid"]).environ()
    assert gateway["FLASH_ENDPOINTS_URL"] == f"{other['mothership']['url']}/manifest"

    def listed(*args: str) -> dict[str, str | None]:
        proc = cli("status", *args, "--json", "--no-probe")
        assert proc.returncode == 0, proc.stderr
        return {e["name"]: e["url"] for e in json_of(proc)["endpoints"] if e["url"]}

    assert listed("--env", ENV) == {n: url for n, (_, url) in staging.items()}
    assert listed("--env", "other") == {n: r["url"] for n, r in other.items()}
    assert listed() == {n: r["url"] for n, r in direct.items()}
    with cloud.client() as client:
        found = client.get(f"/v1/apps/{slug}/environments").json()["environments"]
    assert {e["name"]: e["mothership"] for e in found} == {
        ENV: "mothership",
        "other": "mothership",
        "local": None,
    }

    # Removing `other`, then direct mode's, leaves staging as it was, answering.
    for args in (["--env", "other"], []):
        proc = cli("undeploy", *args, "--all", "--yes", "--json")
        assert proc.returncode == 0, proc.stderr
    assert records(cloud, f"{slug}.other") == {} and records(cloud, slug) == {}
    assert {n: (r["pid"], r["url"]) for n, r in records(cloud, app).items()} == staging
    proc = cli("invoke", "POST /hello", "--env", ENV, "--data", '{"text": "hi"}', "--json")
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc)["result"] == {"echo": "HI"}
    gone = [r["pid"] for r in [*other.values(), *direct.values()]]
    wait_for(lambda: not any(psutil.pid_exists(p) for p in gone), 20, "their workers gone")


def test_mothership_on_runpod_without_a_key_says_where_it_looked(
    cli: Callable[..., Any],
) -> None:
    """RunPod has the mothership too (tests/engine/test_mothership_runpod.py); without a key it
    fails in one line naming where the key was looked for, before anything is deployed."""
    proc = cli("deploy", "--mothership", "--target", "runpod", "--yes")
    assert proc.returncode == 1
    assert "no RunPod API key: looked in RUNPOD_API_KEY" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_undeploy_all_removes_the_mothership_and_every_child(
    cli: Callable[..., Any], cloud: Cloud, app: str
) -> None:
    pids = [r["pid"] for r in records(cloud, app).values()]
    proc = cli("undeploy", "--env", ENV, "--all", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    assert records(cloud, app) == {}
    assert state(cloud, app) == {}
    wait_for(lambda: not any(psutil.pid_exists(p) for p in pids), 20, "every worker gone")
