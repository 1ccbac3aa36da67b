"""A project's own mothership: the load-balanced config bound to a variable named `mothership`
(upstream's `mothership.py` convention) is flagged in the manifest and is the mothership
`deploy --mothership` starts, its own routes still served (real workers, local cloud); two
flagged, or a queue-based one, is an error diagnostic naming them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
from headless import run_cli
from projectfiles import MOTHERSHIP_PROJECT, shouting_gateway, write_files

from engine.home import Home
from engine.identity import app_slug, canonical_path
from engine.localcloud.discovery import read_state
from engine.scan import scan_project

OWN = {
    # Bound to a variable named `mothership`: upstream's convention for the project's own.
    "mothership.py": shouting_gateway(
        "api", "mothership", "The project's own mothership: an API whose route calls a child."
    ),
    "workers.py": MOTHERSHIP_PROJECT["workers.py"],  # `worker`, whose shout() it calls
}


def _codes(project: Path) -> list[tuple[str, str, str]]:
    return [(d.code, d.severity, d.file) for d in scan_project(project).diagnostics]


# OWN and a second resource flagged as the mothership (`admin`): a conflict.
TWO_FLAGGED = {
    **OWN,
    "admin.py": """
        from tetra_rp import CpuLoadBalancerSlsResource, remote

        mothership = CpuLoadBalancerSlsResource(name="admin", workersMax=1)


        @remote(mothership, method="GET", path="/stats")
        async def stats() -> dict:
            return {}
        """,
}


def test_the_variable_mothership_flags_its_resource(tmp_path: Path) -> None:
    result = scan_project(write_files(tmp_path / "own", OWN))
    resources = result.manifest["resources"]
    assert resources["api"]["mothership"] is True
    assert resources["worker"]["mothership"] is False
    assert [d for d in result.diagnostics if d.severity == "error"] == []


def test_two_flagged_is_an_error_naming_both(tmp_path: Path) -> None:
    result = scan_project(write_files(tmp_path / "two", TWO_FLAGGED))
    errors = [d for d in result.diagnostics if d.code == "manifest-mothership-conflict"]
    assert sorted(d.file for d in errors) == ["admin.py", "mothership.py"]
    for error in errors:
        assert error.severity == "error"
        assert "'api' (mothership.py:" in error.message and "'admin' (admin.py:" in error.message
    assert not any(e["mothership"] for e in result.manifest["resources"].values())


def test_a_queue_based_mothership_is_an_error(tmp_path: Path) -> None:
    files = {
        "mothership.py": """
            from tetra_rp import CpuLiveServerless, remote

            mothership = CpuLiveServerless(name="boss", workersMax=1)


            @remote(mothership)
            def work() -> int:
                return 1
            """
    }
    result = scan_project(write_files(tmp_path / "qb", files))
    (error,) = [d for d in result.diagnostics if d.code == "manifest-mothership-not-load-balanced"]
    assert error.file == "mothership.py" and "'boss'" in error.message
    assert result.manifest["resources"]["boss"]["mothership"] is False


def test_deploy_mothership_uses_the_projects_own_with_its_routes(
    localcloud_home: Path, tmp_path: Path
) -> None:
    project = write_files(tmp_path / "ownapp", OWN)
    env = dict(os.environ, FLASH_TUI_HOME=str(localcloud_home), FLASH_MOTHERSHIP_WAIT="90")

    def cli(*args: str) -> Any:
        return run_cli([*args, "--json"], env, project=project, timeout=180)

    deployed = cli("deploy", "--mothership", "--yes")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert json.loads(deployed.stdout)["children"]["worker"]["status"] == "deployed"
    # Without --env a mothership deploys to `production`, its own endpoints on the local cloud.
    status = cli("status", "--env", "production", "--no-probe")
    rows = {r["name"]: r for r in json.loads(status.stdout)["endpoints"]}
    assert set(rows) == {"api", "worker"}  # no generated mothership
    assert rows["api"]["role"] == "mothership" and rows["worker"]["role"] == "child"

    info = read_state(Home(localcloud_home))
    assert info is not None
    app = f"{app_slug(canonical_path(project))}.production"
    with httpx.Client(base_url=info.url, headers=info.headers(), trust_env=False) as client:
        record = client.get(f"/v1/apps/{app}/endpoints/api").json()
        key = client.get(f"/v1/apps/{app}/endpoints/api/key").json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(trust_env=False, timeout=60) as http:
        # The user's route, on the mothership, calling its child through /manifest.
        hello = http.post(f"{record['url']}/hello", json={"text": "hi"}, headers=headers)
        listed = http.get(f"{record['url']}/manifest", headers=headers)
    assert hello.status_code == 200 and hello.json() == {"echo": "HI"}, hello.text
    assert listed.status_code == 200 and set(listed.json()["resources"]) == {"worker"}
    assert cli("undeploy", "--env", "production", "--all", "--yes").returncode == 0


def test_deploy_mothership_refuses_two_flagged_naming_them(
    localcloud_home: Path, tmp_path: Path
) -> None:
    project = write_files(tmp_path / "twoapp", TWO_FLAGGED)
    env = dict(os.environ, FLASH_TUI_HOME=str(localcloud_home))
    done = run_cli(["deploy", "--mothership", "--yes"], env, project=project, timeout=120)
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "more than one resource is flagged as the mothership" in said, said
    assert "'api'" in said and "'admin'" in said


def test_on_runpod_the_projects_own_mothership_serves_its_routes(tmp_path: Path) -> None:
    """The contract fake, real image-emulator workers: the flagged `api` is the mothership (no
    generated one), it provisions `worker`, and its own route calls it through /manifest."""
    from fakes.runpod import FakeRunPod

    project = write_files(tmp_path / "ownrp", OWN)
    with FakeRunPod(tmp_path / "fake") as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
        env.update({"HOME": str(tmp_path / "home"), "FLASH_MOTHERSHIP_WAIT": "120", **fake.env()})

        def cli(*args: str) -> Any:
            command = [*args, "--json", "--target", "runpod", "--env", "staging"]
            return run_cli(command, env, project=project, timeout=240)

        deployed = cli("deploy", "--mothership", "--yes")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert json.loads(deployed.stdout)["children"]["worker"]["status"] == "deployed"
        by_name = {e.name: e for e in fake.endpoints()}
        assert set(by_name) == {"api", "worker"}
        api = by_name["api"]
        (template,) = [t for t in fake.templates() if t.id == api.templateId]
        assert template.env.get("FLASH_IS_MOTHERSHIP") == "true"
        url = fake.env()["FLASH_RUNPOD_LB_URL"].replace("{id}", api.id)
        with httpx.Client(trust_env=False, timeout=60) as http:
            hello = http.post(
                f"{url}/hello",
                json={"text": "hi"},
                headers={"Authorization": f"Bearer {api.aiKey}"},
            )
        assert hello.status_code == 200 and hello.json() == {"echo": "HI"}, hello.text
        assert cli("undeploy", "--all", "--yes").returncode == 0
        assert fake.endpoints() == [] and fake.templates() == []
