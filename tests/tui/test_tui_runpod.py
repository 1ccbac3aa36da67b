"""The TUI on the RunPod target, against the contract fake and its real workers: the command
palette switches the target, the header then names RunPod, the environment and the account
(never the key), a deploy through the plan dialog creates the endpoints there, their rows turn
healthy and their workers' lines reach the log pane; undeploy all removes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes.runpod import FakeRunPod
from projectfiles import copy_example
from waiting import until

from flash_tui.app import FlashApp
from flash_tui.screens.confirm import PlanScreen, UndeployAllScreen


async def test_switch_target_deploy_and_undeploy_on_runpod(
    tmp_path: Path, fake_runpod: FakeRunPod
) -> None:
    project = copy_example("quickstart", tmp_path / "quickstart")
    app = FlashApp(project, "local", connect=False, watch=False)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1, 30, "the first scan")
        await pilot.press("ctrl+p")
        await pilot.press(*"switch target")
        await pilot.press("enter")
        await until(
            pilot,
            lambda: app.backend.target == "runpod" and app.connected,
            30,
            "connected to RunPod",
        )
        header, _narrow = app.state.header()
        assert "target: runpod (fake-user@example.com) · env: production" in header
        assert fake_runpod.api_key not in header

        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, PlanScreen), 60, "the plan dialog")
        await pilot.press("enter")
        await until(
            pilot,
            lambda: app.state.busy is None and len(fake_runpod.endpoints()) == 4,
            120,
            "the deploy to RunPod",
        )
        names = ["api", "cpu_worker", "gateway", "gpu_worker"]
        await until(
            pilot,
            lambda: (
                sorted(n for n, s in app.state.statuses.items() if s.status == "healthy") == names
            ),
            60,
            "every endpoint shown healthy (probed on RunPod's queue API and LB hosts)",
        )
        await until(
            pilot,
            lambda: {r.source for r in app.logs} >= {"api", "gateway"},
            60,
            "the workers' log lines in the log pane",
        )

        await pilot.press("U")
        await until(pilot, lambda: isinstance(app.screen, UndeployAllScreen), 30, "undeploy all")
        await pilot.press(*project.name, "enter")
        await until(
            pilot,
            lambda: app.state.busy is None and fake_runpod.endpoints() == [],
            120,
            "the undeploy from RunPod",
        )
        assert fake_runpod.templates() == []
        await pilot.press("q")


async def test_switch_to_runpod_without_a_key_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("RUNPOD_API_KEY", "RUNPOD_API_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    project = copy_example("quickstart", tmp_path / "quickstart")
    app = FlashApp(project, "local", connect=False, watch=False)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1, 30, "the first scan")
        await pilot.press("T")
        await until(
            pilot,
            lambda: any("RUNPOD_API_KEY" in r.text for r in app.logs),
            30,
            "the reason in the log pane",
        )
        assert not app.connected
        assert "runpod unreachable" in app.state.header()[0]
        (line,) = [r.text for r in app.logs if "RUNPOD_API_KEY" in r.text]
        assert str(tmp_path / ".runpod" / "config.toml") in line
        await pilot.press("q")
