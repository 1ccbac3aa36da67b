"""End to end on the real local cloud: the `flash-tui` CLI in subprocesses, real worker processes.

One flash-tui home and one copy of examples/quickstart for the module; in file order the tests
are a user session (deploy -> invoke -> drift -> faults -> remove -> undeploy). Each test asks
for the state it needs (`deployed`: a `deploy --yes`, a no-op when nothing changed), so each
also passes alone (`-k NAME`). The module fixture (and the session fixture in conftest) stops
the cloud and kills any leftover worker whatever happens.

A little over 600 lines because it is that one session: split across modules, each part would
need its own home, cloud and deploy of the quickstart.
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
from headless import FAST_BACKOFF, Lines, ProjectCli, cli_env, cli_for, json_of, killed_at_exit
from projectfiles import copy_example
from waiting import wait_for
from worker_harness import home_worker_pids

from engine.home import Home
from engine.identity import app_slug, canonical_path
from engine.localcloud.discovery import read_state
from engine.localcloud.store import Store

FOLDER = "e2eapp"
APP = ""  # the app key of the module's project (engine.identity), set by the `project` fixture
ENDPOINTS = {"api", "cpu_worker", "gateway", "gpu_worker"}

BROKEN = '''"""An endpoint that imports fine at build time and fails in its worker (env set)."""

import os

from tetra_rp import CpuLiveServerless, remote

broken_config = CpuLiveServerless(name="broken", env={"FAIL_AT_IMPORT": "1"})

if os.environ.get("FAIL_AT_IMPORT"):
    # A careless program shows its secrets as it dies: they must not leave the log file.
    key = os.environ.get("FLASH_ENDPOINT_KEY")
    raise RuntimeError(f"boom at import: the model weights are missing (key {key})")


@remote(broken_config)
def nothing() -> int:
    return 1
'''


@pytest.fixture(scope="module")
def env(localcloud_home: Path) -> dict[str, str]:
    """Environment for CLI subprocesses (and, through them, the cloud they start)."""
    return cli_env(localcloud_home, **FAST_BACKOFF)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    global APP
    root = tmp_path_factory.mktemp("e2e") / FOLDER
    copy_example("quickstart", root)
    APP = app_slug(canonical_path(root))
    return root


@pytest.fixture(scope="module")
def home(localcloud_home: Path) -> Home:
    return Home(localcloud_home)


@pytest.fixture(scope="module")
def cli(env: dict[str, str], project: Path) -> ProjectCli:
    return cli_for(env, project)


def status(cli: Callable[..., Any]) -> dict[str, dict[str, Any]]:
    proc = cli("status", "--json")
    assert proc.returncode == 0, proc.stderr
    return {e["name"]: e for e in json_of(proc)["endpoints"]}


def worker_pids(home: Home) -> set[int]:
    """Every live worker process that runs from a build of this home."""
    return home_worker_pids(home.root)


def assert_only_replaced(
    cli: Callable[..., Any], home: Home, before: dict[str, Any], name: str
) -> None:
    """After an update of `name`: it runs in a new worker, the others in theirs, all healthy
    and in sync; the replaced worker drains (blue/green), then stops, leaving none unrecorded."""
    after = status(cli)
    assert after[name]["pid"] != before[name]["pid"]
    for other in ENDPOINTS - {name}:
        assert after[other]["pid"] == before[other]["pid"], other
    assert all(e["status"] == "healthy" and e["drift"] == "in_sync" for e in after.values())
    recorded = {e["pid"] for e in after.values()}
    wait_for(lambda: worker_pids(home) == recorded, 30, f"the replaced {name} worker to stop")


def keys(home: Home) -> list[str]:
    store = Store(home.db_path)
    try:
        return list(store.app_keys(APP).values())
    finally:
        store.close()


@pytest.fixture(scope="module")
def api(home: Home) -> Iterator[Callable[[], httpx.Client]]:
    """A client of the currently running cloud's API (re-read after restarts)."""
    clients: list[httpx.Client] = []

    def make() -> httpx.Client:
        info = read_state(home)
        assert info is not None, "the local cloud is not running"
        client = httpx.Client(base_url=info.url, headers=info.headers(), trust_env=False)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def events(api: Callable[[], httpx.Client], since: int = 0) -> list[dict[str, Any]]:
    return api().get(f"/v1/apps/{APP}/events", params={"since": since}).json()["events"]


def records(api: Callable[[], httpx.Client]) -> dict[str, dict[str, Any]]:
    """The cloud's endpoint records (cheaper than a `status` CLI run inside wait loops)."""
    return {r["name"]: r for r in api().get(f"/v1/apps/{APP}/endpoints").json()["endpoints"]}


def last_event_id(api: Callable[[], httpx.Client]) -> int:
    all_events = events(api)
    return all_events[-1]["id"] if all_events else 0


@pytest.fixture
def deployed(cli: Callable[..., Any], api: Callable[[], httpx.Client]) -> None:
    """The project's endpoints deployed as the code says and healthy (whatever ran before)."""
    proc = cli("deploy", "--yes", "--json")
    assert proc.returncode == 0 and json_of(proc)["ok"], proc.stderr
    wait_for(
        lambda: all(r["status"] == "healthy" for r in records(api).values()),
        30,
        "every endpoint healthy",
        retry_errors=True,
    )


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


# -- the flow ---------------------------------------------------------------------------------


def test_deploy_refuses_without_yes_and_no_terminal(cli: Callable[..., Any]) -> None:
    proc = cli("deploy")
    assert proc.returncode == 1
    assert "--yes" in proc.stderr and "refusing" in proc.stderr


def test_deploy_all_endpoints_healthy(
    cli: Callable[..., Any], home: Home, api: Callable[[], httpx.Client]
) -> None:
    proc = cli("deploy", "--yes", "--json")
    report = json_of(proc)
    assert proc.returncode == 0 and report["ok"], proc.stderr
    assert {r["name"]: r["action"] for r in report["results"]} == dict.fromkeys(ENDPOINTS, "create")
    # Each result carries the keys it always had: no null `error` on a success.
    assert all(set(r) == {"name", "action", "ok", "elapsed_ms", "url"} for r in report["results"])
    endpoints = status(cli)
    assert set(endpoints) == ENDPOINTS
    for item in endpoints.values():
        assert item["status"] == "healthy" and item["drift"] == "in_sync", item
        assert item["health"]["ok"] is True and item["health"]["latency_ms"] >= 0
        assert item["url"].startswith("http://127.0.0.1:") and item["pid"] and item["restarts"] == 0
        assert {"name", "resource_type", "drift_fields"} <= set(item)
    assert worker_pids(home) == {e["pid"] for e in endpoints.values()}
    # The state manager holds the deployed manifest (what a mothership reads), without keys.
    persisted = api().get(f"/v1/apps/{APP}/environments/local/manifest").json()
    assert set(persisted["resources"]) == ENDPOINTS
    for name, entry in persisted["resources"].items():
        assert entry["status"] == "deployed" and entry["endpoint_url"] == endpoints[name]["url"]
        assert entry["config_hash"] and entry["handler_file"] == f"handler_{name}.py"
    assert not any(k in json.dumps(persisted) for k in keys(home))


INVOCATIONS: list[tuple[str, Any, Callable[[Any], bool]]] = [
    ("api:/health", None, lambda r: r["status"] == "ok"),
    ("GET /greet", {"name": "flash"}, lambda r: r == {"message": "Hello, flash!"}),
    ("POST /compute", {"numbers": [1, 2, 3], "scale": 2}, lambda r: r["sum"] == 12.0),
    ("gateway:/stats", {"text": "a b a"}, lambda r: r["words"] == 3 and r["unique"] == 2),
    (
        "POST /pipeline",
        {"text": "Hello   World", "dims": 4},
        lambda r: r["text"] == "hello world" and r["embedding"]["dims"] == 4,
    ),
    ("POST /keywords", {"text": "b a b c c c", "top": 2}, lambda r: r["keywords"] == ["c", "b"]),
    ("gpu_worker:embed", {"text": "hi there", "dims": 8}, lambda r: len(r["vector"]) == 8),
    ("preprocess", {"text": "A  B"}, lambda r: r["words"] == ["a", "b"]),
    ("word_stats", {"text": "one two"}, lambda r: r["words"] == 2),
    ("cpu_worker:TextAnalyzer.keywords", {"text": "cat dog cat the"}, lambda r: r[0] == "cat"),
]


@pytest.mark.usefixtures("deployed")
def test_invoke_every_route_and_function(project: Path, home: Home) -> None:
    """Every LB route and QB function of the quickstart, through the engine the CLI uses
    (in-process: one CLI start per call would dominate the test's time)."""
    from engine.localcloud.provider import LocalCloudProvider
    from engine.operations import Engine

    async def main() -> list[Any]:
        async with Engine(project, LocalCloudProvider(home, start=False)) as engine:
            return [await engine.invoke(target, data) for target, data, _ in INVOCATIONS]

    results = asyncio.run(main())
    for (target, _data, check), result in zip(INVOCATIONS, results, strict=True):
        assert result.ok and result.status_code == 200, (target, result.error)
        assert result.latency_ms > 0
        assert check(result.result), (target, result.result)


@pytest.mark.usefixtures("deployed")
def test_invoke_cli_prints_the_result(cli: Callable[..., Any]) -> None:
    proc = cli("invoke", "gpu_worker:embed", "--data", '{"text": "a", "dims": 2}', "--json")
    result = json_of(proc)
    assert proc.returncode == 0 and result["ok"] and result["job_status"] == "COMPLETED"
    assert result["result"]["dims"] == 2
    human = cli("invoke", "POST /compute", "--data", '{"numbers": [2]}')
    assert human.returncode == 0 and "HTTP 200" in human.stdout and '"sum": 2.0' in human.stdout


@pytest.mark.usefixtures("deployed")
def test_invoke_failure_is_reported(cli: Callable[..., Any]) -> None:
    proc = cli("invoke", "POST /compute", "--data", '{"wrong": 1}', "--json")
    result = json_of(proc)
    assert proc.returncode == 1 and not result["ok"] and result["status_code"] == 422
    unknown = cli("invoke", "nope")
    assert unknown.returncode == 1 and "no function or route named 'nope'" in unknown.stderr


@pytest.mark.usefixtures("deployed")
def test_secrets_stay_secret(
    cli: Callable[..., Any], home: Home, api: Callable[[], httpx.Client]
) -> None:
    secret_keys = keys(home)
    assert len(secret_keys) == len(ENDPOINTS)
    outputs = [
        cli("status", "--json"),
        cli("status"),
        cli("logs", "--json", "--lines", "500"),
        cli("invoke", "POST /compute", "--data", '{"numbers": [1]}', "--json"),
        cli("cloud", "status", "--json"),
    ]
    info = read_state(home)
    assert info is not None
    for proc in outputs:
        assert proc.returncode == 0, proc.stderr
        for secret in [*secret_keys, info.token]:
            assert secret not in proc.stdout and secret not in proc.stderr
    # Worker routes need the endpoint key; /ping does not.
    endpoints = records(api)
    with httpx.Client(trust_env=False) as client:
        assert client.get(endpoints["api"]["url"] + "/ping").status_code == 200
        assert client.post(endpoints["api"]["url"] + "/compute", json={}).status_code == 401
        assert client.get(endpoints["gpu_worker"]["url"] + "/health").status_code == 401
        wrong = {"Authorization": "Bearer wrong"}
        assert (
            client.post(
                endpoints["gpu_worker"]["url"] + "/runsync", headers=wrong, json={"input": {}}
            ).status_code
            == 401
        )
    # Every file of the home is private.
    for path in home.root.rglob("*"):
        if path.is_symlink():
            continue
        expected = 0o700 if path.is_dir() else 0o600
        if path.is_dir() and "builds" in path.parts:
            continue  # the build copies keep the archive's modes (code, not secrets)
        if path.is_file() and "builds" in path.parts:
            continue
        if path.is_file() and "runtimes" in path.parts:
            # The build copies' shared bundled packages: private, with the archive's exec bits.
            assert (path.stat().st_mode & 0o777) in (0o600, 0o700), path
            continue
        assert (path.stat().st_mode & 0o777) == expected, path


@pytest.mark.usefixtures("deployed")
def test_logs_show_requests(cli: Callable[..., Any], project: Path, home: Home) -> None:
    assert cli("invoke", "POST /compute", "--data", '{"numbers": [1]}').returncode == 0
    proc = cli("logs", "api", "--json", "--lines", "200")
    lines = [item["text"] for item in json_of(proc)["lines"]]
    assert any(line.startswith("POST /compute 200") for line in lines), lines[-10:]
    assert any(line.startswith("[flash]") for line in lines)
    assert not any(line.startswith("GET /ping") for line in lines)  # probes hidden
    probes = json_of(cli("logs", "api", "--json", "--lines", "500", "--probes"))["lines"]
    assert any(item["text"].startswith("GET /ping 200") for item in probes)

    from engine.localcloud.provider import LocalCloudProvider
    from engine.operations import Engine

    async def follow_while_calling() -> list[str]:
        seen: list[tuple[str, str]] = []
        history = asyncio.Event()
        async with Engine(project, LocalCloudProvider(home, start=False)) as engine:

            async def reader() -> None:
                async for line in engine.follow(["api", "gpu_worker"], lines=2, probes=True):
                    seen.append((line.endpoint, line.text))
                    if len(seen) == 2:
                        history.set()  # the history comes once both streams are open
                    new = [f"{e} {t}" for e, t in seen[2:]]
                    if any(n.startswith("api GET /greet") for n in new) and any(
                        n.startswith("gpu_worker POST /runsync") for n in new
                    ):
                        return

            task = asyncio.ensure_future(reader())
            await asyncio.wait_for(history.wait(), 15)
            await engine.invoke("GET /greet", {"name": "x"})
            await engine.invoke("embed", {"text": "y"})
            await asyncio.wait_for(task, 15)
        return [f"{e} {t}" for e, t in seen]

    seen = asyncio.run(follow_while_calling())
    assert any(s.startswith("api GET /greet 200") for s in seen), seen


@pytest.mark.usefixtures("deployed")
def test_drift_then_deploy_updates_only_that_endpoint(
    cli: Callable[..., Any], project: Path, home: Home, api: Callable[[], httpx.Client]
) -> None:
    before = records(api)
    edit(project / "workers/gpu/endpoint.py", "workersMax=1,", "workersMax=3,")
    plan = json_of(cli("plan", "--json"))
    items = {i["name"]: i for i in plan["items"]}
    assert items["gpu_worker"]["action"] == "update"
    assert items["gpu_worker"]["drift"] == "drifted"
    assert items["gpu_worker"]["changes"] == [{"field": "workersMax", "deployed": 1, "local": 3}]
    assert {n: i["action"] for n, i in items.items() if n != "gpu_worker"} == dict.fromkeys(
        ENDPOINTS - {"gpu_worker"}, "unchanged"
    )
    drifted = status(cli)["gpu_worker"]
    assert drifted["drift"] == "drifted"
    assert drifted["drift_fields"] == [{"field": "workersMax", "deployed": 1, "local": 3}]

    proc = cli("deploy", "--yes", "--json")
    report = json_of(proc)
    assert proc.returncode == 0 and report["built"], proc.stderr
    assert [(r["name"], r["action"]) for r in report["results"]] == [("gpu_worker", "update")]
    assert_only_replaced(cli, home, before, "gpu_worker")


@pytest.mark.usefixtures("deployed")
def test_sigkilled_worker_is_restarted(
    cli: Callable[..., Any], home: Home, api: Callable[[], httpx.Client]
) -> None:
    mark = last_event_id(api)
    victim = records(api)["cpu_worker"]["pid"]
    os.kill(victim, signal.SIGKILL)

    def back() -> dict[str, Any] | None:
        record = api().get(f"/v1/apps/{APP}/endpoints/cpu_worker").json()
        ok = record["status"] == "healthy" and record["pid"] not in (None, victim)
        return record if ok else None

    record = wait_for(back, 20, "cpu_worker restarted", retry_errors=True)
    assert record["restarts"] == 1
    kinds = [e["kind"] for e in events(api, mark) if e["endpoint"] == "cpu_worker"]
    assert "crashed" in kinds and "restarted" in kinds
    assert worker_pids(home) == {e["pid"] for e in records(api).values()}

    # A redeploy starts the count again: status shows restarts since the last deploy.
    proc = cli("deploy", "cpu_worker", "--force", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc)["built"] is False  # nothing changed since the last build: reused
    redeployed = records(api)["cpu_worker"]
    assert redeployed["restarts"] == 0 and redeployed["crash_times"] == []
    assert status(cli)["cpu_worker"]["restarts"] == 0


@pytest.mark.usefixtures("deployed")
def test_sigkilled_cloud_is_restarted_and_readopts_workers(
    cli: Callable[..., Any], home: Home, api: Callable[[], httpx.Client], env: dict[str, str]
) -> None:
    before = records(api)
    info = read_state(home)
    assert info is not None
    os.kill(info.pid, signal.SIGKILL)
    wait_for(
        lambda: (
            not psutil.pid_exists(info.pid)
            or psutil.Process(info.pid).status() == psutil.STATUS_ZOMBIE
        ),
        20,
        "the killed cloud gone",
        retry_errors=True,
    )
    # While the cloud is down: one worker dies too, and a worker no record explains appears
    # (what a cloud killed between spawning a worker and recording its pid leaves behind).
    lost = before["gateway"]["pid"]
    os.kill(lost, signal.SIGKILL)
    rogue = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime.worker",
            "--build-dir",
            before["cpu_worker"]["build_path"],
            "--resource",
            "cpu_worker",
            "--port",
            "0",
        ],
        env={**env, "FLASH_ENDPOINT_KEY": "rogue"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: rogue.pid in worker_pids(home), 20, "the rogue worker up", retry_errors=True
        )
        after = status(cli)  # the next CLI call starts the cloud again
        new_info = read_state(home)
        assert new_info is not None and new_info.pid != info.pid
        assert set(after) == set(before)  # no record lost
        rogue.wait(timeout=15)  # terminated by the new cloud
    finally:
        if rogue.poll() is None:
            rogue.kill()
            rogue.wait()
    for name in ENDPOINTS - {"gateway"}:
        assert after[name]["pid"] == before[name]["pid"], name  # re-adopted, not restarted
        assert after[name]["status"] == "healthy"
    wait_for(
        lambda: records(api)["gateway"]["status"] == "healthy",
        20,
        "gateway healthy",
        retry_errors=True,
    )
    assert records(api)["gateway"]["pid"] not in (None, lost)
    kinds = [(e["kind"], e["endpoint"]) for e in events(api)]
    assert {n for k, n in kinds if k == "adopted"} == ENDPOINTS - {"gateway"}
    assert ("lost", "gateway") in kinds and ("killed_unknown", None) in kinds
    assert worker_pids(home) == {e["pid"] for e in records(api).values()}


@pytest.mark.usefixtures("deployed")
def test_sigkilled_cli_mid_deploy_leaves_a_consistent_state(
    project: Path, cli: ProjectCli, home: Home, api: Callable[[], httpx.Client]
) -> None:
    edit(project / "workers/cpu/endpoint.py", "workersMax=2,", "workersMax=4,")
    with killed_at_exit(cli.start("deploy", "--yes", stdout=subprocess.DEVNULL)) as proc:
        Lines(proc.stderr).wait_for("starting", 60)  # the deploy reached the cloud
        assert proc.poll() is None, "deploy ended before the kill"
        proc.kill()  # SIGKILL while the worker is starting
        proc.wait(timeout=10)

    def consistent() -> dict[str, dict[str, Any]] | None:
        now = records(api)
        if not all(e["status"] == "healthy" for e in now.values()):
            return None
        if worker_pids(home) != {e["pid"] for e in now.values()}:
            return None  # an unknown (or missing) process
        return now

    wait_for(consistent, 30, "records and processes agree", retry_errors=True)
    final = status(cli)
    assert set(final) == ENDPOINTS
    assert all(e["status"] == "healthy" for e in final.values())
    assert final["cpu_worker"]["drift"] == "in_sync"  # the service finished the deploy


@pytest.mark.usefixtures("deployed")
def test_concurrent_deploys_are_serialized(
    project: Path, cli: ProjectCli, home: Home, api: Callable[[], httpx.Client]
) -> None:
    mark = last_event_id(api)
    before = records(api)
    edit(project / "workers/api/endpoint.py", "workersMax=3", "workersMax=2")
    procs = [cli.start("deploy", "--yes", "--json") for _ in range(2)]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    assert all(r["ok"] for r in reports)
    updates = [e for e in events(api, mark) if e["kind"] == "updated" and e["endpoint"] == "api"]
    assert len(updates) == 1  # the second deploy found it already up to date
    assert_only_replaced(cli, home, before, "api")


@pytest.mark.usefixtures("deployed")
def test_worker_failing_at_import_is_marked_failed(
    cli: Callable[..., Any], project: Path, home: Home, api: Callable[[], httpx.Client]
) -> None:
    (project / "workers" / "broken").mkdir()
    (project / "workers" / "broken" / "__init__.py").write_text("")
    (project / "workers" / "broken" / "endpoint.py").write_text(BROKEN)
    proc = cli("deploy", "broken", "--yes", "--json")
    report = json_of(proc)
    assert proc.returncode == 1 and not report["ok"]
    assert "boom at import" in report["results"][0]["error"]
    assert set(report["results"][0]) == {"name", "action", "ok", "elapsed_ms", "url", "error"}

    wait_for(
        lambda: records(api)["broken"]["status"] == "failed", 40, "broken failed", retry_errors=True
    )
    item = status(cli)["broken"]
    assert item["status"] == "failed" and "boom at import" in item["last_error"]
    logs = cli("logs", "broken", "--lines", "300")
    assert "RuntimeError: boom at import" in logs.stdout
    kinds = [e["kind"] for e in events(api) if e["endpoint"] == "broken"]
    assert kinds.count("crashed") >= 5 and kinds[-1] == "failed"
    # The key it printed is redacted everywhere its last lines travel.
    assert "(key ***)" in logs.stdout
    status_json, status_text = cli("status", "--json"), cli("status")
    everything = [proc.stdout, proc.stderr, status_json.stdout, status_text.stdout, logs.stdout]
    everything.append(json.dumps(events(api)))
    for secret in keys(home):
        assert not any(secret in text for text in everything)
    # The other endpoints are untouched, and removing the broken one works.
    secrets = keys(home)
    assert cli("undeploy", "broken", "--yes").returncode == 0
    # Post-mortem: its last lines stay readable, key still redacted, until the next deploy.
    after = cli("logs", "broken", "--lines", "300")
    assert after.returncode == 0, after.stderr
    assert "broken (not deployed; last lines before it stopped)" in after.stdout
    assert "RuntimeError: boom at import" in after.stdout and "(key ***)" in after.stdout
    kept = json_of(cli("logs", "broken", "--json"))
    assert kept["not_deployed"] == ["broken"] and kept["lines"]
    for path in home.logs_dir(APP).glob("broken.log*"):
        assert not any(secret in path.read_text() for secret in secrets), path
    never = cli("logs", "never_deployed")
    assert never.returncode == 1 and "not deployed: never_deployed" in never.stderr
    fixed = BROKEN.replace('env={"FAIL_AT_IMPORT": "1"}', "env={}")
    (project / "workers" / "broken" / "endpoint.py").write_text(fixed)
    assert cli("deploy", "broken", "--yes").returncode == 0
    fresh = cli("logs", "broken", "--lines", "300")
    assert "boom at import" not in fresh.stdout and "not deployed" not in fresh.stdout
    assert cli("undeploy", "broken", "--yes").returncode == 0
    shutil.rmtree(project / "workers" / "broken")


@pytest.mark.usefixtures("deployed")
def test_removed_endpoint_is_orphaned_then_deleted(
    cli: Callable[..., Any], project: Path, home: Home, api: Callable[[], httpx.Client]
) -> None:
    api_pid = records(api)["api"]["pid"]
    (project / "workers" / "api" / "endpoint.py").unlink()
    plan = {i["name"]: i for i in json_of(cli("plan", "--json"))["items"]}
    assert plan["api"]["action"] == "delete" and plan["api"]["drift"] == "orphaned"
    assert status(cli)["api"]["drift"] == "orphaned"
    proc = cli("deploy", "--yes", "--json")
    report = json_of(proc)
    assert proc.returncode == 0, proc.stderr
    assert [(r["name"], r["action"]) for r in report["results"]] == [("api", "delete")]
    assert "api" not in records(api)
    persisted = api().get(f"/v1/apps/{APP}/environments/local/manifest").json()
    assert set(persisted["resources"]) == ENDPOINTS - {"api"}
    wait_for(lambda: not psutil.pid_exists(api_pid), 20, "the api worker gone", retry_errors=True)
    assert worker_pids(home) == {e["pid"] for e in records(api).values()}


@pytest.mark.usefixtures("deployed")
def test_cloud_stop_stops_workers_until_the_next_deploy(
    cli: Callable[..., Any], home: Home
) -> None:
    stopped = json_of(cli("cloud", "stop", "--json"))
    assert stopped["was_running"] is True and not stopped["forced"]
    assert worker_pids(home) == set()
    after = status(cli)  # starts the cloud again; stopped endpoints stay stopped
    assert {e["status"] for e in after.values()} == {"stopped"}
    assert worker_pids(home) == set()
    plan = {i["name"]: i for i in json_of(cli("plan", "--json"))["items"]}
    assert all(i["action"] == "update" for i in plan.values())
    assert all("not running (stopped)" in i["reasons"] for i in plan.values())
    proc = cli("deploy", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    assert {e["status"] for e in status(cli).values()} == {"healthy"}


@pytest.mark.usefixtures("deployed")
def test_undeploy_all_leaves_no_process(
    cli: Callable[..., Any], home: Home, api: Callable[[], httpx.Client]
) -> None:
    refused = cli("undeploy", "--all")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert worker_pids(home)
    names = set(records(api))  # without `api` after the removal test
    proc = cli("undeploy", "--all", "--yes", "--json")
    report = json_of(proc)
    assert proc.returncode == 0 and report["ok"]
    assert {r["name"] for r in report["results"]} == names
    assert worker_pids(home) == set()
    assert all(e["status"] == "not_deployed" for e in status(cli).values())
    assert json_of(cli("cloud", "stop", "--json"))["was_running"] is True
    assert json_of(cli("cloud", "status", "--json"))["running"] is False
