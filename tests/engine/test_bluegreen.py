"""Blue/green updates on a real local cloud with real workers: callers calling an endpoint in a
loop while it is updated see no error and then the new code; a new version that cannot start
leaves the old worker serving, its record as before plus why, and the next deploy retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from projectfiles import write_files
from waiting import eventually
from worker_harness import home_worker_pids

from engine.operations import Engine
from engine.status import EndpointStatus

_ALPHA = """
from tetra_rp import CpuLiveServerless, remote

config = CpuLiveServerless(name="alpha", workersMin=0, workersMax=1)


@remote(config)
async def work_alpha(x: int) -> int:
    return x + {step}
"""
# Broken where the build's import check cannot see it: only in a deployed worker.
_BROKEN = _ALPHA.replace(
    "from tetra_rp",
    "import os\n\nif os.environ.get('FLASH_ENDPOINT_KEY'):\n"
    "    raise RuntimeError('broken at import')\n\nfrom tetra_rp",
)


@pytest.fixture
def home(cloud_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own home (`cloud_home`); replaced workers drain briefly (tests wait for them)."""
    monkeypatch.setenv("FLASH_LOCALCLOUD_DRAIN_GRACE", "0.5")
    return cloud_home


def write_alpha(project: Path, text: str, step: int) -> None:
    write_files(project, {"alpha.py": text.replace("{step}", str(step))})


@asynccontextmanager
async def alpha_deployed(tmp_path: Path) -> AsyncIterator[tuple[Path, Engine, EndpointStatus]]:
    """The alpha project (step 1) deployed by an engine: its folder, the engine, alpha's status."""
    project = tmp_path / "p"
    write_alpha(project, _ALPHA, 1)
    async with Engine(project) as engine:
        assert (await engine.deploy()).ok
        (before,) = await engine.status(probe=False)
        yield project, engine, before


async def test_callers_see_no_gap_while_an_update_switches_workers(
    tmp_path: Path, home: Path
) -> None:
    async with alpha_deployed(tmp_path) as (project, engine, before):
        call = await engine.resolve("work_alpha")
        answers: list[object] = []
        errors: list[str] = []
        stop = asyncio.Event()

        async def caller() -> None:
            # Each call reads the endpoint's address afresh, as every client of the engine does.
            while not stop.is_set():
                try:
                    result = await engine.invoke(call, {"x": 1}, timeout=30)
                except Exception as exc:  # any failure is what this test is about
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if result.ok:
                    answers.append(result.result)
                else:
                    errors.append(str(result.error))

        callers = [asyncio.create_task(caller()) for _ in range(3)]
        await eventually(lambda: len(answers) >= 5, 30, "answers from the old worker")
        write_alpha(project, _ALPHA, 2)
        report = await engine.deploy()
        assert report.ok, report
        assert report.plan.names("update") == ["alpha"]
        seen = len(answers)
        await eventually(lambda: len(answers) >= seen + 10, 30, "answers after the switch")
        stop.set()
        await asyncio.gather(*callers)

        assert errors == []
        assert set(answers) == {2, 3}, set(answers)
        assert answers[-1] == 3
        (after,) = await engine.status(probe=False)
        assert after.status == "healthy" and after.pid != before.pid
        assert after.url != before.url and after.last_error is None
        # The old worker drains, then goes: only the new one is left.
        await eventually(
            lambda: home_worker_pids(home) == {after.pid}, 30, "the old worker to stop"
        )
        assert any(e.kind == "updated" and e.endpoint == "alpha" for e in await engine.events())


async def test_a_broken_update_leaves_the_old_worker_serving(tmp_path: Path, home: Path) -> None:
    async with alpha_deployed(tmp_path) as (project, engine, before):
        write_alpha(project, _BROKEN, 2)
        report = await engine.deploy()
        assert not report.ok
        (failed,) = report.outcome.failed() if report.outcome else []
        assert "previous version keeps serving" in (failed.error or ""), failed
        assert "broken at import" in (failed.error or ""), failed

        answer = await engine.invoke("work_alpha", {"x": 1})
        assert answer.ok and answer.result == 2, answer
        (kept,) = await engine.status(probe=False)
        assert kept.pid == before.pid and kept.url == before.url
        assert kept.status == "healthy", kept
        assert "broken at import" in (kept.last_error or ""), kept
        # The broken worker was stopped: only the old one runs.
        await eventually(
            lambda: home_worker_pids(home) == {before.pid}, 30, "the new worker to stop"
        )
        kinds = [e.kind for e in await engine.events() if e.endpoint == "alpha"]
        assert "deploy_failed" in kinds

        # The record still describes the old code, so the fixed version is an update again.
        write_alpha(project, _ALPHA, 3)
        plan = await engine.plan()
        assert {i.name: i.action for i in plan.items} == {"alpha": "update"}
        assert (await engine.deploy()).ok
        answer = await engine.invoke("work_alpha", {"x": 1})
        assert answer.ok and answer.result == 4, answer
        (fixed,) = await engine.status(probe=False)
        assert fixed.last_error is None and fixed.pid != before.pid


async def test_removing_an_endpoint_stops_its_draining_worker_at_once(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A grace far longer than the wait below: only the removal can have stopped it.
    monkeypatch.setenv("FLASH_LOCALCLOUD_DRAIN_GRACE", "300")
    async with alpha_deployed(tmp_path) as (project, engine, before):
        write_alpha(project, _ALPHA, 2)
        assert (await engine.deploy()).ok
        (after,) = await engine.status(probe=False)
        assert home_worker_pids(home) == {before.pid, after.pid}  # the old one drains
        assert (await engine.undeploy()).ok
        await eventually(lambda: home_worker_pids(home) == set(), 30, "both workers to stop")


def test_a_crash_recorded_during_a_failed_update_is_kept(tmp_path: Path) -> None:
    """An update that fails (or is cancelled) puts the record back, but a crash of the old
    worker recorded meanwhile stays: the endpoint is not `healthy` with no worker behind it."""
    from engine.localcloud.bluegreen import restore_record
    from engine.localcloud.store import Store

    store = Store(tmp_path / "cloud.db")
    store.upsert_endpoint("app", "alpha", status="healthy", restarts=0, crash_times=[], port=1)
    previous = store.get_endpoint("app", "alpha")
    assert previous is not None
    store.upsert_endpoint("app", "alpha", status="deploying")  # the update starts
    store.upsert_endpoint(  # the old worker crashes for good while the new one starts
        "app", "alpha", status="failed", pid=None, crash_times=[1.0], last_error="segfault"
    )
    restore_record(store, "app", "alpha", previous, "the update failed")
    record = store.get_endpoint("app", "alpha")
    assert record is not None
    assert (record["status"], record["last_error"]) == ("failed", "segfault")
    # Without a crash in between, the record is the old one with the reason.
    store.upsert_endpoint("app", "alpha", status="deploying")
    restore_record(store, "app", "alpha", {**previous, "status": "healthy"}, "the update failed")
    record = store.get_endpoint("app", "alpha")
    assert record is not None
    assert (record["status"], record["last_error"]) == ("healthy", "the update failed")
