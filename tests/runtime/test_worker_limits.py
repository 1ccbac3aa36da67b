"""Workers that keep working: stuck calls, recycling, backpressure and hostile bodies.

Real `python -m runtime.worker` processes with small limits set through the environment.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from headless import CLI
from waiting import wait_for
from worker_harness import Worker

from runtime.exitcodes import RECYCLE_EXIT_CODE
from runtime.serialization import function_job

USER_CODE = """
import time


def stuck(seconds: float = 120.0) -> dict:
    time.sleep(seconds)
    return {"slept": seconds}


def shout(text: str) -> str:
    return text.upper()


def explode(x: int = 0) -> int:
    table = {"a": 1}
    return table["missing"] + x  # EXPLODE-LINE
"""

QB_HANDLER = """
from runtime.qb_handler import create_handler
import userfns
handler = create_handler({"stuck": userfns.stuck, "shout": userfns.shout,
                          "explode": userfns.explode})
"""

LB_HANDLER = """
from runtime.lb_app import create_lb_app
import userfns
app = create_lb_app({("POST", "/stuck"): userfns.stuck, ("POST", "/shout"): userfns.shout,
                     ("POST", "/explode"): userfns.explode})
"""

EXPLODE_LINE = (
    USER_CODE.splitlines().index(
        next(line for line in USER_CODE.splitlines() if "EXPLODE-LINE" in line)
    )
    + 1
)


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("limits-build")
    (root / "userfns.py").write_text(USER_CODE)
    (root / "handler_jobs.py").write_text(textwrap.dedent(QB_HANDLER))
    (root / "handler_web.py").write_text(textwrap.dedent(LB_HANDLER))
    resources = {
        "jobs": {"resource_type": "LiveServerless", "handler_file": "handler_jobs.py"},
        "web": {"resource_type": "LoadBalancerSlsResource", "handler_file": "handler_web.py"},
    }
    (root / "flash_manifest.json").write_text(json.dumps({"resources": resources}))
    return root


class Started:
    """Starts workers and stops every one of them at teardown."""

    def __init__(self, build_dir: Path) -> None:
        self.build_dir = build_dir
        self.workers: list[Worker] = []

    def __call__(self, resource: str, **env: str) -> tuple[Worker, httpx.Client]:
        worker = Worker(self.build_dir, resource, env=env)
        self.workers.append(worker)
        url = worker.wait_ready()
        client = httpx.Client(base_url=url, headers=worker.headers, timeout=15)
        return worker, client


@pytest.fixture
def start(build_dir: Path) -> Iterator[Started]:
    started = Started(build_dir)
    yield started
    for worker in started.workers:
        worker.stop()


def job(name: str, **kwargs: Any) -> dict[str, Any]:
    return {"input": function_job(name, (), kwargs)}


def status_of(client: httpx.Client, job_id: str, statuses: set[str]) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = client.get(f"/status/{job_id}").json()
        return body if body.get("status") in statuses else None

    return wait_for(check, 15, f"job {job_id} in {statuses}")


# ------------------------------------------------------------------------ QB: stuck jobs


def test_timed_out_and_cancelled_jobs_free_their_slots(start: Started) -> None:
    worker, client = start(
        "jobs", FLASH_WORKER_CONCURRENCY="2", FLASH_MAX_STUCK="4", FLASH_RUNSYNC_WAIT="20"
    )
    timed = client.post("/run", json={**job("stuck"), "policy": {"executionTimeout": 200}})
    cancelled = client.post("/run", json=job("stuck")).json()["id"]
    status_of(client, timed.json()["id"], {"TIMED_OUT"})
    client.post(f"/cancel/{cancelled}")
    status_of(client, cancelled, {"CANCELLED"})
    # Both threads are still sleeping; later jobs still get a slot and a thread.
    for text in ("a", "b", "c"):
        body = client.post("/runsync", json=job("shout", text=text)).json()
        assert body["status"] == "COMPLETED", body
    assert client.get("/ping").status_code == 200
    health = client.get("/health").json()
    assert health["workers"]["unhealthy"] == 0 and health["jobs"]["inProgress"] == 0


def test_stuck_jobs_make_the_worker_unhealthy_and_it_recycles(
    start: Started, tmp_path: Path
) -> None:
    journal = tmp_path / "jobs.journal"
    worker, client = start(
        "jobs",
        FLASH_WORKER_CONCURRENCY="2",
        FLASH_MAX_STUCK="2",
        FLASH_RECYCLE_DELAY="3",
        FLASH_JOB_JOURNAL=str(journal),
    )
    # Two stuck jobs hold the two... slots of stuck work; one more is running when it recycles.
    for _ in range(2):
        client.post("/run", json={**job("stuck"), "policy": {"executionTimeout": 100}})
    running = client.post("/run", json=job("stuck", seconds=60)).json()["id"]

    def unhealthy() -> httpx.Response | None:
        response = client.get("/ping")
        return response if response.status_code == 503 else None

    response = wait_for(unhealthy, 15, "/ping 503")
    assert "2 stuck" in response.json()["error"]
    assert client.get("/health").json()["workers"]["unhealthy"] == 1
    assert worker.proc.wait(timeout=20) == RECYCLE_EXIT_CODE
    assert any("recycl" in line for line in worker.stderr), worker.stderr
    # The next incarnation tells what became of the job the recycle interrupted.
    _, again = start("jobs", FLASH_JOB_JOURNAL=str(journal))
    body = again.get(f"/status/{running}")
    assert body.status_code == 200, body.text
    assert body.json()["status"] == "FAILED"
    assert "worker recycled: 2 stuck jobs" in body.json()["error"]
    unknown = again.get("/status/nope-1")
    assert unknown.status_code == 404 and "previous worker" in unknown.json()["error"]


def test_a_journal_left_after_the_next_worker_started_is_still_read(
    start: Started, tmp_path: Path
) -> None:
    """Blue/green: the new worker starts before the old one stops and leaves its journal."""
    journal = tmp_path / "jobs.journal"
    old, old_client = start("jobs", FLASH_JOB_JOURNAL=str(journal))
    done = old_client.post("/run", json=job("shout", text="kept")).json()["id"]
    status_of(old_client, done, {"COMPLETED"})
    _, new_client = start("jobs", FLASH_JOB_JOURNAL=str(journal))
    assert new_client.get(f"/status/{done}").status_code == 404
    old.stop()
    assert journal.is_file()
    body = new_client.get(f"/status/{done}")
    assert body.status_code == 200, body.text
    assert body.json()["status"] == "COMPLETED" and body.json()["output"]["success"] is True


def test_a_worker_whose_stuck_code_returns_in_time_is_not_recycled(start: Started) -> None:
    worker, client = start(
        "jobs", FLASH_WORKER_CONCURRENCY="1", FLASH_MAX_STUCK="1", FLASH_RECYCLE_DELAY="30"
    )
    body = {**job("stuck", seconds=1.0), "policy": {"executionTimeout": 100}}
    status_of(client, client.post("/run", json=body).json()["id"], {"TIMED_OUT"})
    assert client.get("/ping").status_code == 503
    wait_for(lambda: client.get("/ping").status_code == 200, 15, "/ping 200 again")
    wait_for(lambda: any("recovered" in line for line in worker.stderr), 15, "recovered")
    assert worker.proc.poll() is None
    assert client.post("/runsync", json=job("shout", text="ok")).json()["output"]


# ------------------------------------------------------------------------ LB: stuck requests


def test_lb_request_timeout_is_a_504_and_stuck_calls_recycle(start: Started) -> None:
    worker, client = start("web", FLASH_REQUEST_TIMEOUT="0.3", FLASH_MAX_STUCK="2")
    response = client.post("/stuck", json={})
    assert response.status_code == 504
    assert "0.3" in response.json()["error"] and "stuck" in response.json()["error"]
    assert client.post("/shout", json={"text": "hi"}).json() == "HI"
    assert client.get("/ping").status_code == 200
    assert client.post("/stuck", json={}).status_code == 504

    def unhealthy() -> bool:
        try:
            return client.get("/ping").status_code == 503
        except httpx.HTTPError:
            return worker.proc.poll() is not None  # already recycled

    wait_for(unhealthy, 15, "LB /ping 503")
    assert worker.proc.wait(timeout=20) == RECYCLE_EXIT_CODE


# ------------------------------------------------------------------------ backpressure


def test_queue_is_bounded_by_count_and_bytes(start: Started) -> None:
    worker, client = start(
        "jobs",
        FLASH_WORKER_CONCURRENCY="1",
        FLASH_QUEUE_MAX_JOBS="2",
        FLASH_QUEUE_MAX_BYTES="20000",
    )
    first = client.post("/run", json=job("stuck", seconds=30)).json()["id"]
    status_of(client, first, {"IN_PROGRESS"})
    assert client.post("/run", json=job("shout", text="a")).status_code == 200
    assert client.post("/run", json=job("shout", text="b")).status_code == 200
    full = client.post("/run", json=job("shout", text="c"))
    assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1
    assert "queue is full" in full.json()["error"]
    client.post("/purge-queue")
    big = client.post("/run", json=job("shout", text="x" * 30000))
    assert big.status_code == 429 and "bytes" in big.json()["error"]
    client.post(f"/cancel/{first}")


def test_kept_results_are_bounded_by_bytes(start: Started) -> None:
    worker, client = start("jobs", FLASH_RESULTS_MAX_BYTES="4000")
    ids = []
    for index in range(6):
        body = client.post("/runsync", json=job("shout", text=f"{index}" * 1000)).json()
        assert body["status"] == "COMPLETED"
        ids.append(body["id"])
    assert client.get(f"/status/{ids[-1]}").status_code == 200
    oldest = client.get(f"/status/{ids[0]}")
    assert oldest.status_code == 404 and "expired" in oldest.json()["error"]


def test_lb_body_cap_and_422_without_the_input(start: Started) -> None:
    worker, client = start("web", FLASH_MAX_BODY_BYTES="2000")
    too_big = client.post("/shout", json={"text": "x" * 5000})
    assert too_big.status_code == 413 and "2000" in too_big.json()["error"]
    chunks = (b'{"text": "' + b"y" * 1000 + b'"' for _ in range(1))
    streamed = client.post(
        "/shout", content=iter([*chunks, b"z" * 5000, b"}"]), headers={"content-type": "json"}
    )
    assert streamed.status_code == 413
    secret = "sk-very-secret-value-4242"
    bad = client.post("/shout", json={"text": {"token": secret}})
    assert bad.status_code == 422 and "text" in bad.text
    assert secret not in bad.text


# ------------------------------------------------------------------------ hostile JSON


@pytest.mark.parametrize("resource", ["jobs", "web"])
def test_surrogates_and_deep_nesting_are_a_400(start: Started, resource: str) -> None:
    worker, client = start(resource, FLASH_JSON_MAX_DEPTH="50")
    path = "/run" if resource == "jobs" else "/shout"
    surrogate = b'{"input": {"text": "\\ud800"}}' if resource == "jobs" else b'{"text": "\\ud800"}'
    deep = b'{"input": ' + b"[" * 60 + b"]" * 60 + b"}"
    deeper = b'{"text": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    for body, word in ((surrogate, "surrogate"), (deep, "nested"), (deeper, "nested")):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert word in response.json()["error"]
    assert client.get("/ping").status_code == 200
    if resource == "jobs":
        assert client.get("/health").json()["jobs"] == {
            "completed": 0,
            "failed": 0,
            "inProgress": 0,
            "inQueue": 0,
            "retried": 0,
        }


# ------------------------------------------------------------------------ failing QB job


def test_failing_qb_job_logs_its_traceback(start: Started) -> None:
    worker, client = start("jobs")
    body = client.post("/runsync", json=job("explode")).json()
    # runpod's rule: an output with an "error" key fails the job; the rest stays the output.
    assert body["status"] == "FAILED" and body["error"] == "KeyError: 'missing'"
    output = body["output"]
    assert output["success"] is False and output["error_type"] == "KeyError"
    assert output["location"] == f"userfns.py:{EXPLODE_LINE}"
    wait_for(
        lambda: any(f'userfns.py", line {EXPLODE_LINE}' in line for line in worker.stderr),
        15,
        "traceback in the worker's stderr",
    )


# ------------------------------------------------------------------------ the supervisor

STUCK_PROJECT = """
import time

from runpod_flash import CpuInstanceType, Endpoint


@Endpoint(
    name="jobs",
    cpu=CpuInstanceType.CPU3C_1_2,
    workers=(1, 1),
    env={"FLASH_MAX_STUCK": "1", "FLASH_RECYCLE_DELAY": "3"},
)
def hang(seconds: float = 120.0) -> float:
    time.sleep(seconds)
    return seconds


@Endpoint(name="oops", cpu=CpuInstanceType.CPU3C_1_2, workers=(1, 1))
def oops(key: str = "missing") -> int:
    table = {"a": 1}
    return table[key]
"""


def test_supervisor_restarts_a_recycled_worker_at_once(
    localcloud_home: Path, tmp_path: Path
) -> None:
    import subprocess

    from engine.health import probe
    from engine.home import Home
    from engine.identity import app_slug, canonical_path
    from engine.localcloud.discovery import read_state
    from engine.localcloud.store import Store
    from engine.provider import EndpointTarget

    project = tmp_path / "recycleapp"
    project.mkdir()
    app = app_slug(canonical_path(project))
    (project / "main.py").write_text(STUCK_PROJECT)
    cli = CLI
    deploy = subprocess.run(
        [*cli, "deploy", "--yes", "--json", "--project", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert deploy.returncode == 0, deploy.stderr
    # `invoke` says what failed remotely, and where in the user's code.
    invoked = subprocess.run(
        [*cli, "invoke", "oops", "--project", str(project)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert invoked.returncode == 1
    assert "KeyError: 'missing'" in invoked.stdout and "at main.py:21" in invoked.stdout
    assert "Traceback" in invoked.stdout, invoked.stdout
    home = Home(localcloud_home)
    info = read_state(home)
    assert info is not None
    api = httpx.Client(base_url=info.url, headers=info.headers(), trust_env=False, timeout=10)

    def record() -> dict[str, Any]:
        return api.get(f"/v1/apps/{app}/endpoints/jobs").json()

    first = record()
    assert first.get("status") == "healthy", (first, deploy.stdout)
    store = Store(home.db_path)
    try:
        key = store.endpoint_key(app, "jobs")
    finally:
        store.close()
    client = httpx.Client(
        base_url=first["url"], headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    body = {**job("hang"), "policy": {"executionTimeout": 100}}
    stuck_id = client.post("/run", json=body).json()["id"]
    status_of(client, stuck_id, {"TIMED_OUT"})
    # Meanwhile the health probe (what `status` and the TUI show) reports it.
    target = EndpointTarget("jobs", first["url"], False, key=key)

    async def sample() -> Any:
        async with httpx.AsyncClient(headers=target.headers()) as http:
            return await probe(http, target)

    import asyncio

    unhealthy = asyncio.run(sample())
    assert not unhealthy.ok and "stuck" in unhealthy.detail

    def restarted() -> dict[str, Any] | None:
        current = record()
        ok = current["status"] == "healthy" and current["pid"] not in (None, first["pid"])
        return current if ok else None

    again = wait_for(restarted, 30, "a new healthy worker")
    assert again["restarts"] == 1 and not again.get("crash_times")
    kinds = [e["kind"] for e in api.get(f"/v1/apps/{app}/events").json()["events"]]
    assert "recycled" in kinds and "crashed" not in kinds
    # The new worker knows the jobs of the one it replaced (the supervisor's job journal).
    with httpx.Client(base_url=again["url"], headers=client.headers, timeout=10) as fresh:
        assert fresh.get(f"/status/{stuck_id}").json()["status"] == "TIMED_OUT"
    client.close()
    api.close()
