"""On RunPod (the contract fake, real image-emulator workers): a mothership killed mid-provisioning,
twice, and a child that calls an endpoint provisioned after it started.

The `late` endpoint's module waits, at import in its own worker, for a gate file the test holds
back. First kill: the mothership has created `gateway` (not recorded yet: its records are written
once every child is saved) and is saving `late` (a request the fake holds, then refuses, so it
never creates anything). The next boot must adopt `gateway`, create `late` once, and record both.
Second kill: `late` is saved and recorded `provisioning` (its worker still at the gate) and the
gateway, up, has missed it once. The boot after it must follow `late` again without saving it
again, and the gateway must reach it after a refresh on miss, in the same worker.
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
import pytest
from fakes.runpod import FakeRunPod
from headless import CLI
from projectfiles import FAILING_CHILD_PROJECT, late_gateway_files, write_files
from waiting import wait_for

ENV = "staging"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeRunPod]:
    with FakeRunPod(tmp_path / "fake") as running:
        yield running


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    return tmp_path / "gate"


@pytest.fixture
def deploying(fake: FakeRunPod, gate: Path, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """`deploy --mothership --target runpod` running in the background (it waits for
    convergence)."""
    project = write_files(tmp_path / "lateapp", late_gateway_files(gate, wait_s=180))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update({"HOME": str(tmp_path / "home"), "FLASH_MOTHERSHIP_WAIT": "150", **fake.env()})
    process = subprocess.Popen(
        [*CLI, "deploy", "--mothership", "--yes", "--json", "--target", "runpod"]
        + ["--env", ENV, "--project", str(project)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        gate.write_text("open\n")  # a late worker still at the gate ends with the fake
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def _provisioning(fake: FakeRunPod) -> dict[str, Any]:
    environments = [e for e in fake.environments() if e.name == ENV]
    if not environments:
        return {}
    builds = [b for b in fake.builds() if b.id == environments[0].activeBuildId]
    return dict(builds[0].manifest.get("provisioning") or {}) if builds else {}


def _recorded(fake: FakeRunPod) -> dict[str, Any]:
    """The endpoint records (`deployments`) of the environment's active build."""
    (environment,) = [e for e in fake.environments() if e.name == ENV]
    (build,) = [b for b in fake.builds() if b.id == environment.activeBuildId]
    return dict(build.manifest.get("deployments") or {})


def _status(fake: FakeRunPod, name: str) -> str | None:
    return (_provisioning(fake).get(name) or {}).get("status")


def _saves(fake: FakeRunPod, mark: int, name: str) -> list[dict[str, Any]]:
    return [
        c.variables["input"]
        for c in fake.graphql_calls[mark:]
        if c.operation == "saveEndpoint" and c.variables["input"].get("name") == name
    ]


def _endpoint(fake: FakeRunPod, name: str) -> Any:
    found = [e for e in fake.endpoints() if e.name == name]
    return found[0] if len(found) == 1 else None


def _kill_mothership(fake: FakeRunPod) -> int:
    """SIGKILL the mothership's worker (the fake restarts it: its next boot); its pid."""
    ship = _endpoint(fake, "mothership")
    (worker,) = [w for w in fake.workers(ship.id) if w.alive()]
    assert worker.pid is not None
    os.killpg(worker.pid, signal.SIGKILL)
    return worker.pid


def _post_late(fake: FakeRunPod) -> httpx.Response:
    gateway = _endpoint(fake, "gateway")
    url = fake.env()["FLASH_RUNPOD_LB_URL"].replace("{id}", gateway.id)
    headers = {"Authorization": f"Bearer {gateway.aiKey}"}
    with httpx.Client(trust_env=False, timeout=60) as http:
        return http.post(f"{url}/late", json={"text": "x"}, headers=headers)


def test_killed_mid_provisioning_twice_converges_once_and_a_child_reaches_a_later_endpoint(
    fake: FakeRunPod, gate: Path, deploying: subprocess.Popen[str]
) -> None:
    # The engine saves the mothership; what follows is the mothership's boot.
    wait_for(lambda: _endpoint(fake, "mothership") is not None, 120, "the mothership saved")
    # Its first save (gateway) goes through, late; its second (late) is held, then refused:
    # killed while it waits, the mothership has created gateway and nothing else.
    fake.fail_next("saveEndpoint", delay=1.0)
    fake.fail_next("saveEndpoint", status=503, delay=30.0)
    wait_for(lambda: _saves(fake, 0, "late"), 120, "the mothership saving late")
    assert _endpoint(fake, "gateway") is not None
    assert set(_recorded(fake)) == {"mothership"}  # gateway created, not recorded yet
    first = _kill_mothership(fake)

    # The next boot adopts gateway (no second one), creates late, records both.
    wait_for(
        lambda: _status(fake, "gateway") == "deployed" and _status(fake, "late") == "provisioning",
        120,
        "the next boot: gateway up, late saved and not up",
    )
    assert sorted(e.name for e in fake.endpoints()) == ["gateway", "late", "mothership"]
    assert len(_saves(fake, 0, "late")) == 2  # the refused one and the next boot's
    gateway_worker = [w.id for w in fake.workers(_endpoint(fake, "gateway").id)]

    # The gateway misses late (not up: /manifest does not list it yet).
    missed = _post_late(fake)
    assert missed.status_code == 500 and "late" in missed.text, missed.text

    # Killed again while it waits for late: the boot after it follows late, saves nothing.
    mark = len(fake.graphql_calls)
    second = _kill_mothership(fake)
    assert second != first
    wait_for(
        lambda: any(
            w.alive() and w.pid != second for w in fake.workers(_endpoint(fake, "mothership").id)
        ),
        60,
        "the mothership restarted",
    )
    gate.write_text("open\n")
    out, err = deploying.communicate(timeout=180)
    assert deploying.returncode == 0, out + err
    assert json.loads(out)["children"]["late"]["status"] == "deployed"
    assert [c.operation for c in fake.graphql_calls[mark:] if c.operation == "saveEndpoint"] == []

    # Converged once: one endpoint per resource, one template per endpoint, nothing orphaned.
    endpoints = fake.endpoints()
    assert sorted(e.name for e in endpoints) == ["gateway", "late", "mothership"]
    assert sorted(t.id for t in fake.templates()) == sorted(e.templateId for e in endpoints)
    state = _provisioning(fake)
    assert state["mothership"]["status"] == "reconciled"
    assert {state[n]["status"] for n in ("gateway", "late")} == {"deployed"}

    # The gateway missed late once; a refresh on miss finds it now, in the same worker.
    reached = _post_late(fake)
    assert reached.status_code == 200 and reached.json() == {"late": "late:x"}, reached.text
    assert [w.id for w in fake.workers(_endpoint(fake, "gateway").id)] == gateway_worker


# The project's own mothership, with the env a user sets to fail a child sooner than 15 s.
SHORT_GRACE_MOTHERSHIP = """
    from tetra_rp import CpuLiveLoadBalancer, remote

    mothership = CpuLiveLoadBalancer(
        name="gateway", workersMax=1, env={"FLASH_CHILD_UNHEALTHY_GRACE": "3"}
    )


    @remote(mothership, method="GET", path="/ready")
    async def ready() -> dict:
        return {"ready": True}
    """


def test_a_child_that_never_comes_up_is_failed_with_what_runpod_said(
    fake: FakeRunPod, tmp_path: Path
) -> None:
    """Saved is not up: a child whose worker crashes at start is `failed`, not `deployed`,
    once it has answered unhealthy for the grace its mothership's env sets."""
    files = {**FAILING_CHILD_PROJECT, "mothership.py": SHORT_GRACE_MOTHERSHIP}
    project = write_files(tmp_path / "brokenapp", files)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update({"HOME": str(tmp_path / "home"), "FLASH_MOTHERSHIP_WAIT": "120", **fake.env()})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args, "--json", "--target", "runpod", "--env", ENV]
            + ["--project", str(project)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=240,
        )

    deployed = cli("deploy", "--mothership", "--yes")
    assert deployed.returncode == 1, deployed.stdout + deployed.stderr
    children = json.loads(deployed.stdout)["children"]
    assert children["fine"]["status"] == "deployed"
    assert children["broken"]["status"] == "failed"
    assert "unhealthy for 3 s" in children["broken"]["error"], children["broken"]
    status = cli("status", "--no-probe")
    assert status.returncode == 0, status.stderr
    found = {e["name"]: e for e in json.loads(status.stdout)["endpoints"]}
    assert found["broken"]["role"] == "child" and found["broken"]["provisioning"] == "failed"
    assert "unhealthy" in found["broken"]["provisioning_error"]
    assert cli("undeploy", "--all", "--yes").returncode == 0
    assert fake.endpoints() == [] and fake.templates() == []
