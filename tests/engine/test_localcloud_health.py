"""Health probes and the monitor against real HTTP servers on loopback (uvicorn in-process)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from engine.health import (
    HealthChange,
    HealthMonitor,
    HealthSample,
    fresh_until,
    probe_all,
    stale_age,
)
from engine.provider import EndpointTarget


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_app(state: dict[str, Any]) -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> Response:
        return Response(status_code=state["ping"])

    @app.get("/health")
    async def health(request: Request) -> Response:
        ok = request.headers.get("authorization") == "Bearer k"
        return Response(status_code=200 if ok else 401)

    return app


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    state: dict[str, Any] = {"ping": 200}
    port = free_port()
    config = uvicorn.Config(make_app(state), host="127.0.0.1", port=port, log_level="error")
    srv = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(srv.serve())
    for _ in range(500):  # deadline: 5 s
        if srv.started:
            break
        await asyncio.sleep(0.01)
    assert srv.started
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        srv.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def test_probe_lb_qb_and_unreachable(server: tuple[str, dict[str, Any]]) -> None:
    url, state = server
    dead = f"http://127.0.0.1:{free_port()}"
    samples = await probe_all(
        [
            EndpointTarget("lb", url, True, key=None),
            EndpointTarget("qb", url, False, key="k"),
            EndpointTarget("qb-wrong-key", url, False, key="nope"),
            EndpointTarget("dead", dead, True),
        ]
    )
    by_name = {s.endpoint: s for s in samples}
    assert by_name["lb"].ok and by_name["lb"].latency_ms is not None
    assert by_name["qb"].ok
    assert not by_name["qb-wrong-key"].ok and "401" in by_name["qb-wrong-key"].detail
    assert not by_name["dead"].ok and by_name["dead"].latency_ms is None
    assert "unreachable" in by_name["dead"].detail
    assert set(by_name["lb"].to_dict()) == {"ok", "latency_ms", "at"}
    state["ping"] = 204  # starting
    starting = (await probe_all([EndpointTarget("lb", url, True)]))[0]
    assert not starting.ok and "starting" in starting.detail


async def test_monitor_history_events_and_changes(server: tuple[str, dict[str, Any]]) -> None:
    url, state = server
    received: list[Any] = []
    targets = [EndpointTarget("api", url, True)]

    async def current() -> list[EndpointTarget]:
        return targets

    monitor = HealthMonitor(current, interval=0.02, history=3, on_event=received.append)
    stream = monitor.events()
    first = asyncio.ensure_future(stream.__anext__())
    monitor.start()
    try:
        assert isinstance(await asyncio.wait_for(first, 5), HealthSample)
        for _ in range(250):  # deadline: 5 s
            if len(received) >= 5:
                break
            await asyncio.sleep(0.02)
        assert len(monitor.history["api"]) == 3  # bounded
        assert monitor.latest("api") is not None and monitor.latest("api").ok
        state["ping"] = 500
        monitor.trigger()
        for _ in range(250):
            if any(isinstance(e, HealthChange) and not e.ok for e in received):
                break
            await asyncio.sleep(0.02)
        change = next(e for e in received if isinstance(e, HealthChange))
        assert change.endpoint == "api" and change.ok is False
        targets.clear()  # the endpoint was undeployed: its history goes
        await monitor.probe_now()
        assert "api" not in monitor.history
    finally:
        await monitor.stop()
        await stream.aclose()


async def _eventually(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_monitor_backs_off_healthy_endpoints_and_probes_failing_ones_at_full_rate(
    server: tuple[str, dict[str, Any]],
) -> None:
    url, _state = server
    dead = f"http://127.0.0.1:{free_port()}"
    targets = [EndpointTarget(f"ok{i}", url, True) for i in range(10)]
    targets.append(EndpointTarget("down", dead, True))
    counts: dict[str, int] = {}

    def count(event: Any) -> None:
        if isinstance(event, HealthSample):
            counts[event.endpoint] = counts.get(event.endpoint, 0) + 1

    async def current() -> list[EndpointTarget]:
        return targets

    monitor = HealthMonitor(current, interval=0.05, max_interval=0.4, max_rate=200, on_event=count)
    started = asyncio.get_running_loop().time()
    monitor.start()
    try:
        await _eventually(lambda: counts.get("down", 0) >= 24, "24 probes of the failing one")
        elapsed = asyncio.get_running_loop().time() - started
        # The healthy ones backed off to the slow interval; the failing one never does.
        assert all(monitor.probe_interval(f"ok{i}") == 0.4 for i in range(10))
        assert monitor.probe_interval("down") == 0.05
        assert max(counts[f"ok{i}"] for i in range(10)) <= counts["down"] // 2, counts
        # Never more than the rate allows (plus one burst).
        assert monitor.probes_sent <= 200 * elapsed + 200 * 0.05 + 1
        before = dict(counts)
        monitor.trigger()  # what `h` does: everything at the base rate again, now
        assert all(monitor.probe_interval(f"ok{i}") == 0.05 for i in range(10))
        await _eventually(
            lambda: all(counts[f"ok{i}"] > before[f"ok{i}"] for i in range(10)), "reprobed"
        )
    finally:
        await monitor.stop()


async def test_monitor_caps_probes_per_second_and_probes_preferred_endpoints_first(
    server: tuple[str, dict[str, Any]],
) -> None:
    url, _state = server
    targets = [EndpointTarget(f"e{i}", url, True) for i in range(40)]
    order: list[str] = []

    async def current() -> list[EndpointTarget]:
        return targets

    monitor = HealthMonitor(
        current,
        interval=0.1,
        max_rate=10,  # one probe per round of 0.1 s
        on_event=lambda e: order.append(e.endpoint) if isinstance(e, HealthSample) else None,
        prefer=lambda: {"e37", "e21"},
    )
    first = await monitor.probe_due()
    assert [s.endpoint for s in first] == ["e21"]  # on screen first; one round, one probe
    second = await monitor.probe_due()
    assert [s.endpoint for s in second] in ([], ["e37"])  # no token yet, or the next one
    started = asyncio.get_running_loop().time()
    monitor.start()
    try:
        await _eventually(lambda: len(order) >= 8, "8 probes")
        elapsed = asyncio.get_running_loop().time() - started
        assert "e37" in order[:3]
        assert len(order) <= 10 * elapsed + 3  # the cap (one burst of 1 plus the two above)
    finally:
        await monitor.stop()


def test_the_staleness_rule() -> None:
    """A sample is fresh until its next probe is due plus the probe's timeout; then stale,
    with its age counted from when it was taken."""
    until = fresh_until(100.0, every=5.0, timeout=2.0)
    assert until == 107.0
    assert stale_age(99.5, until, 107.0) is None  # due and answering: still current
    assert stale_age(99.5, until, 107.5) == 8.0
    assert stale_age(99.5, None, 1e9) is None  # no schedule known: never claimed stale


async def test_each_sample_is_fresh_until_its_own_next_probe(
    server: tuple[str, dict[str, Any]],
) -> None:
    """The monitor stamps each sample with the interval its endpoint is probed at now: a
    backed-off healthy endpoint's sample stays fresh longer than a failing one's."""
    url, _state = server
    dead = f"http://127.0.0.1:{free_port()}"
    targets = [EndpointTarget("ok", url, True), EndpointTarget("down", dead, True)]
    seen: list[HealthSample] = []

    async def current() -> list[EndpointTarget]:
        return targets

    monitor = HealthMonitor(current, interval=0.05, max_interval=0.4, max_rate=200, timeout=1.0)
    monitor.on_event = lambda e: seen.append(e) if isinstance(e, HealthSample) else None
    monitor.start()
    try:
        await _eventually(lambda: monitor.probe_interval("ok") == 0.4, "ok backed off")
    finally:
        await monitor.stop()
    for sample in seen:
        assert sample.fresh_until is not None
    ok = [s for s in seen if s.endpoint == "ok"]
    down = [s for s in seen if s.endpoint == "down"]
    # answered after it was taken, fresh for its interval plus the timeout
    assert all(s.at + 0.05 + 1.0 <= s.fresh_until for s in ok + down)
    last = ok[-1]
    assert last.fresh_until - last.at >= 0.4 + 1.0  # the backed-off interval
    # one-off probes are fresh for the interval asked
    (single,) = await probe_all([targets[0]], timeout=1.0, every=30.0)
    assert single.fresh_until is not None and single.fresh_until >= single.at + 31.0


async def test_stop_ends_the_monitor_even_when_a_round_loses_the_cancel() -> None:
    class Swallowing(HealthMonitor):
        """A probe round that loses one cancel, as HTTP stacks and Python 3.11's wait_for
        have done: the loop must still end when the monitor is stopped."""

        lost = 0

        async def probe_due(self) -> list[HealthSample]:
            try:
                await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                self.lost += 1
            return []

    async def no_targets() -> list[EndpointTarget]:
        return []

    monitor = Swallowing(no_targets, interval=0.01)
    task = monitor.start()
    await asyncio.sleep(0.05)  # inside a round
    await asyncio.wait_for(monitor.stop(), 5)
    assert task.done() and monitor.lost == 1
