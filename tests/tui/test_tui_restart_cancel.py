"""Pilot: `R` restarts the selected endpoint (a new worker that answers), and `escape` on the
progress cancels a deploy of several endpoints mid-way, on a real local cloud.

The cloud starts one endpoint at a time (FLASH_LOCALCLOUD_DEPLOY_CONCURRENCY=1) and the first
endpoint's worker waits for a port to listen, so the deploy has a middle to cancel in.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hosts import press_on_endpoint
from projectfiles import gated_project
from textual.widgets import Label
from waiting import until
from worker_harness import home_worker_pids

from engine.operations import Engine
from flash_tui.app import FlashApp
from flash_tui.screens.confirm import PlanScreen, RestartScreen


@pytest.fixture
def tui_home(cloud_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private home whose cloud starts one endpoint at a time; stopped afterwards."""
    monkeypatch.setenv("FLASH_LOCALCLOUD_DEPLOY_CONCURRENCY", "1")
    return cloud_home


def logged(app: FlashApp, text: str) -> bool:
    return any(text in record.text for record in app.logs)


async def test_restart_key_gives_a_new_worker(tmp_path: Path, tui_home: Path) -> None:
    project = gated_project(tmp_path / "p", ["alpha", "beta"], gated="", port=0)
    async with Engine(project) as engine:
        assert (await engine.deploy()).ok
    app = FlashApp(project, "local", watch=False)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(
            pilot,
            lambda: app.connected and app.state.statuses.get("alpha") is not None,
            60,
            "the deployed endpoints",
        )
        before = app.state.statuses["alpha"]
        assert before.status == "healthy" and before.pid

        # Nothing selected: it says so and changes nothing.
        app.dashboard.query_one("#log-pane").focus()
        await pilot.press("R")
        await pilot.pause()
        assert app.state.busy is None and not isinstance(app.screen, RestartScreen)

        await press_on_endpoint(pilot, "alpha", "R", RestartScreen, 10)
        # Escape: nothing restarted.
        await pilot.press("escape")
        await until(pilot, lambda: app.state.busy is None, 10, "the cancelled restart")
        assert app.state.statuses["alpha"].pid == before.pid

        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, RestartScreen), 10, "the dialog")
        await pilot.press("enter")  # Restart has the focus

        def restarted() -> bool:
            now = app.state.statuses["alpha"]
            return (
                app.state.busy is None
                and now.status == "healthy"
                and now.pid != before.pid
                and now.restarts == before.restarts + 1
            )

        await until(pilot, restarted, 60, "alpha restarted")
        events = " ".join(app.state.events.get("alpha", []))
        assert "restart starting" in events and "restart healthy" in events
        assert logged(app, "alpha restarted")
        assert app.state.statuses["beta"].pid in home_worker_pids(tui_home)
        assert home_worker_pids(tui_home) == {
            app.state.statuses["alpha"].pid,
            app.state.statuses["beta"].pid,
        }
    async with Engine(project) as engine:
        answer = await engine.invoke("work_alpha", {"x": 1})
        assert answer.ok and answer.result == 2


async def test_escape_cancels_a_deploy_midway(
    tmp_path: Path, tui_home: Path, gate: socket.socket
) -> None:
    project = gated_project(
        tmp_path / "p", ["alpha", "beta", "gamma"], gated="alpha", port=gate.getsockname()[1]
    )
    app = FlashApp(project, "local", watch=False)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1 and app.connected, 60, "scan, cloud")
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, PlanScreen), 60, "the plan")
        await pilot.press("enter")

        def starting() -> bool:
            return any("create starting" in e for e in app.state.events.get("alpha", []))

        await until(pilot, starting, 60, "alpha starting")
        keys = app.dashboard.query_one("#progress-keys", Label)
        assert "esc" in str(keys.render()) and "ctrl+c" in str(keys.render())
        await pilot.press("escape")
        # The cloud has it (no more endpoints start): only now may alpha become ready.
        await until(pilot, lambda: logged(app, "no more endpoints start"), 30, "the cancel")
        assert "cancelling" in str(keys.render())
        gate.listen()
        await until(pilot, lambda: app.state.busy is None, 60, "the deploy to end")
        assert logged(app, "beta, gamma not started")
        await until(
            pilot,
            lambda: (
                app.state.statuses.get("alpha") is not None
                and app.state.statuses["alpha"].status == "healthy"
            ),
            30,
            "alpha healthy",
        )
        assert app.state.statuses["beta"].status == "not_deployed"
        assert app.state.statuses["gamma"].status == "not_deployed"
        assert home_worker_pids(tui_home) == {app.state.statuses["alpha"].pid}
    async with Engine(project) as engine:
        deployed = await engine.provider.list_endpoints(engine.app)
        assert [(d.name, d.status) for d in deployed] == [("alpha", "healthy")]
        plan = await engine.plan()
        assert {i.name: i.action for i in plan.items} == {
            "alpha": "unchanged",
            "beta": "create",
            "gamma": "create",
        }


async def test_ctrl_c_cancels_a_build(tmp_path: Path) -> None:
    project = gated_project(tmp_path / "p", ["alpha", "beta"], gated="", port=0)
    app = FlashApp(project, "local", connect=False, watch=False)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1, 30, "the scan")
        # The build reports progress at each step; ctrl+c lands long before its last one
        # (the handlers' import check alone runs a Python process).
        await pilot.press("b", "ctrl+c")
        await until(pilot, lambda: app.state.busy is None, 60, "the build to stop")
        assert logged(app, "build cancelled — no new build was made")
        assert not (project / ".flash" / "archive.tar.gz").exists()
        # Nothing runs now: ctrl+c is the app's own key again (it does not cancel anything).
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.state.busy is None
