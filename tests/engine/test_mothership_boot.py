"""A mothership killed mid-provisioning, and a child that calls an endpoint provisioned after it.

The `late` endpoint's module waits, at import in its own worker, for a `gate` file in its build
copy: the test holds it back while the gateway (which calls it) is already up, kills the
mothership mid-provisioning, then opens the gate. The next boot of the mothership must
converge with no second `late`, and the gateway, which missed `late` once, must reach it after
a refresh on miss.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from headless import FAST_BACKOFF, cli_env, cli_for, json_of, killed_at_exit, start_cli
from projectfiles import FAILING_CHILD_PROJECT, late_gateway_files, write_files
from waiting import wait_for

from engine.home import Home
from engine.identity import app_slug, canonical_path
from engine.localcloud.discovery import read_state

ENV = "production"
FILES = late_gateway_files(gate=None, wait_s=60)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_files(tmp_path_factory.mktemp("mship-boot") / "bootapp", FILES)


@pytest.fixture
def deploying(localcloud_home: Path, project: Path) -> Iterator[subprocess.Popen[str]]:
    """`deploy --mothership` running in the background (it waits for convergence)."""
    env = cli_env(localcloud_home, **FAST_BACKOFF, FLASH_MOTHERSHIP_WAIT="90")
    with killed_at_exit(
        start_cli(["deploy", "--mothership", "--yes", "--json"], env, project=project)
    ) as process:
        yield process


def api(home: Home) -> httpx.Client:
    info = None
    info = wait_for(lambda: read_state(home), 60, "the local cloud is up")
    return httpx.Client(base_url=info.url, headers=info.headers(), trust_env=False)


def get(home: Home, path: str) -> Any:
    with api(home) as client:
        response = client.get(path)
    return response.json() if response.status_code == 200 else None


def late_workers(home: Home) -> list[int]:
    """Live worker processes of `late` started from a build of this home."""
    root = str(home.root / "apps") + os.sep
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = process.info.get("cmdline") or []
        if "runtime.worker" not in cmdline or process.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        build = cmdline[cmdline.index("--build-dir") + 1]
        if build.startswith(root) and cmdline[cmdline.index("--resource") + 1] == "late":
            found.append(process.pid)
    return found


def test_killed_mid_provisioning_converges_and_a_child_reaches_a_later_endpoint(
    localcloud_home: Path, project: Path, deploying: subprocess.Popen[str]
) -> None:
    home = Home(localcloud_home)
    # The environment's own app on the local cloud: `{app}.{env}`.
    app = f"{app_slug(canonical_path(project))}.{ENV}"
    state_path = f"/v1/apps/{app}/environments/{ENV}/manifest"

    def state() -> dict[str, Any]:
        return (get(home, state_path) or {}).get("resources") or {}

    def records() -> dict[str, Any]:
        found = get(home, f"/v1/apps/{app}/endpoints") or {"endpoints": []}
        return {r["name"]: r for r in found["endpoints"]}

    wait_for(
        lambda: (
            state().get("gateway", {}).get("status") == "deployed"
            and state().get("late", {}).get("status") == "provisioning"
        ),
        60,
        "the gateway up while late is still provisioning",
        retry_errors=True,
    )
    gateway = records()["gateway"]
    with api(home) as client:
        key = client.get(f"/v1/apps/{app}/endpoints/gateway/key").json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(trust_env=False, timeout=30) as http:
        missed = http.post(f"{gateway['url']}/late", json={"text": "x"}, headers=headers)
    assert missed.status_code == 500 and "late" in missed.text

    # Killed mid-provisioning: `late` is still starting, its state says `provisioning`.
    mothership = records()["mothership"]["pid"]
    os.kill(mothership, signal.SIGKILL)
    (Path(records()["late"]["build_path"]) / "gate").write_text("open\n")

    def converged() -> bool:
        mine = state().get("mothership") or {}
        return (
            mine.get("pid") not in (None, mothership)
            and mine.get("status") == "reconciled"
            and state().get("late", {}).get("status") == "deployed"
        )

    wait_for(converged, 60, "the next boot converged", retry_errors=True)
    assert set(records()) == {"mothership", "gateway", "late"}
    assert len(late_workers(home)) == 1  # no duplicate child
    events = (get(home, f"/v1/apps/{app}/events") or {"events": []})["events"]
    assert [e["kind"] for e in events if e["endpoint"] == "late" and e["kind"] != "adopted"] == [
        "deployed"
    ]
    # The gateway missed `late` once; a refresh on miss (at most one per 0.5 s, so a call
    # right after the first miss may still miss) finds it now.
    with httpx.Client(trust_env=False, timeout=30) as http:

        def reach() -> httpx.Response | None:
            answer = http.post(f"{gateway['url']}/late", json={"text": "x"}, headers=headers)
            return None if "is not in the service registry" in answer.text else answer

        reached = wait_for(reach, 10, "the gateway's refresh on miss to find late")
    assert reached.status_code == 200 and reached.json() == {"late": "late:x"}, reached.text
    assert records()["gateway"]["pid"] == gateway["pid"]  # the same worker, not a restart
    out, err = deploying.communicate(timeout=120)
    assert deploying.returncode == 0, err
    assert json.loads(out)["children"]["late"]["status"] == "deployed"


def test_a_child_that_fails_is_reported_with_its_error(
    localcloud_home: Path, tmp_path: Path
) -> None:
    project = write_files(tmp_path / "brokenapp", FAILING_CHILD_PROJECT)
    cli = cli_for(cli_env(localcloud_home, FLASH_MOTHERSHIP_WAIT="60"), project)

    deployed = cli("deploy", "--mothership", "--yes", "--json")
    assert deployed.returncode == 1, deployed.stderr
    children = json_of(deployed)["children"]
    assert children["fine"]["status"] == "deployed"
    assert children["broken"]["status"] == "failed"
    assert "boom at import" in children["broken"]["error"]
    # Without --env a mothership deploys to `production`, its own endpoints on the local cloud.
    status = cli("status", "--env", "production", "--no-probe", "--json")
    assert status.returncode == 0, status.stderr
    found = {e["name"]: e for e in json_of(status)["endpoints"]}
    assert found["broken"]["role"] == "child" and found["broken"]["provisioning"] == "failed"
    assert "boom at import" in found["broken"]["provisioning_error"]
    assert cli("undeploy", "--env", "production", "--all", "--yes").returncode == 0
