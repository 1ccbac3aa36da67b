"""Restarting one endpoint and cancelling a deploy mid-way, on a real local cloud with real
workers: a restart gives a new process that answers; a cancelled deploy leaves the endpoints it
started deployed and healthy, the others as they were, and the next plan shows the rest."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import psutil
import pytest
from projectfiles import gated_project
from waiting import eventually
from worker_harness import home_worker_pids

from engine.operations import Engine, OpError, OpEvent


@pytest.fixture
def home(cloud_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private home whose cloud starts one endpoint at a time (so a deploy has a middle)."""
    monkeypatch.setenv("FLASH_LOCALCLOUD_DEPLOY_CONCURRENCY", "1")
    return cloud_home


async def test_restart_starts_a_new_worker_that_answers(tmp_path: Path, home: Path) -> None:
    project = gated_project(tmp_path / "p", ["alpha"], gated="", port=0)
    async with Engine(project) as engine:
        assert (await engine.deploy()).ok
        (before,) = await engine.status(probe=False)
        assert before.status == "healthy" and before.pid
        events: list[OpEvent] = []
        result = await engine.restart("alpha", on_event=events.append)
        assert result.ok and result.action == "restart", result
        (after,) = await engine.status(probe=False)
        assert after.pid != before.pid and after.status == "healthy"
        assert after.restarts == before.restarts + 1
        assert not psutil.pid_exists(before.pid) or psutil.Process(before.pid).status() == "zombie"
        assert home_worker_pids(home) == {after.pid}
        steps = [e.state for e in events if e.step == "endpoint"]
        assert steps == ["stopping", "starting", "healthy"]
        answer = await engine.invoke("work_alpha", {"x": 41})
        assert answer.ok and answer.result == 42, answer
        assert any(e.kind == "restarted" and e.endpoint == "alpha" for e in await engine.events())


async def test_restart_of_an_endpoint_not_deployed_says_so(tmp_path: Path, home: Path) -> None:
    project = gated_project(tmp_path / "p", ["alpha"], gated="", port=0)
    async with Engine(project) as engine:
        with pytest.raises(OpError, match="not deployed: beta"):
            await engine.restart("beta")


async def test_cancelled_deploy_keeps_what_it_started_and_plans_the_rest(
    tmp_path: Path, home: Path, gate: socket.socket
) -> None:
    port = gate.getsockname()[1]
    project = gated_project(tmp_path / "p", ["alpha", "beta", "gamma"], gated="alpha", port=port)
    async with Engine(project) as engine:
        cancel = asyncio.Event()
        events: list[OpEvent] = []

        def on_event(event: OpEvent) -> None:
            events.append(event)
            if event.name == "alpha" and event.state == "starting":
                cancel.set()  # alpha is starting (held by the gate), beta and gamma wait

        task = asyncio.create_task(engine.deploy(cancel=cancel, on_event=on_event))
        await eventually(lambda: any(e.step == "cancelling" for e in events), 120, "the cancel")
        gate.listen()  # alpha may now become ready
        report = await asyncio.wait_for(task, 120)

        assert report.interrupted and not report.cancelled
        assert sorted(report.not_started()) == ["beta", "gamma"]
        results = {r.name: r for r in report.outcome.results} if report.outcome else {}
        assert results["alpha"].ok and results["alpha"].action == "create"
        deployed = await engine.provider.list_endpoints(engine.app)
        assert [(d.name, d.status) for d in deployed] == [("alpha", "healthy")]
        # Every worker process is the store's: only alpha's runs.
        assert home_worker_pids(home) == {deployed[0].pid}
        assert report.to_dict()["interrupted"] is True

        plan = await engine.plan()
        assert {i.name: i.action for i in plan.items} == {
            "alpha": "unchanged",
            "beta": "create",
            "gamma": "create",
        }
        rest = await engine.deploy()
        assert rest.ok and not rest.interrupted
        assert sorted(r.name for r in rest.outcome.results if r.action == "create") == [
            "beta",
            "gamma",
        ]


async def test_cancelled_update_leaves_the_old_worker_and_record(
    tmp_path: Path, home: Path, gate: socket.socket
) -> None:
    project = gated_project(tmp_path / "p", ["alpha", "beta"], gated="", port=0)
    async with Engine(project) as engine:
        assert (await engine.deploy()).ok
        old = {d.name: d for d in await engine.provider.list_endpoints(engine.app)}
        # alpha's new code waits for the gate; beta's config changes.
        port = gate.getsockname()[1]
        gated_project(project, ["alpha"], gated="alpha", port=port)
        beta = project / "beta.py"
        beta.write_text(beta.read_text().replace("workersMax=1", "workersMax=3"))
        cancel = asyncio.Event()
        events: list[OpEvent] = []

        def on_event(event: OpEvent) -> None:
            events.append(event)
            if event.name == "alpha" and event.state == "starting":
                cancel.set()

        task = asyncio.create_task(engine.deploy(cancel=cancel, on_event=on_event))
        await eventually(lambda: any(e.step == "cancelling" for e in events), 120, "the cancel")
        gate.listen()
        report = await asyncio.wait_for(task, 120)

        assert report.not_started() == ["beta"]
        now = {d.name: d for d in await engine.provider.list_endpoints(engine.app)}
        assert now["alpha"].status == "healthy" and now["alpha"].pid != old["alpha"].pid
        # beta: the record it had, and the very worker that had it.
        assert now["beta"].pid == old["beta"].pid and now["beta"].status == "healthy"
        assert now["beta"].config_hash == old["beta"].config_hash
        assert now["beta"].config == old["beta"].config
        # alpha's old worker drains after the switch (blue/green), then goes.
        wanted = {now["alpha"].pid, now["beta"].pid}
        await eventually(lambda: home_worker_pids(home) == wanted, 30, "the old alpha to stop")
        plan = await engine.plan()
        assert {i.name: i.action for i in plan.items} == {"alpha": "unchanged", "beta": "update"}


def test_a_cancelled_build_stops_and_is_not_current(tmp_path: Path) -> None:
    """Cancelled at its copy step (the build directory half-synced), a build leaves no new
    archive, and what `.flash/` holds is not taken as the current build."""
    from engine.build import build_is_fresh, current_build
    from engine.build_step import BuildCancelled, stop_when
    from engine.scan import scan_project

    project = gated_project(tmp_path / "p", ["alpha", "beta"], gated="", port=0)
    first = current_build(project).ref  # a complete build of the code as it was
    (project / "beta.py").write_text(
        (project / "beta.py").read_text().replace("return x + 1", "return x + 2")
    )
    archived = first.archive.stat().st_mtime_ns
    steps: list[str] = []

    def cancelled() -> bool:
        return "copy" in steps

    with pytest.raises(BuildCancelled):
        current_build(project, on_progress=stop_when(cancelled, lambda p: steps.append(p.step)))
    assert steps and steps[-1] == "copy"
    assert first.archive.stat().st_mtime_ns == archived  # no new archive
    manifest = dict(scan_project(project).manifest)
    assert not build_is_fresh(project, manifest)
    assert current_build(project, manifest).ref.build_id != first.build_id


async def test_deploy_cancelled_during_its_build_changes_nothing(
    tmp_path: Path, home: Path
) -> None:
    project = gated_project(tmp_path / "p", ["alpha"], gated="", port=0)
    async with Engine(project) as engine:
        cancel = asyncio.Event()

        def on_event(event: OpEvent) -> None:
            if event.build_step:  # the build is under way: cancel it
                cancel.set()

        report = await engine.deploy(cancel=cancel, on_event=on_event)
        assert report.cancelled and report.outcome is None
        assert await engine.provider.list_endpoints(engine.app) == []
        assert home_worker_pids(home) == set()
