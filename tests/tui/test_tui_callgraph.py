"""Pilot: the call graph in the detail pane and the plan's call-graph warnings in the dialogs.

A real local cloud and real workers: a gateway calling `process` on a CPU worker. Deploying the
gateway alone warns in the plan dialog (its callee is not deployed); once both are deployed,
undeploying the worker warns in the undeploy dialog (the gateway stays and calls it).
"""

from __future__ import annotations

from pathlib import Path

from hosts import press_on_endpoint
from projectfiles import CALLS_PROJECT, write_files
from textual.widgets import Static
from waiting import until

from flash_tui.app import FlashApp
from flash_tui.screens.confirm import PlanScreen, UndeployScreen
from flash_tui.widgets.dashboard.detail_pane import DetailPane
from flash_tui.widgets.dashboard.manifest_tree import ManifestTree


def _detail(app: FlashApp) -> str:
    return " ".join(app.dashboard.query_one(DetailPane).plain_text().split())


def _warnings_shown(app: FlashApp) -> str:
    found = app.screen.query("#plan-warnings")
    return " ".join(str(found.first(Static).render()).split()) if found else ""


async def test_calls_in_the_detail_pane_and_warnings_in_the_dialogs(
    tmp_path: Path, cloud_home: Path
) -> None:
    project = write_files(tmp_path / "callsapp", CALLS_PROJECT)
    app = FlashApp(project, "local", watch=False)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1 and app.connected, 60, "scan and cloud")
        tree = app.dashboard.query_one(ManifestTree)

        # The detail pane: calls / called by.
        assert tree.move_to(("endpoint", "gateway")) is not None
        await until(pilot, lambda: "calls: cpu_worker (process)" in _detail(app), 10, "calls")
        assert tree.move_to(("endpoint", "cpu_worker")) is not None
        await until(pilot, lambda: "called by: gateway" in _detail(app), 10, "called by")
        assert "calls:" not in _detail(app)

        # Deploying the gateway alone: the plan dialog warns that its callee is not deployed.
        assert tree.move_to(("endpoint", "gateway")) is not None
        tree.focus()
        await pilot.pause()
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, PlanScreen), 60, "the plan dialog")
        await pilot.pause()
        shown = _warnings_shown(app)
        assert "gateway calls cpu_worker (process), which is not deployed" in shown
        await pilot.press("escape")
        await until(pilot, lambda: app.state.busy is None, 10, "the cancelled deploy")

        # Deploying everything: no warning.
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, PlanScreen), 60, "the full plan")
        await pilot.pause()
        assert _warnings_shown(app) == ""
        await pilot.press("enter")
        await until(
            pilot,
            lambda: (
                app.state.busy is None and set(app.deployed_names()) >= {"gateway", "cpu_worker"}
            ),
            90,
            "both deployed",
        )

        # Undeploying the worker while the gateway stays: the undeploy dialog warns.
        await press_on_endpoint(pilot, "cpu_worker", "u", UndeployScreen, 30)
        await pilot.pause()
        assert "gateway stays deployed and calls cpu_worker (process)" in _warnings_shown(app)
        await pilot.press("escape")
        await until(pilot, lambda: app.state.busy is None, 10, "the cancelled undeploy")
