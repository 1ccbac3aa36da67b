"""The RunPod-compatible queue server, over real HTTP (uvicorn on a loopback port)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from waiting import wait_for
from worker_harness import serve_asgi

from runtime.qb_handler import create_handler
from runtime.queue_server import QueueLimits, QueueServer
from runtime.serialization import deserialize, serialize_args


async def echo(job: dict[str, Any]) -> Any:
    payload = job["input"]
    if isinstance(payload, dict) and "sleep" in payload:
        await asyncio.sleep(payload["sleep"])
    if isinstance(payload, dict) and payload.get("fail"):
        return {"error": "asked to fail", "detail": 1}
    if isinstance(payload, dict) and payload.get("raise"):
        raise RuntimeError("handler broke")
    if isinstance(payload, dict) and payload.get("unjsonable"):
        return {"x": object()}
    return {"echo": payload}


def wait_status(client: httpx.Client, url: str, job_id: str, statuses: set[str]) -> dict:
    def reached() -> dict | None:
        body = client.get(f"{url}/status/{job_id}").json()
        return body if body.get("status") in statuses else None

    return wait_for(reached, 10, f"job {job_id} in {statuses}", interval=0.02)


@pytest.fixture(scope="module")
def server():
    app = QueueServer(echo, concurrency=2, retention=60.0, runsync_wait=5.0)
    with serve_asgi(app) as url, httpx.Client(timeout=15) as client:
        yield app, url, client


def test_runsync_returns_runpod_shape(server) -> None:
    _, url, client = server
    body = client.post(f"{url}/runsync", json={"input": {"a": 1}}).json()
    assert body["status"] == "COMPLETED" and body["output"] == {"echo": {"a": 1}}
    assert body["id"].startswith("sync-")
    assert isinstance(body["delayTime"], int) and isinstance(body["executionTime"], int)
    assert body["workerId"]


def test_run_then_status(server) -> None:
    _, url, client = server
    started = client.post(f"{url}/run", json={"input": {"sleep": 0.2}}).json()
    assert set(started) == {"id", "status"} and started["status"] in {"IN_QUEUE", "IN_PROGRESS"}
    done = wait_status(client, url, started["id"], {"COMPLETED"})
    assert done["output"] == {"echo": {"sleep": 0.2}} and done["executionTime"] >= 150


def test_runsync_wait_elapses_then_job_finishes(server) -> None:
    _, url, client = server
    body = client.post(f"{url}/runsync?wait=50", json={"input": {"sleep": 0.5}}).json()
    assert body["status"] == "IN_PROGRESS" and "output" not in body
    assert wait_status(client, url, body["id"], {"COMPLETED"})["output"]


@pytest.mark.parametrize("query", ["wait=50", "x=1&wait=50", "wait=50.0", "wait=5e1"])
def test_runsync_wait_is_read_in_any_query_shape(server, query: str) -> None:
    _, url, client = server
    body = client.post(f"{url}/runsync?{query}", json={"input": {"sleep": 0.5}}).json()
    assert body["status"] == "IN_PROGRESS", query
    wait_status(client, url, body["id"], {"COMPLETED"})


def test_error_key_fails_the_job_like_runpod(server) -> None:
    _, url, client = server
    body = client.post(f"{url}/runsync", json={"input": {"fail": True}}).json()
    assert body["status"] == "FAILED" and body["error"] == "asked to fail"
    assert body["output"] == {"detail": 1}


def test_handler_exception_and_unjsonable_output_fail_the_job_only(server) -> None:
    _, url, client = server
    body = client.post(f"{url}/runsync", json={"input": {"raise": True}}).json()
    assert body["status"] == "FAILED" and "handler broke" in body["error"]
    body = client.post(f"{url}/runsync", json={"input": {"unjsonable": True}}).json()
    assert body["status"] == "FAILED" and "JSON" in body["error"]
    assert client.post(f"{url}/runsync", json={"input": 1}).json()["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"not json", 400), (b"[1]", 400), (b'{"inputs": 1}', 400), (b"", 400)],
)
def test_bad_requests(server, body: bytes, status: int) -> None:
    _, url, client = server
    response = client.post(f"{url}/run", content=body)
    assert response.status_code == status and "error" in response.json()


def test_unknown_job_route_and_method(server) -> None:
    _, url, client = server
    assert client.get(f"{url}/status/nope").status_code == 404
    assert client.post(f"{url}/cancel/nope").status_code == 404
    assert client.get(f"{url}/elsewhere").status_code == 404
    assert client.get(f"{url}/run").status_code == 405


def test_endpoint_id_prefix_is_accepted(server) -> None:
    _, url, client = server
    body = client.post(f"{url}/v2/abc123/runsync", json={"input": 2}).json()
    assert body["status"] == "COMPLETED"
    assert client.get(f"{url}/v2/abc123/status/{body['id']}").json()["status"] == "COMPLETED"
    assert client.get(f"{url}/a/b/c/runsync").status_code == 404


def test_bounded_concurrency_queue_health_and_cancel(server) -> None:
    app, url, client = server
    ids = [client.post(f"{url}/run", json={"input": {"sleep": 1.0}}).json()["id"] for _ in range(4)]
    health = client.get(f"{url}/health").json()
    assert health["jobs"]["inProgress"] == 2 and health["jobs"]["inQueue"] == 2
    assert health["workers"]["running"] == 1
    # cancel one queued and one running job
    queued = client.post(f"{url}/cancel/{ids[3]}").json()
    running = client.post(f"{url}/cancel/{ids[0]}").json()
    assert queued["status"] == "CANCELLED" and running["status"] == "CANCELLED"
    assert wait_status(client, url, ids[2], {"COMPLETED"})
    assert client.get(f"{url}/status/{ids[0]}").json()["status"] == "CANCELLED"
    health = client.get(f"{url}/health").json()
    assert set(health["jobs"]) == {"completed", "failed", "inProgress", "inQueue", "retried"}
    assert set(health["workers"]) >= {"idle", "initializing", "ready", "running", "unhealthy"}


def test_purge_queue(server) -> None:
    _, url, client = server
    ids = [client.post(f"{url}/run", json={"input": {"sleep": 0.3}}).json()["id"] for _ in range(4)]
    assert client.post(f"{url}/purge-queue").json()["removed"] == 2
    assert client.get(f"{url}/status/{ids[3]}").json()["status"] == "CANCELLED"
    assert wait_status(client, url, ids[0], {"COMPLETED"})


def test_finished_jobs_are_dropped_after_retention() -> None:
    with serve_asgi(QueueServer(echo, retention=0.3)) as url, httpx.Client(timeout=10) as client:
        _check_retention(url, client)


def _check_retention(url: str, client: httpx.Client) -> None:
    job_id = client.post(f"{url}/runsync", json={"input": 3}).json()["id"]
    assert client.get(f"{url}/status/{job_id}").status_code == 200
    wait_for(
        lambda: client.get(f"{url}/status/{job_id}").status_code == 404,
        10,
        "the job dropped",
        interval=0.1,
    )


def test_execution_timeout_policy() -> None:
    app = QueueServer(echo, concurrency=1)
    with serve_asgi(app) as url, httpx.Client(timeout=10) as client:
        body = client.post(
            f"{url}/runsync", json={"input": {"sleep": 5}, "policy": {"executionTimeout": 100}}
        ).json()
        assert body["status"] == "TIMED_OUT" and "timeout" in body["error"]
        assert client.get(f"{url}/health").json()["jobs"]["failed"] == 1


def test_generic_handler_behind_the_queue_server() -> None:
    def divide(a: float, b: float) -> float:
        return a / b

    app = QueueServer(create_handler({"divide": divide}))
    with serve_asgi(app) as url, httpx.Client(timeout=10) as client:
        ok = client.post(
            f"{url}/runsync",
            json={"input": {"function_name": "divide", "args": serialize_args([1, 4])}},
        ).json()
        assert ok["status"] == "COMPLETED" and deserialize(ok["output"]["result"]) == 0.25
        bad = client.post(
            f"{url}/runsync",
            json={"input": {"function_name": "divide", "args": serialize_args([1, 0])}},
        ).json()
        assert bad["status"] == "FAILED" and "ZeroDivisionError" in bad["error"]
        assert "in divide" in bad["output"]["traceback"] and bad["output"]["success"] is False
        assert client.get(f"{url}/ping").status_code == 200


def test_runsync_job_can_be_cancelled_after_the_early_answer(server) -> None:
    _, url, client = server
    body = client.post(f"{url}/runsync?wait=50", json={"input": {"sleep": 5}}).json()
    assert body["status"] == "IN_PROGRESS"
    assert client.post(f"{url}/cancel/{body['id']}").json()["status"] == "CANCELLED"
    assert client.get(f"{url}/status/{body['id']}").json()["status"] == "CANCELLED"
    assert client.get(f"{url}/health").json()["jobs"]["inProgress"] == 0


def test_runsync_waits_in_the_queue_when_slots_are_busy() -> None:
    with serve_asgi(QueueServer(echo, concurrency=1)) as url, httpx.Client(timeout=10) as client:
        first = client.post(f"{url}/run", json={"input": {"sleep": 0.3}}).json()
        body = client.post(f"{url}/runsync", json={"input": {"n": 1}}).json()
        assert body["status"] == "COMPLETED" and body["output"] == {"echo": {"n": 1}}
        assert body["delayTime"] >= 100  # it waited for the first job's slot
        assert client.get(f"{url}/status/{first['id']}").json()["status"] == "COMPLETED"


def test_run_webhook_receives_the_final_status() -> None:
    received: list[dict] = []

    async def hook(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        received.append(json.loads(message["body"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve_asgi(hook, lifespan="off") as hook_url, serve_asgi(QueueServer(echo)) as url:
        job = httpx.post(f"{url}/run", json={"input": 5, "webhook": f"{hook_url}/done"}).json()
        wait_for(lambda: received, 10, "the webhook called", interval=0.02)
        assert received[0]["id"] == job["id"] and received[0]["status"] == "COMPLETED"
        assert received[0]["output"] == {"echo": 5}


def test_shutdown_fails_unfinished_jobs_and_the_next_server_tells(tmp_path) -> None:
    journal = tmp_path / "jobs.journal"
    app = QueueServer(echo, concurrency=1, journal=journal)
    with serve_asgi(app) as url, httpx.Client(timeout=10) as client:
        done = client.post(f"{url}/runsync", json={"input": 1}).json()["id"]
        kept = client.post(f"{url}/run", json={"input": 2}).json()["id"]
        wait_status(client, url, kept, {"COMPLETED"})
        running = client.post(f"{url}/run", json={"input": {"sleep": 60}}).json()["id"]
        queued = client.post(f"{url}/run", json={"input": 3}).json()["id"]
        wait_status(client, url, running, {"IN_PROGRESS"})
    assert app.jobs[queued].status == "FAILED" and app.jobs[queued].error == "worker shut down"
    assert app.jobs[running].status == "FAILED"
    assert journal.stat().st_mode & 0o777 == 0o600
    with serve_asgi(QueueServer(echo, journal=journal)) as url, httpx.Client() as client:
        for job_id, status in ((kept, "COMPLETED"), (running, "FAILED"), (queued, "FAILED")):
            body = client.get(f"{url}/status/{job_id}").json()
            assert body["status"] == status, body
        assert client.get(f"{url}/status/{queued}").json()["error"] == "worker shut down"
        # /runsync results are not carried over (their caller already had the answer).
        missing = client.get(f"{url}/status/{done}")
        assert missing.status_code == 404 and "previous worker" in missing.json()["error"]
    assert not journal.exists()  # consumed by the server that read it


def test_kept_results_evict_the_oldest_first() -> None:
    app = QueueServer(echo, limits=QueueLimits(max_result_bytes=300))
    with serve_asgi(app) as url, httpx.Client(timeout=10) as client:
        first = client.post(f"{url}/run", json={"input": "a" * 100}).json()["id"]
        wait_status(client, url, first, {"COMPLETED"})
        second = client.post(f"{url}/runsync", json={"input": "b" * 100}).json()["id"]
        third = client.post(f"{url}/runsync", json={"input": "c" * 100}).json()["id"]
        expired = client.get(f"{url}/status/{first}")
        assert expired.status_code == 404 and "expired" in expired.json()["error"]
        assert client.get(f"{url}/status/{second}").status_code == 200
        assert client.get(f"{url}/status/{third}").status_code == 200


def test_queue_limits_answer_429_with_retry_after() -> None:
    app = QueueServer(
        echo, concurrency=1, limits=QueueLimits(max_queue_jobs=1, max_queue_bytes=10_000)
    )
    with serve_asgi(app) as url, httpx.Client(timeout=10) as client:
        client.post(f"{url}/run", json={"input": {"sleep": 30}})
        client.post(f"{url}/run", json={"input": 1})
        full = client.post(f"{url}/runsync", json={"input": 2})
        assert full.status_code == 429 and full.headers["retry-after"] == "2"
        client.post(f"{url}/purge-queue")
        big = client.post(f"{url}/run", json={"input": "x" * 20_000})
        assert big.status_code == 429 and "10000 bytes" in big.json()["error"]
        assert app.health()["jobs"]["inQueue"] == 0
