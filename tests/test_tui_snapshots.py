"""Snapshot tests (pytest-textual-snapshot) at 100x30 and 80x24.

Deterministic frames: a fixed clock, the real scanner on a copy of examples/quickstart, a static
status list and health history (no cloud, no ports, no pids, no live timestamps), no watcher.
Update with `pytest tests/test_tui_snapshots.py --snapshot-update` after checking the SVGs.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from flash_tui.app import FlashApp

ROOT = Path(__file__).resolve().parent.parent
SIZES = [pytest.param((100, 30), id="100x30"), pytest.param((80, 24), id="80x24")]


def fixed_clock() -> datetime:
    return datetime(2026, 1, 1, 12, 4, 31, tzinfo=timezone.utc)


STATUSES: list[dict[str, Any]] = [
    {
        "name": "gateway",
        "resource_type": "CpuLoadBalancerSlsResource",
        "status": "healthy",
        "drift": "in_sync",
        "drift_fields": [],
        "url": "http://127.0.0.1:40001",
        "restarts": 0,
        "health": {"ok": True, "latency_ms": 2.1, "at": "2026-01-01T12:04:30+00:00"},
        "started_at": "2026-01-01T12:01:31+00:00",
    },
    {
        "name": "gpu_worker",
        "resource_type": "LiveServerless",
        "status": "healthy",
        "drift": "drifted",
        "drift_fields": [{"field": "workersMax", "deployed": 3, "local": 5}],
        "url": "http://127.0.0.1:40002",
        "restarts": 1,
        "health": {"ok": True, "latency_ms": 4.3, "at": "2026-01-01T12:04:30+00:00"},
        "started_at": "2026-01-01T12:02:31+00:00",
    },
    {
        "name": "old_thing",
        "resource_type": "CpuServerlessEndpoint",
        "status": "unhealthy",
        "drift": "orphaned",
        "drift_fields": [],
        "url": "http://127.0.0.1:40003",
        "restarts": 3,
        "health": {"ok": False, "latency_ms": None, "at": "2026-01-01T12:04:30+00:00"},
        "started_at": "2026-01-01T11:04:31+00:00",
    },
]
HEALTH = {
    "gateway": [2.0, 2.2, 2.5, 1.9, 3.0, 2.1, 2.0, 2.1],
    "gpu_worker": [4.0, 5.0, 4.2, 8.0, 4.3, None, 4.1, 4.3],
    "old_thing": [3.0, None, None],
}
PLAN: list[dict[str, Any]] = [
    {"action": "create", "name": "cpu_worker", "resource_type": "CpuServerlessEndpoint"},
    {
        "action": "update",
        "name": "gpu_worker",
        "resource_type": "LiveServerless",
        "changes": [{"field": "workersMax", "deployed": 3, "local": 5}],
    },
    {"action": "delete", "name": "old_thing", "resource_type": "CpuServerlessEndpoint"},
    {"action": "unchanged", "name": "gateway", "resource_type": "CpuLoadBalancerSlsResource"},
]


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's flash-tui home (nothing here should reach a cloud anyway)."""
    monkeypatch.setenv("FLASH_TUI_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("snap") / "quickstart"
    shutil.copytree(ROOT / "examples" / "quickstart", dest, ignore=shutil.ignore_patterns(".flash"))
    return dest


def make_app(project: Path) -> FlashApp:
    return FlashApp(
        project, clock=fixed_clock, connect=False, watch=False, statuses=STATUSES, health=HEALTH
    )


async def scanned(pilot: Pilot) -> None:
    """Wait (with a deadline) for the first scan to be on screen."""
    app = pilot.app
    assert isinstance(app, FlashApp)
    deadline = time.monotonic() + 10
    while app.scan_count < 1 and time.monotonic() < deadline:
        await pilot.pause(0.02)
    assert app.scan_count >= 1, "scan did not finish"
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES)
def test_dashboard(snap_compare: Any, quickstart: Path, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(quickstart), terminal_size=size, run_before=scanned)


@pytest.mark.parametrize("size", SIZES)
def test_plan_dialog(snap_compare: Any, quickstart: Path, size: tuple[int, int]) -> None:
    from flash_tui.screens.confirm import PlanScreen

    async def open_plan(pilot: Pilot) -> None:
        await scanned(pilot)
        await pilot.app.push_screen(PlanScreen(PLAN))

    assert snap_compare(make_app(quickstart), terminal_size=size, run_before=open_plan)


@pytest.mark.parametrize("size", SIZES)
def test_undeploy_dialog(snap_compare: Any, quickstart: Path, size: tuple[int, int]) -> None:
    # The dialog itself: `u` goes through the engine (which asks the cloud what is deployed
    # before confirming); that path is covered by the end-to-end test.
    from flash_tui.screens.confirm import UndeployScreen

    async def undeploy(pilot: Pilot) -> None:
        await scanned(pilot)
        await pilot.press("tab")  # table: the cursor on gateway (the first deployed row)
        await pilot.app.push_screen(UndeployScreen(["gateway"], {"gateway": STATUSES[0]["url"]}))

    assert snap_compare(make_app(quickstart), terminal_size=size, run_before=undeploy)


@pytest.mark.parametrize("size", SIZES)
def test_route_tester(snap_compare: Any, quickstart: Path, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(quickstart), terminal_size=size, run_before=scanned, press=["t"])


@pytest.mark.parametrize("size", SIZES)
def test_logs_screen(snap_compare: Any, quickstart: Path, size: tuple[int, int]) -> None:
    async def with_logs(pilot: Pilot) -> None:
        await scanned(pilot)
        app = pilot.app
        assert isinstance(app, FlashApp)
        for i in range(60):
            source = ["gateway", "gpu_worker", "cpu_worker"][i % 3]
            app.logs.append(f"12:04:{i % 60:02d}", source, f"POST /run 200 {i % 7 + 1}.0ms")
        await pilot.press("l")
        await pilot.pause(0.2)
        await pilot.press("slash", *"200 3", "enter")

    assert snap_compare(make_app(quickstart), terminal_size=size, run_before=with_logs)
