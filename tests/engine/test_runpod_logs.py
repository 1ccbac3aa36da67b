"""engine.runpod.logs against the fake data plane: REST v2 worker list and SSE worker logs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fakes.dataplane_harness import ACCOUNT_KEY, Plane, artifact, image, serving
from fakes.runpod_dataplane import EndpointView
from waiting import wait_for

from engine.provider import ProviderError
from engine.runpod.logs import follow_logs, list_workers, read_logs
from runtime.logline import parse_line

HANDLER = """
def handler(job):
    print("handled", job["input"]["tag"], flush=True)
    return {"ok": True}
"""


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    with serving(tmp_path / "plane") as harness:
        yield harness


@pytest.fixture
def endpoint(plane: Plane, tmp_path: Path) -> EndpointView:
    view = EndpointView(
        id="qblogs0001",
        name="logs",
        type="QB",
        env={"FLASH_RESOURCE_NAME": "logs"},
        image_name=image("runpod/flash-cpu"),
        workers_min=1,
        workers_max=1,
        ai_key="aikey-logs-0001",
        artifact=artifact(tmp_path / "logs.tar.gz", {"handler_logs.py": HANDLER}),
    )
    plane.apply(view)
    return view


def run(plane: Plane, endpoint: EndpointView, tag: str) -> None:
    answer = plane.http.post(
        f"/v2/{endpoint.id}/runsync",
        json={"input": {"tag": tag}},
        headers=plane.headers(endpoint.id),
    )
    assert answer.json()["status"] == "COMPLETED", answer.text


def test_workers_and_recent_lines_in_the_stamped_format(
    plane: Plane, endpoint: EndpointView
) -> None:
    run(plane, endpoint, "first-job")
    api = f"{plane.server.url}/api"

    async def scenario() -> tuple[list, list[str]]:
        async with httpx.AsyncClient(timeout=30) as http:
            workers = await list_workers(http, api, ACCOUNT_KEY, endpoint.id)
            lines = await read_logs(http, api, ACCOUNT_KEY, endpoint.id, 500)
        return workers, lines

    (worker,), lines = asyncio.run(scenario())
    assert worker.id == plane.plane.workers(endpoint.id)[0].id
    assert worker.status in ("IDLE", "RUNNING") and worker.image == endpoint.image_name
    parsed = [parse_line(line) for line in lines]
    assert all(at is not None for at, _stream, _text in parsed)
    assert [at for at, _s, _t in parsed] == sorted(at for at, _s, _t in parsed)
    assert any(s == "out" and t == "handled first-job" for _a, s, t in parsed)
    assert any(s == "flash" and "starting" in t for _a, s, t in parsed)  # the platform's line

    # `lines` is the number asked for: the last ones
    async def last_two() -> list[str]:
        async with httpx.AsyncClient(timeout=30) as http:
            return await read_logs(http, api, ACCOUNT_KEY, endpoint.id, 2)

    assert asyncio.run(last_two()) == lines[-2:]


def test_follow_gives_history_then_live_lines(plane: Plane, endpoint: EndpointView) -> None:
    run(plane, endpoint, "before")
    api = f"{plane.server.url}/api"
    seen: list[str | float] = []

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            stream = follow_logs(http, api, ACCOUNT_KEY, endpoint.id, 50, marks=True)
            try:
                async for item in stream:
                    seen.append(item)
                    if isinstance(item, float) and not any("handled live" in str(s) for s in seen):
                        if not any(isinstance(s, float) for s in seen[:-1]):
                            await asyncio.to_thread(run, plane, endpoint, "live")
                    if isinstance(item, str) and item.endswith("handled live"):
                        return
            finally:
                await stream.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    texts = [parse_line(s)[2] for s in seen if isinstance(s, str)]
    first_mark = next(i for i, s in enumerate(seen) if isinstance(s, float))
    history = [parse_line(s)[2] for s in seen[:first_mark] if isinstance(s, str)]
    assert "handled before" in history and "handled live" not in history
    assert texts[-1] == "handled live"


def test_a_refused_key_is_one_message_without_the_key(plane: Plane, endpoint: EndpointView) -> None:
    api = f"{plane.server.url}/api"
    wrong = "rpa_WRONG_KEY_never_printed_123"

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            await read_logs(http, api, wrong, endpoint.id, 10)

    with pytest.raises(ProviderError) as raised:
        asyncio.run(scenario())
    assert "401" in str(raised.value) and wrong not in str(raised.value)


def test_the_stream_resumes_after_last_event_id(plane: Plane, endpoint: EndpointView) -> None:
    run(plane, endpoint, "one")
    run(plane, endpoint, "two")
    (worker,) = plane.plane.workers(endpoint.id)
    wait_for(lambda: sum("handled" in r.line for r in worker.lines()) == 2, timeout=30)
    url = f"/api/v2/serverless/{endpoint.id}/workers/{worker.id}/logs"
    headers = {"Authorization": f"Bearer {ACCOUNT_KEY}"}

    def events(extra: dict[str, str]) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        with plane.http.stream("GET", url, headers={**headers, **extra}) as response:
            event_id = ""
            for line in response.iter_lines():
                if line.startswith(": live"):
                    return found
                if line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("data:"):
                    found.append((event_id, line))
        return found

    everything = events({})
    index = next(i for i, (_id, data) in enumerate(everything) if "handled one" in data)
    resumed = events({"Last-Event-ID": everything[index][0]})
    # the worker keeps logging: the resumed stream may have more at its end
    assert resumed[: len(everything) - index - 1] == everything[index + 1 :]
    assert any("handled two" in data for _id, data in resumed)


def test_429_waits_for_retry_after_and_5xx_is_retried(plane: Plane, endpoint: EndpointView) -> None:
    run(plane, endpoint, "faulty")
    api = f"{plane.server.url}/api"
    workers_path = f"/api/v2/serverless/{endpoint.id}/workers"
    plane.fail_next(workers_path, 429, retry_after="1")
    plane.fail_next(f"{workers_path}/", 503, times=2)  # the log streams

    async def scenario() -> list[str]:
        async with httpx.AsyncClient(timeout=30) as http:
            return await read_logs(http, api, ACCOUNT_KEY, endpoint.id, 100)

    lines = asyncio.run(scenario())
    assert any(line.endswith("out handled faulty") for line in lines)
    assert plane.faulted[0] == workers_path and len(plane.faulted) == 3

    plane.fail_next(workers_path, 503, times=50)
    with pytest.raises(ProviderError) as raised:
        asyncio.run(scenario())
    assert "HTTP 503" in str(raised.value)
    plane.faults.clear()
    plane.fail_next(f"{workers_path}/", 502, times=50)  # every log stream: an error, not []
    with pytest.raises(ProviderError) as raised:
        asyncio.run(scenario())
    assert "HTTP 502 for a worker's log" in str(raised.value)
