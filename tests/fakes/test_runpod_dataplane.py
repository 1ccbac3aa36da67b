"""The fake data plane with real image workers: queue API, job states, health, auth, LB proxy.

The artifacts here are tiny hand-written ones (a handler file in a tarball), so these tests are
about the data plane and the image emulator; tests/engine/test_runpod_artifact.py runs real
builds of the examples on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from waiting import wait_for

from fakes.dataplane_harness import ACCOUNT_KEY, Plane, artifact, image, serving
from fakes.runpod_dataplane import EndpointView

QB_HANDLER = """
import asyncio, os, sys

async def handler(job):
    data = job["input"]
    if data.get("fail"):
        return {"error": "asked to fail", "detail": 1}
    if data.get("sleep"):
        await asyncio.sleep(data["sleep"])
    if data.get("die"):
        os._exit(3)
    print("handled", job["id"], flush=True)
    return {"echo": data, "job_id": job["id"], "resource": os.environ["FLASH_RESOURCE_NAME"],
            "argv0": sys.argv[0]}
"""
LB_HANDLER = """
from fastapi import FastAPI

app = FastAPI()

@app.post("/add")
async def add(body: dict) -> dict:
    return {"sum": body["a"] + body["b"]}
"""


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    with serving(tmp_path / "plane") as harness:
        yield harness


def qb_view(tmp_path: Path, **fields: object) -> EndpointView:
    values: dict[str, object] = {
        "id": "qbecho0001",
        "name": "echo",
        "type": "QB",
        "env": {"FLASH_RESOURCE_NAME": "echo"},
        "image_name": image("runpod/flash-cpu"),
        "workers_min": 0,
        "workers_max": 1,
        "ai_key": "ai_key_echo_0001",
        "version": 1,
        "artifact": artifact(tmp_path / "echo.tar.gz", {"handler_echo.py": QB_HANDLER}),
    }
    values.update(fields)
    return EndpointView(**values)  # type: ignore[arg-type]


def test_qb_job_runs_on_an_image_worker_with_the_whole_event(plane: Plane, tmp_path: Path) -> None:
    view = qb_view(tmp_path)
    plane.apply(view)
    answer = plane.http.post(
        f"/v2/{view.id}/runsync", json={"input": {"x": 1}}, headers=plane.headers(view.id)
    )
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["status"] == "COMPLETED", job
    assert job["id"].startswith("sync-")
    assert job["output"]["echo"] == {"x": 1}
    assert job["output"]["job_id"] == job["id"]  # the handler got the whole event
    assert job["output"]["resource"] == "echo"
    (worker,) = plane.plane.workers(view.id)
    assert job["workerId"] == worker.id
    wait_for(lambda: any("handled" in r.line for r in worker.lines()), timeout=30)


def test_queue_api_states_health_and_404(plane: Plane, tmp_path: Path) -> None:
    view = qb_view(tmp_path)
    plane.apply(view)
    headers = plane.headers(view.id)
    failed = plane.http.post(
        f"/v2/{view.id}/runsync", json={"input": {"fail": True}}, headers=headers
    ).json()
    assert failed["status"] == "FAILED" and failed["error"] == "asked to fail"

    slow = plane.http.post(
        f"/v2/{view.id}/run",
        json={"input": {"sleep": 30}, "policy": {"executionTimeout": 1000}},
        headers=headers,
    ).json()
    assert slow["status"] == "IN_QUEUE" and slow["id"].endswith("-u1")

    def status(job_id: str) -> str:
        return plane.http.get(f"/v2/{view.id}/status/{job_id}", headers=headers).json()["status"]

    wait_for(lambda: status(slow["id"]) == "TIMED_OUT", timeout=60)
    retried = plane.http.post(f"/v2/{view.id}/retry/{slow['id']}", headers=headers).json()
    assert retried == {"id": slow["id"], "status": "IN_QUEUE"}
    cancelled = plane.http.post(f"/v2/{view.id}/cancel/{slow['id']}", headers=headers).json()
    assert cancelled["status"] == "CANCELLED"
    assert status(slow["id"]) == "CANCELLED"

    health = plane.http.get(f"/v2/{view.id}/health", headers=headers).json()
    assert health["jobs"]["failed"] == 2 and health["jobs"]["retried"] == 1
    assert set(health["workers"]) == {
        "idle", "initializing", "ready", "running", "throttled", "unhealthy"
    }  # fmt: skip

    missing = plane.http.get(f"/v2/{view.id}/status/nope-u1", headers=headers)
    assert missing.status_code == 404
    assert plane.http.get("/v2/unknown/health", headers=headers).status_code == 404
    bad = plane.http.get(f"/v2/{view.id}/health", headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401
    bare = plane.http.get(f"/v2/{view.id}/health", headers={"Authorization": ACCOUNT_KEY})
    assert bare.status_code == 200


def test_lb_requests_are_proxied_to_the_image_worker(plane: Plane, tmp_path: Path) -> None:
    view = EndpointView(
        id="lbadd00001",
        name="adder",
        type="LB",
        env={"FLASH_RESOURCE_NAME": "adder", "FLASH_ENDPOINT_TYPE": "lb"},
        image_name=image("runpod/flash-lb-cpu"),
        workers_min=1,
        workers_max=1,
        ai_key="ai_key_adder_01",
        version=1,
        artifact=artifact(tmp_path / "adder.tar.gz", {"handler_adder.py": LB_HANDLER}),
    )
    plane.apply(view)
    headers = plane.headers(view.id)
    starting = plane.http.get(f"/lb/{view.id}/ping", headers=headers).status_code
    assert starting in (200, 204)  # 204: initializing
    # sent while the worker may still start: the load balancer waits for it
    answer = plane.http.post(f"/lb/{view.id}/add", json={"a": 2, "b": 3}, headers=headers)
    assert answer.json() == {"sum": 5}
    assert plane.http.get(f"/lb/{view.id}/ping", headers=headers).status_code == 200
    assert plane.http.post(f"/lb/{view.id}/add", json={}).status_code == 401


def test_cancel_stops_the_running_job_and_frees_the_worker(plane: Plane, tmp_path: Path) -> None:
    view = qb_view(tmp_path)
    plane.apply(view)
    headers = plane.headers(view.id)
    slow = plane.http.post(f"/v2/{view.id}/run", json={"input": {"sleep": 600}}, headers=headers)
    job_id = slow.json()["id"]

    def status() -> str:
        return plane.http.get(f"/v2/{view.id}/status/{job_id}", headers=headers).json()["status"]

    wait_for(lambda: status() == "IN_PROGRESS", timeout=60)
    cancelled = plane.http.post(f"/v2/{view.id}/cancel/{job_id}", headers=headers).json()
    assert cancelled == {"id": job_id, "status": "CANCELLED"}
    # One job at a time per worker: this one runs only because the stop signal reached it.
    quick = plane.http.post(
        f"/v2/{view.id}/runsync?wait=60000", json={"input": {"x": 2}}, headers=headers
    ).json()
    assert quick["status"] == "COMPLETED" and quick["output"]["echo"] == {"x": 2}
    assert status() == "CANCELLED"


def test_purge_queue_then_stream_a_result(plane: Plane, tmp_path: Path) -> None:
    view = qb_view(tmp_path, workers_max=0)  # no worker: jobs wait in the queue
    plane.apply(view)
    headers = plane.headers(view.id)
    ids = [
        plane.http.post(f"/v2/{view.id}/run", json={"input": {"n": n}}, headers=headers).json()[
            "id"
        ]
        for n in range(2)
    ]
    health = plane.http.get(f"/v2/{view.id}/health", headers=headers).json()
    assert health["jobs"]["inQueue"] == 2 and sum(health["workers"].values()) == 0
    purged = plane.http.post(f"/v2/{view.id}/purge-queue", headers=headers).json()
    assert purged == {"removed": 2, "status": "completed"}
    for job_id in ids:
        gone = plane.http.get(f"/v2/{view.id}/status/{job_id}", headers=headers)
        assert gone.status_code == 404

    plane.apply(qb_view(tmp_path, workers_max=1))
    job_id = plane.http.post(
        f"/v2/{view.id}/run", json={"input": {"s": 1}}, headers=headers
    ).json()["id"]
    chunks: list = []

    def streamed_to_the_end() -> bool:
        answer = plane.http.get(f"/v2/{view.id}/stream/{job_id}", headers=headers).json()
        chunks.extend(answer["stream"])
        return answer["status"] == "COMPLETED" and not answer["stream"]

    wait_for(streamed_to_the_end, timeout=60)
    assert [c["output"]["echo"] for c in chunks] == [{"s": 1}]


def test_bad_bodies_are_refused(plane: Plane, tmp_path: Path) -> None:
    view = qb_view(tmp_path, workers_max=0)
    plane.apply(view)
    headers = plane.headers(view.id)
    no_input = plane.http.post(f"/v2/{view.id}/run", json={"x": 1}, headers=headers)
    assert no_input.status_code == 400
    not_json = plane.http.post(f"/v2/{view.id}/run", content=b"{", headers=headers)
    assert not_json.status_code == 400
    running = plane.http.post(f"/v2/{view.id}/run", json={"input": {}}, headers=headers).json()
    retry = plane.http.post(f"/v2/{view.id}/retry/{running['id']}", headers=headers)
    assert retry.status_code == 400  # only FAILED or TIMED_OUT jobs are retried


def test_a_worker_that_dies_fails_its_job_and_is_replaced(plane: Plane, tmp_path: Path) -> None:
    view = qb_view(tmp_path)
    plane.apply(view)
    headers = plane.headers(view.id)
    (first,) = plane.plane.workers(view.id)
    died = plane.http.post(
        f"/v2/{view.id}/runsync", json={"input": {"die": True}}, headers=headers
    ).json()
    assert died["status"] == "FAILED" and died["error"] == "worker exited with status 3"
    after = plane.http.post(
        f"/v2/{view.id}/runsync", json={"input": {"x": 3}}, headers=headers
    ).json()
    assert after["status"] == "COMPLETED" and after["workerId"] != first.id
    assert any("exited with status 3" in r.line for r in first.lines() if r.source == "system")


def test_an_image_the_emulator_cannot_run_leaves_an_unhealthy_worker(
    plane: Plane, tmp_path: Path
) -> None:
    view = qb_view(tmp_path, image_name="runpod/tetra-rp-cpu:latest")  # ignores handler files
    plane.apply(view)
    headers = plane.headers(view.id)
    health = plane.http.get(f"/v2/{view.id}/health", headers=headers).json()
    assert health["workers"]["unhealthy"] == 1 and health["workers"]["ready"] == 0
    (worker,) = plane.plane.workers(view.id)
    assert "not emulated" in worker.lines()[-1].line
    listed = plane.http.get(f"/api/v2/serverless/{view.id}/workers", headers=headers).json()
    assert listed["summary"]["unhealthy"] == 1 and listed["workers"][0]["status"] == "UNHEALTHY"


def test_concurrent_first_creates_share_one_image_site(plane: Plane, tmp_path: Path) -> None:
    """Endpoints saved at once on a fresh data plane all start (the image site is made once)."""
    views = [
        qb_view(tmp_path, id=f"qbecho100{i}", ai_key=f"ai_key_echo_100{i}", workers_min=1)
        for i in range(4)
    ]
    for view in views:
        plane.keys[view.id] = view.ai_key

    async def save_all() -> None:
        await asyncio.gather(*(plane.plane.apply(view) for view in views))

    plane.server.call(save_all())
    for view in views:
        answer = plane.http.post(
            f"/v2/{view.id}/runsync", json={"input": {"n": 1}}, headers=plane.headers(view.id)
        )
        assert answer.status_code == 200 and answer.json()["status"] == "COMPLETED", answer.text
