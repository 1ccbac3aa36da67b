"""Real worker processes built from examples/quickstart: QB, LB, classes, cross-endpoint calls.

Four workers (cpu_worker, gpu_worker, api, gateway) start once for the module; gateway finds
the QB workers through a FLASH_ENDPOINTS_FILE, so /pipeline crosses three processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from waiting import wait_for
from worker_harness import Worker, build_example, serve_workers

from runtime.serialization import deserialize, serialize_args, serialize_kwargs


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_example("quickstart", tmp_path_factory.mktemp("qs"))


@pytest.fixture(scope="module")
def workers(
    build_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Worker]]:
    registry = tmp_path_factory.mktemp("reg") / "endpoints.json"
    callees = ("cpu_worker", "gpu_worker", "api")
    with serve_workers(build_dir, callees, ("gateway",), registry) as started:
        yield started


def call(worker: Worker, method: str, path: str, **kwargs: object) -> httpx.Response:
    headers = {**worker.headers, **dict(kwargs.pop("headers", None) or {})}  # type: ignore[call-overload]
    return httpx.request(method, worker.url + path, headers=headers, timeout=30, **kwargs)


def qb_input(function_name: str, *args: object, **kwargs: object) -> dict:
    return {
        "input": {
            "function_name": function_name,
            "execution_type": "function",
            "args": serialize_args(args),
            "kwargs": serialize_kwargs(kwargs),
        }
    }


def test_each_lb_route_answers(workers: dict[str, Worker]) -> None:
    api, gateway = workers["api"], workers["gateway"]
    assert call(api, "GET", "/health").json()["status"] == "ok"
    assert call(api, "GET", "/greet", params={"name": "Flash"}).json() == {
        "message": "Hello, Flash!"
    }
    computed = call(api, "POST", "/compute", json={"numbers": [1, 2, 3], "scale": 2}).json()
    assert computed == {"count": 3, "sum": 12.0, "max": 6.0}
    stats = call(gateway, "POST", "/stats", json={"text": "the cat and the hat"}).json()
    assert stats == {"words": 5, "chars": 19, "unique": 4}


def test_qb_runsync(workers: dict[str, Worker]) -> None:
    body = call(
        workers["cpu_worker"], "POST", "/runsync", json=qb_input("word_stats", "a b a")
    ).json()
    assert body["status"] == "COMPLETED"
    assert deserialize(body["output"]["result"]) == {"words": 3, "chars": 5, "unique": 2}


def test_qb_run_then_status(workers: dict[str, Worker]) -> None:
    gpu = workers["gpu_worker"]
    started = call(gpu, "POST", "/run", json=qb_input("embed", "hello world", dims=4)).json()
    assert started["status"] in {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}

    def completed() -> dict[str, Any] | None:
        body = call(gpu, "GET", f"/status/{started['id']}").json()
        return body if body["status"] == "COMPLETED" else None

    body = wait_for(completed, 10, "the job completed", interval=0.02)
    result = deserialize(body["output"]["result"])
    assert result["dims"] == 4 and len(result["vector"]) == 4


def test_async_qb_function_is_awaited(workers: dict[str, Worker]) -> None:
    body = call(
        workers["cpu_worker"], "POST", "/runsync", json=qb_input("preprocess", "  Hello   World ")
    ).json()
    assert deserialize(body["output"]["result"]) == {
        "text": "hello world",
        "words": ["hello", "world"],
    }


def test_class_endpoint(workers: dict[str, Worker]) -> None:
    payload = {
        "input": {
            "function_name": "TextAnalyzer",
            "execution_type": "class",
            "args": serialize_args([["x"]]),
            "method_name": "keywords",
            "method_args": serialize_args(["x y y z z z the"]),
            "method_kwargs": serialize_kwargs({"top": 2}),
        }
    }
    body = call(workers["cpu_worker"], "POST", "/runsync", json=payload).json()
    assert deserialize(body["output"]["result"]) == ["z", "y"]


def test_cross_endpoint_pipeline_spans_three_processes(workers: dict[str, Worker]) -> None:
    gateway = workers["gateway"]
    r = call(gateway, "POST", "/pipeline", json={"text": "  Flash  Runs Here ", "dims": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "flash runs here" and body["words"] == 3
    assert body["embedding"]["dims"] == 4 and len(body["embedding"]["vector"]) == 4
    # the calls really went to the QB workers
    for name in ("cpu_worker", "gpu_worker"):
        workers[name].wait_for_output(lambda line: line.startswith("POST /runsync 200"))


def test_cross_endpoint_class_instance_runs_on_its_endpoint(workers: dict[str, Worker]) -> None:
    # gateway's /keywords creates a TextAnalyzer; it lives on cpu_worker, a class job there.
    r = call(workers["gateway"], "POST", "/keywords", json={"text": "b a b c c c", "top": 2})
    assert r.status_code == 200, r.text
    assert r.json() == {"keywords": ["c", "b"]}
    workers["cpu_worker"].wait_for_output(lambda line: line.startswith("POST /runsync 200"))


def test_remote_failure_surfaces_with_the_remote_traceback(workers: dict[str, Worker]) -> None:
    # embed(dims=0) divides by zero on gpu_worker; the gateway route reports it.
    r = call(
        workers["gateway"],
        "POST",
        "/pipeline",
        json={"text": "x", "dims": 0},
        headers={**workers["gateway"].headers, "x-flash-traceback": "1"},
    )
    assert r.status_code == 500
    body = r.json()
    assert "RemoteExecutionError" in body["error"] and "ZeroDivisionError" in body["error"]
    assert "gpu_worker" in body["error"] and "in embed" in body["error"]


def test_qb_function_that_raises_gives_structured_error_and_worker_keeps_serving(
    workers: dict[str, Worker],
) -> None:
    gpu = workers["gpu_worker"]
    body = call(gpu, "POST", "/runsync", json=qb_input("embed", "x", dims=0)).json()
    assert body["status"] == "FAILED" and "ZeroDivisionError" in body["error"]
    assert body["output"]["success"] is False and "in embed" in body["output"]["traceback"]
    ok = call(gpu, "POST", "/runsync", json=qb_input("embed", "x", dims=2)).json()
    assert ok["status"] == "COMPLETED"
    health = call(gpu, "GET", "/health").json()
    assert health["jobs"]["failed"] >= 1 and health["jobs"]["completed"] >= 1


def test_401_without_the_key(workers: dict[str, Worker]) -> None:
    for worker in workers.values():
        assert httpx.get(worker.url + "/ping").status_code == 200
    assert httpx.get(workers["api"].url + "/greet").status_code == 401
    assert httpx.post(workers["cpu_worker"].url + "/runsync", json={"input": {}}).status_code == 401
    wrong = {"Authorization": "Bearer key-api"}  # another endpoint's key
    assert (
        httpx.post(workers["gateway"].url + "/stats", json={"text": "x"}, headers=wrong).status_code
        == 401
    )


def test_execute_only_on_the_live_lb(workers: dict[str, Worker]) -> None:
    assert (
        call(workers["gateway"], "POST", "/execute", json={"function_name": "stats"}).status_code
        == 404
    )
    r = call(
        workers["api"],
        "POST",
        "/execute",
        json={"function_name": "compute", "args": serialize_args([[2.0, 4.0]])},
    ).json()
    assert r["success"] and deserialize(r["result"])["sum"] == 6.0


def test_bad_bodies_give_422_naming_the_field(workers: dict[str, Worker]) -> None:
    r = call(workers["api"], "POST", "/compute", json={"scale": 2})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "numbers"]
    r = call(workers["gateway"], "POST", "/pipeline", json={"text": "x", "extra": 1})
    assert r.status_code == 422 and "'extra'" in r.json()["error"]


def test_manifest_is_403_off_the_mothership(workers: dict[str, Worker]) -> None:
    assert call(workers["gateway"], "GET", "/manifest").status_code == 403


def test_request_log_lines_and_no_key_in_output(workers: dict[str, Worker]) -> None:
    api = workers["api"]
    call(api, "GET", "/greet", params={"name": "log"})
    line = api.wait_for_output(lambda s: s.startswith("GET /greet 200 "))
    method, path, status, ms = line.split(" ")
    assert ms.endswith("ms") and float(ms[:-2]) >= 0
    for worker in workers.values():
        text = "\n".join(worker.stdout + worker.stderr)
        assert worker.key not in text


def test_sigterm_shuts_down_within_5_seconds(build_dir: Path) -> None:
    worker = Worker(build_dir, "api")
    try:
        worker.wait_ready()
        started = time.monotonic()
        code = worker.stop(timeout=10)
        assert time.monotonic() - started < 5.0 and code == 0
    finally:
        worker.stop()
