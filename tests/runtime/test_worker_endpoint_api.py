"""Real workers built from examples/endpoint_api (runpod_flash `Endpoint` style)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from worker_harness import Worker, build_example, serve_workers

from runtime.serialization import deserialize, serialize_args, serialize_kwargs


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Worker]]:
    build_dir: Path = build_example("endpoint_api", tmp_path_factory.mktemp("ep"))
    registry = tmp_path_factory.mktemp("reg") / "endpoints.json"
    with serve_workers(build_dir, ("summarizer", "tokenizer"), ("api",), registry) as started:
        yield started


def post(worker: Worker, path: str, body: object) -> httpx.Response:
    return httpx.post(worker.url + path, json=body, headers=worker.headers, timeout=30)


def test_routes(workers: dict[str, Worker]) -> None:
    api = workers["api"]
    assert httpx.get(api.url + "/health", headers=api.headers).json() == {"status": "ok"}
    assert post(api, "/echo", {"message": "hi", "times": "2"}).json() == {"echo": "hi hi"}
    r = post(api, "/echo", {"times": 2})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "message"]


def test_qb_function(workers: dict[str, Worker]) -> None:
    payload = {
        "input": {
            "function_name": "summarize",
            "args": serialize_args(["one two three four"]),
            "kwargs": serialize_kwargs({"max_words": 2}),
        }
    }
    body = post(workers["summarizer"], "/runsync", payload).json()
    assert deserialize(body["output"]["result"]) == {"summary": "one two", "dropped": 2}


def test_class_endpoint(workers: dict[str, Worker]) -> None:
    payload = {
        "input": {
            "function_name": "Tokenizer",
            "execution_type": "class",
            "constructor_kwargs": serialize_kwargs({"lowercase": False}),
            "method_name": "tokenize",
            "args": serialize_args(["A b C"]),
        }
    }
    body = post(workers["tokenizer"], "/runsync", payload).json()
    assert deserialize(body["output"]["result"]) == ["A", "b", "C"]


def test_route_calling_a_qb_endpoint(workers: dict[str, Worker]) -> None:
    body = post(workers["api"], "/summarize", {"text": "a b c d e", "max_words": 3}).json()
    assert body == {"summary": "a b c", "dropped": 2}
    workers["summarizer"].wait_for_output(lambda line: line.startswith("POST /runsync 200"))
