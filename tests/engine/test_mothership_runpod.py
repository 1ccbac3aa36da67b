"""The mothership on RunPod, against the contract fake with real image-emulator workers.

One fake and one small project for the module; in file order the tests are a session: first
boot (every child created by the mothership, `/manifest` lists them, a child calls another
through it) -> second boot of the same code (no child touched) -> one config change (one
update) -> one removal (one delete) -> GraphQL faults while it boots (it retries and converges)
-> status -> undeploy (nothing of ours left) -> no key in any output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.runpod import FakeRunPod
from headless import killed_at_exit, run_cli, start_cli
from projectfiles import MOTHERSHIP_CHILDREN, MOTHERSHIP_PROJECT, write_files
from waiting import wait_for

ENV = "staging"
FILES = MOTHERSHIP_PROJECT
CHILDREN = MOTHERSHIP_CHILDREN
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeRunPod]:
    with FakeRunPod(tmp_path_factory.mktemp("fake-mship")) as running:
        yield running


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_files(tmp_path_factory.mktemp("mship-runpod") / "shipapp", FILES)


@pytest.fixture(scope="module")
def outputs() -> list[str]:
    return []


@pytest.fixture(scope="module")
def environ(fake: FakeRunPod, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    out.update(
        {
            "HOME": str(tmp_path_factory.mktemp("home")),
            "COLUMNS": "200",
            "FLASH_MOTHERSHIP_WAIT": "90",
            **fake.env(),
        }
    )
    return out


@pytest.fixture(scope="module")
def run(environ: dict[str, str], project: Path, outputs: list[str]) -> Run:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = run_cli(
            [*args, "--target", "runpod", "--env", ENV], environ, project=project, timeout=300
        )
        outputs.extend([done.stdout, done.stderr])
        return done

    return cli


def _mothership(fake: FakeRunPod) -> Any:
    (ship,) = [e for e in fake.endpoints() if e.name == "mothership"]
    return ship


def _lb_url(fake: FakeRunPod, endpoint_id: str) -> str:
    return fake.env()["FLASH_RUNPOD_LB_URL"].replace("{id}", endpoint_id)


def _provisioning(fake: FakeRunPod) -> dict[str, Any]:
    (environment,) = [e for e in fake.environments() if e.name == ENV]
    (build,) = [b for b in fake.builds() if b.id == environment.activeBuildId]
    return dict(build.manifest.get("provisioning") or {})


def _child_saves(fake: FakeRunPod, mark: int) -> list[dict[str, Any]]:
    return [
        c.variables["input"]
        for c in fake.graphql_calls[mark:]
        if c.operation == "saveEndpoint" and c.variables["input"].get("name") != "mothership"
    ]


def _deploy(run: Run, *extra: str) -> dict[str, Any]:
    done = run("deploy", "--mothership", "--yes", "--json", *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_first_boot_creates_every_child_and_manifest_lists_them(
    run: Run, fake: FakeRunPod, outputs: list[str]
) -> None:
    mark = len(fake.graphql_calls)
    _deploy(run)
    names = {e.name for e in fake.endpoints()}
    assert names == CHILDREN | {"mothership"}
    # The engine created the mothership only; the mothership created the children.
    engine_saves = [c for c in fake.graphql_calls[mark:] if c.operation == "saveEndpoint"]
    assert sorted(c.variables["input"]["name"] for c in engine_saves) == sorted(
        CHILDREN | {"mothership"}
    )
    state = _provisioning(fake)
    assert {n for n, e in state.items() if e.get("role") == "child"} == CHILDREN
    assert {state[n]["status"] for n in CHILDREN} == {"deployed"}
    ship = _mothership(fake)
    url = _lb_url(fake, ship.id)
    answer = httpx.get(
        f"{url}/manifest", headers={"Authorization": f"Bearer {ship.aiKey}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    listed = answer.json()["resources"]
    by_name = {e.name: e for e in fake.endpoints()}
    assert set(listed) == CHILDREN
    for name in CHILDREN:
        assert by_name[name].id in listed[name]["endpoint_url"]
        assert listed[name]["endpoint_key"] == by_name[name].aiKey
    assert httpx.get(f"{url}/manifest", timeout=30).status_code == 401
    gateway = _lb_url(fake, by_name["gateway"].id)
    forbidden = httpx.get(
        f"{gateway}/manifest",
        headers={"Authorization": f"Bearer {by_name['gateway'].aiKey}"},
        timeout=30,
    )
    assert forbidden.status_code == 403


def test_children_call_each_other_through_the_mothership(run: Run) -> None:
    done = run("invoke", "POST /hello", "--data", '{"text": "hi"}', "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["result"] == {"echo": "HI"}


def test_only_the_mothership_template_holds_the_account_key(fake: FakeRunPod) -> None:
    sightings = fake.secret_sightings()
    ship_templates = {t.name for t in fake.templates() if t.name.startswith("mothership-")}
    assert sightings
    for place in sightings:
        assert any(f"template {name!r} env RUNPOD_API_KEY" == place for name in ship_templates), (
            place
        )


def test_second_boot_of_the_same_code_touches_no_child(run: Run, fake: FakeRunPod) -> None:
    before = {e.id: e.version for e in fake.endpoints() if e.name != "mothership"}
    mark = len(fake.graphql_calls)
    _deploy(run, "--force")
    assert _child_saves(fake, mark) == []
    assert {e.id: e.version for e in fake.endpoints() if e.name != "mothership"} == before
    diff = _provisioning(fake)["mothership"]["diff"]
    assert diff["new"] == diff["changed"] == diff["removed"] == []
    assert sorted(diff["unchanged"]) == sorted(CHILDREN)


def test_one_changed_config_is_one_update(run: Run, fake: FakeRunPod, project: Path) -> None:
    workers = project / "workers.py"
    workers.write_text(workers.read_text().replace("workersMax=1", "workersMax=2"))
    ids = {e.name: e.id for e in fake.endpoints()}
    mark = len(fake.graphql_calls)
    _deploy(run)
    saves = _child_saves(fake, mark)
    assert [(s["name"], s.get("id"), s["workersMax"]) for s in saves] == [
        ("worker", ids["worker"], 2)
    ]
    assert _provisioning(fake)["worker"]["status"] == "updated"


def test_a_removed_resource_is_one_delete(run: Run, fake: FakeRunPod, project: Path) -> None:
    (project / "extra.py").unlink()
    extra = next(e for e in fake.endpoints() if e.name == "extra")
    mark = len(fake.graphql_calls)
    _deploy(run)
    deletes = [c for c in fake.graphql_calls[mark:] if c.operation == "deleteEndpoint"]
    assert [c.variables["id"] for c in deletes] == [extra.id]
    assert _child_saves(fake, mark) == []
    assert "extra" not in {e.name for e in fake.endpoints()}
    assert not [t for t in fake.templates() if t.name.startswith("extra-")]
    assert "extra" not in _provisioning(fake)


def test_graphql_faults_at_boot_are_retried_until_it_converges(
    run: Run, fake: FakeRunPod, project: Path, environ: dict[str, str], outputs: list[str]
) -> None:
    workers = project / "workers.py"
    workers.write_text(re.sub(r"workersMax=\d+", "workersMax=3", workers.read_text()))
    ships = {e.id for e in fake.endpoints() if e.name == "mothership"}
    mark = len(fake.graphql_calls)
    deploy = ["deploy", "--mothership", "--yes", "--json", "--target", "runpod", "--env", ENV]
    with killed_at_exit(start_cli(deploy, environ, project=project)) as deploying:
        # Once the engine has saved the mothership, what follows is the mothership's boot.
        wait_for(
            lambda: any(
                c.operation == "saveEndpoint" and c.variables["input"].get("id") in ships
                for c in fake.graphql_calls[mark:]
            ),
            120,
            "the engine saving the mothership",
        )
        fake.fail_next("saveEndpoint", status=503, times=2)
        fake.fail_next("myEndpoints", status=429, retry_after=0.2, times=2)
        out, err = deploying.communicate(timeout=240)
    outputs.extend([out, err])
    assert deploying.returncode == 0, out + err
    assert fake.pending_faults() == []
    worker = next(e for e in fake.endpoints() if e.name == "worker")
    assert worker.workersMax == 3
    assert sorted(e.name for e in fake.endpoints()) == ["gateway", "mothership", "worker"]
    assert _provisioning(fake)["mothership"]["status"] == "reconciled"
    # The mothership met the 503s itself, said why, and retried.
    lines = [r.line for w in fake.workers(_mothership(fake).id) for r in w.lines()]
    assert any("HTTP 503" in line and "retry in" in line for line in lines), "\n".join(lines)
    logs = run("logs", "mothership", "--json")
    assert logs.returncode == 0, logs.stderr


def test_status_shows_roles_and_provisioning(run: Run) -> None:
    done = run("status", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)["endpoints"]}
    assert rows["mothership"]["role"] == "mothership"
    assert {rows[n]["role"] for n in ("gateway", "worker")} == {"child"}
    assert rows["worker"]["provisioning"] == "updated"


def test_undeploy_all_leaves_nothing_of_ours(run: Run, fake: FakeRunPod) -> None:
    done = run("undeploy", "--all", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert fake.endpoints() == [] and fake.templates() == []


def test_no_key_in_any_output(fake: FakeRunPod, outputs: list[str]) -> None:
    assert outputs
    assert not [o for o in outputs if fake.api_key in o]
