"""The issue's "must show", as a user does it, against the contract fake with its data plane
(real image-emulator workers running the uploaded artifacts): `deploy --target runpod --yes` of
every example leaves every endpoint healthy; an LB route that calls a QB function works, and
so does a QB function called directly; the logs show the workers' lines; a workersMax change
updates exactly that endpoint; `undeploy --all --yes` leaves no endpoint and no template; no
output holds a key."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes.runpod import FakeRunPod
from headless import CLI, run_cli
from waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "quickstart": ["api", "cpu_worker", "gateway", "gpu_worker"],
    "endpoint_api": ["api", "summarizer", "tokenizer"],
}

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeRunPod]:
    workdir = tmp_path_factory.mktemp("fake")
    with FakeRunPod(workdir) as running:
        yield running


@pytest.fixture(scope="module")
def outputs() -> list[str]:
    return []


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("examples")
    out = {}
    for name in EXAMPLES:
        out[name] = root / name
        shutil.copytree(
            REPO / "examples" / name,
            out[name],
            ignore=shutil.ignore_patterns(".flash", "__pycache__"),
        )
    return out


@pytest.fixture(scope="module")
def run(
    fake: FakeRunPod,
    projects: dict[str, Path],
    outputs: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    home = tmp_path_factory.mktemp("home")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    environ.update({"HOME": str(home), "COLUMNS": "200", **fake.env()})

    def cli(example: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = run_cli(
            [*args, "--target", "runpod"], environ, project=projects[example], timeout=300
        )
        outputs.extend([done.stdout, done.stderr])
        return done

    return cli


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_deploy_every_example_all_healthy(run: Run, example: str) -> None:
    done = run(example, "deploy", "--yes")
    assert done.returncode == 0, done.stderr
    status = run(example, "status", "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)["endpoints"]
    assert sorted(r["name"] for r in rows) == EXAMPLES[example]
    unhealthy = [r for r in rows if not (r["health"] or {}).get("ok")]
    assert not unhealthy, unhealthy
    assert {r["drift"] for r in rows} == {"in_sync"}


def test_the_account_key_is_nowhere_in_what_was_deployed(fake: FakeRunPod) -> None:
    """Templates, endpoints and build manifests hold endpoint keys at most, never ours."""
    assert fake.endpoints()
    assert fake.secret_sightings() == []


def test_lb_route_calling_a_qb_function(run: Run) -> None:
    done = run("quickstart", "invoke", "POST /stats", "--data", '{"text": "a b b"}', "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["result"] == {"words": 3, "chars": 5, "unique": 2}
    # a method of a class instance that lives on the QB endpoint
    done = run("quickstart", "invoke", "POST /keywords", "--data", '{"text": "a b b"}', "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["result"] == {"keywords": ["b"]}
    done = run("endpoint_api", "invoke", "POST /summarize", "--data", '{"text": "one two three"}')
    assert done.returncode == 0, done.stdout + done.stderr


def test_qb_function_directly(run: Run) -> None:
    done = run("quickstart", "invoke", "preprocess", "--data", '{"text": "Hello  World"}', "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"] is True


def test_logs_show_the_workers_lines(run: Run) -> None:
    done = run("quickstart", "logs", "gateway", "--json")
    assert done.returncode == 0, done.stderr
    lines = json.loads(done.stdout)["lines"]
    assert any("/stats" in line["text"] for line in lines), lines[-10:]


def test_logs_follow_streams_new_lines(
    fake: FakeRunPod, projects: dict[str, Path], outputs: list[str], run: Run
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    environ.update({"COLUMNS": "200", **fake.env()})
    follower = subprocess.Popen(
        [*CLI, "logs", "gateway", "--follow", "--lines", "50", "--target", "runpod"]
        + ["--project", str(projects["quickstart"])],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    try:
        reader = threading.Thread(
            target=lambda: seen.extend(iter(follower.stdout.readline, "")), daemon=True
        )
        reader.start()
        # the history (the earlier /stats calls) shows once the stream is attached
        wait_for(lambda: any("/stats" in line for line in seen), 60, "the history")
        done = run("quickstart", "invoke", "POST /pipeline", "--data", '{"text": "live one"}')
        assert done.returncode == 0, done.stdout + done.stderr
        wait_for(lambda: any("/pipeline" in line for line in seen), 60, "the new line, live")
    finally:
        follower.terminate()
        follower.wait(timeout=30)
    outputs.extend(seen)


def test_workers_max_change_updates_exactly_that_endpoint(
    run: Run, fake: FakeRunPod, projects: dict[str, Path]
) -> None:
    main = projects["quickstart"] / "main.py"
    main.write_text(re.sub(r"workersMax=\d+", "workersMax=4", main.read_text(), count=1))
    plan = json.loads(run("quickstart", "plan", "--json").stdout)
    updates = [i for i in plan["items"] if i["action"] == "update"]
    assert [(i["name"], i["changes"]) for i in updates] == [
        ("gateway", [{"field": "workersMax", "deployed": 2, "local": 4}])
    ]
    before = {e.id: e.version for e in fake.endpoints()}
    mark = len(fake.graphql_calls)
    done = run("quickstart", "deploy", "--yes")
    assert done.returncode == 0, done.stderr
    saved = [
        c.variables["input"] for c in fake.graphql_calls[mark:] if c.operation == "saveEndpoint"
    ]
    assert [s["name"] for s in saved] == ["gateway"] and saved[0]["workersMax"] == 4
    assert {e.id for e in fake.endpoints()} == set(before)


def test_change_behind_our_back_is_drift(run: Run, fake: FakeRunPod) -> None:
    summarizer = next(e for e in fake.endpoints() if e.name == "summarizer")
    fake.edit_endpoint(summarizer.id, workersMax=9)
    plan = json.loads(run("endpoint_api", "plan", "--json").stdout)
    (item,) = [i for i in plan["items"] if i["action"] == "update"]
    assert item["name"] == "summarizer"
    assert [c["field"] for c in item["changes"]] == ["workersMax"]
    assert item["changes"][0]["deployed"] == 9


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_undeploy_all_leaves_nothing(run: Run, fake: FakeRunPod, example: str) -> None:
    done = run(example, "undeploy", "--all", "--yes")
    assert done.returncode == 0, done.stderr


def test_nothing_of_ours_is_left_and_no_key_was_printed(
    fake: FakeRunPod, outputs: list[str]
) -> None:
    assert fake.endpoints() == [] and fake.templates() == []
    assert outputs
    assert not [o for o in outputs if fake.api_key in o]
