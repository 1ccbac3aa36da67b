"""Snapshot tests (pytest-textual-snapshot) at 100x30 and 80x24 (the dashboard also at 120x40
and 160x45).

Deterministic frames: a fixed clock, the real scanner on a copy of examples/quickstart, a static
status list and health history (no cloud, no ports, no pids, no live timestamps), no watcher.
Update with `pytest tests/tui/test_tui_snapshots.py --snapshot-update` after checking the SVGs.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hosts import deployed_status, endpoint_status
from textual.pilot import Pilot
from waiting import until

from engine.drift import Drift, FieldDiff
from engine.health import HealthSample
from engine.plan import PlanItem
from engine.status import EndpointStatus
from flash_tui.app import FlashApp
from flash_tui.screens.logs import LogsScreen
from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable

ROOT = Path(__file__).resolve().parents[2]
SIZES = [pytest.param((100, 30), id="100x30"), pytest.param((80, 24), id="80x24")]
DASHBOARD_SIZES = [
    *SIZES,
    pytest.param((120, 40), id="120x40"),
    pytest.param((160, 45), id="160x45"),
]


def fixed_clock() -> datetime:
    return datetime(2026, 1, 1, 12, 4, 31, tzinfo=timezone.utc)


def _at(hh: int, mm: int, ss: int) -> float:
    """Epoch seconds of a time on the fixed clock's day (the engine's timestamps are floats)."""
    return datetime(2026, 1, 1, hh, mm, ss, tzinfo=timezone.utc).timestamp()


def _sample(name: str, ok: bool, latency_ms: float | None) -> HealthSample:
    return HealthSample(name, ok, latency_ms, _at(12, 4, 30), 200 if ok else None)


STATUSES: list[EndpointStatus] = [
    deployed_status(
        "gateway",
        resource_type="CpuLoadBalancerSlsResource",
        url="http://127.0.0.1:40001",
        health=_sample("gateway", True, 2.1),
        is_load_balanced=True,
        started_at=_at(12, 1, 31),
    ),
    deployed_status(
        "gpu_worker",
        resource_type="LiveServerless",
        drift="drifted",
        drift_fields=(FieldDiff("workersMax", 3, 5),),
        url="http://127.0.0.1:40002",
        restarts=1,
        health=_sample("gpu_worker", True, 4.3),
        started_at=_at(12, 2, 31),
    ),
    endpoint_status(
        "old_thing",
        resource_type="CpuServerlessEndpoint",
        status="unhealthy",
        drift="orphaned",
        url="http://127.0.0.1:40003",
        restarts=3,
        health=_sample("old_thing", False, None),
        deployed=True,
        started_at=_at(11, 4, 31),
        pid=31337,
        last_error="/ping: connection refused",
    ),
]
HEALTH = {
    "gateway": [2.0, 2.2, 2.5, 1.9, 3.0, 2.1, 2.0, 2.1],
    "gpu_worker": [4.0, 5.0, 4.2, 8.0, 4.3, None, 4.1, 4.3],
    "old_thing": [3.0, None, None],
}
PLAN: list[PlanItem] = [
    PlanItem(
        "cpu_worker",
        "create",
        "CpuServerlessEndpoint",
        Drift("cpu_worker", "new", "CpuServerlessEndpoint"),
        ("not deployed",),
    ),
    PlanItem(
        "gpu_worker",
        "update",
        "LiveServerless",
        Drift("gpu_worker", "drifted", "LiveServerless", (FieldDiff("workersMax", 3, 5),)),
        ("config changed",),
    ),
    PlanItem(
        "old_thing",
        "delete",
        "CpuServerlessEndpoint",
        Drift("old_thing", "orphaned", "CpuServerlessEndpoint"),
        ("no longer in code",),
    ),
    PlanItem(
        "gateway",
        "unchanged",
        "CpuLoadBalancerSlsResource",
        Drift("gateway", "in_sync", "CpuLoadBalancerSlsResource"),
    ),
]


pytestmark = pytest.mark.usefixtures("private_home")  # tests/tui/conftest.py


def make_app(project: Path) -> FlashApp:
    return FlashApp(
        project, clock=fixed_clock, connect=False, watch=False, statuses=STATUSES, health=HEALTH
    )


async def scanned(pilot: Pilot) -> None:
    """Wait (with a deadline) for the first scan to be on screen."""
    app = pilot.app
    assert isinstance(app, FlashApp)
    await until(pilot, lambda: app.scan_count >= 1, 10, "the first scan")
    await pilot.pause()


@pytest.mark.parametrize("size", DASHBOARD_SIZES)
def test_dashboard(snap_compare: Any, shared_quickstart: Path, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(shared_quickstart), terminal_size=size, run_before=scanned)


def selecting(name: str) -> Any:
    """A run_before that selects `name` in the table and waits for its detail pane."""

    async def select(pilot: Pilot) -> None:
        await scanned(pilot)
        app = pilot.app
        assert isinstance(app, FlashApp)
        table = app.dashboard.query_one(EndpointsTable)
        table.focus()
        table.select_name(name)
        await until(pilot, lambda: app.dashboard.state.selection == name, 10, f"{name} shown")
        await pilot.pause()

    return select


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_health_detail(
    snap_compare: Any, shared_quickstart: Path, size: tuple[int, int]
) -> None:
    """The detail pane's sparkline with its legend, pid, uptime and restarts."""
    app = make_app(shared_quickstart)
    assert snap_compare(app, terminal_size=size, run_before=selecting("gpu_worker"))


def test_dashboard_failing_detail(snap_compare: Any, shared_quickstart: Path) -> None:
    """An unhealthy endpoint's detail pane leads with its reason."""
    app = make_app(shared_quickstart)
    assert snap_compare(app, terminal_size=(100, 30), run_before=selecting("old_thing"))


@pytest.mark.parametrize("size", SIZES)
def test_plan_dialog(snap_compare: Any, shared_quickstart: Path, size: tuple[int, int]) -> None:
    from flash_tui.screens.confirm import PlanScreen

    async def open_plan(pilot: Pilot) -> None:
        await scanned(pilot)
        await pilot.app.push_screen(PlanScreen(PLAN))

    assert snap_compare(make_app(shared_quickstart), terminal_size=size, run_before=open_plan)


@pytest.mark.parametrize("size", SIZES)
def test_undeploy_dialog(snap_compare: Any, shared_quickstart: Path, size: tuple[int, int]) -> None:
    # The dialog itself: `u` goes through the engine (which asks the cloud what is deployed
    # before confirming); that path is covered by the end-to-end test.
    from flash_tui.screens.confirm import UndeployScreen

    async def undeploy(pilot: Pilot) -> None:
        await scanned(pilot)
        await pilot.press("tab")  # table: the cursor on gateway (the first deployed row)
        await pilot.app.push_screen(UndeployScreen(["gateway"], {"gateway": str(STATUSES[0].url)}))

    assert snap_compare(make_app(shared_quickstart), terminal_size=size, run_before=undeploy)


@pytest.mark.parametrize("size", SIZES)
def test_route_tester(snap_compare: Any, shared_quickstart: Path, size: tuple[int, int]) -> None:
    assert snap_compare(
        make_app(shared_quickstart), terminal_size=size, run_before=scanned, press=["t"]
    )


@pytest.mark.parametrize("size", SIZES)
def test_logs_screen(snap_compare: Any, shared_quickstart: Path, size: tuple[int, int]) -> None:
    async def with_logs(pilot: Pilot) -> None:
        await scanned(pilot)
        app = pilot.app
        assert isinstance(app, FlashApp)
        for i in range(60):
            source = ["gateway", "gpu_worker", "cpu_worker"][i % 3]
            app.logs.append(f"12:04:{i % 60:02d}", source, f"POST /run 200 {i % 7 + 1}.0ms")
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogsScreen), 5, "the logs screen")
        await pilot.press("slash", *"200 3", "enter")

    assert snap_compare(make_app(shared_quickstart), terminal_size=size, run_before=with_logs)


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_filtered(
    snap_compare: Any, shared_quickstart: Path, size: tuple[int, int]
) -> None:
    async def filtered(pilot: Pilot) -> None:
        await scanned(pilot)
        await pilot.press("slash", *"cpu")
        app = pilot.app
        assert isinstance(app, FlashApp)
        await until(pilot, lambda: app.dashboard.filter_text == "cpu", 5, "the filter")
        await pilot.pause()

    assert snap_compare(make_app(shared_quickstart), terminal_size=size, run_before=filtered)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare: Any, shared_quickstart: Path, size: tuple[int, int]) -> None:
    assert snap_compare(
        make_app(shared_quickstart), terminal_size=size, run_before=scanned, press=["question_mark"]
    )


def test_logs_screen_wrapped(snap_compare: Any, shared_quickstart: Path) -> None:
    async def wrapped(pilot: Pilot) -> None:
        await scanned(pilot)
        app = pilot.app
        assert isinstance(app, FlashApp)
        app.logs.append("12:04:20", "cpu_worker", "Traceback (most recent call last):")
        app.logs.append(
            "12:04:20",
            "cpu_worker",
            "ValueError: the text to preprocess was " + "much too long to fit " * 8 + "(end)",
            "error",
        )
        app.logs.append("12:04:21", "cpu_worker", "worker exited with status 1")
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogsScreen), 5, "the logs screen")
        await pilot.press("w")
        await pilot.pause()

    assert snap_compare(make_app(shared_quickstart), terminal_size=(80, 24), run_before=wrapped)


def _child(name: str, resource_type: str, provisioning: str, **kwargs: Any) -> EndpointStatus:
    return deployed_status(
        name,
        "child",
        resource_type=resource_type,
        started_at=_at(12, 3, 1),
        provisioning=provisioning,
        **kwargs,
    )


MOTHERSHIP_STATUSES: list[EndpointStatus] = [
    endpoint_status(
        "mothership",
        resource_type="CpuLoadBalancerSlsResource",
        drift="orphaned",
        is_load_balanced=True,
        deployed=True,
        started_at=_at(12, 2, 31),
        role="mothership",
    ),
    _child("gateway", "CpuLoadBalancerSlsResource", "deployed", is_load_balanced=True),
    # Its worker answers, but its mothership has not seen it up yet: it says provisioning.
    _child("cpu_worker", "CpuServerlessEndpoint", "provisioning"),
    _child(
        "gpu_worker",
        "LiveServerless",
        "failed",
        provisioning_error="unhealthy for 15 s: /health counts 1 unhealthy worker(s)",
    ),
]


def test_dashboard_mothership_provisioning(snap_compare: Any, shared_quickstart: Path) -> None:
    """Each child's provisioning in the table (a child not up yet never shows healthy), the
    children ready in the header, and the selected child's provisioning in the detail pane."""
    app = FlashApp(
        shared_quickstart,
        clock=fixed_clock,
        connect=False,
        watch=False,
        statuses=MOTHERSHIP_STATUSES,
    )
    assert snap_compare(app, terminal_size=(120, 40), run_before=selecting("cpu_worker"))


def test_environment_dialog(snap_compare: Any, quickstart: Path) -> None:
    from engine.app_environments import AppEnvironment
    from flash_tui.screens.environment import EnvironmentScreen

    known = [AppEnvironment("local"), AppEnvironment("staging", "mothership")]

    async def picking(pilot: Pilot) -> None:
        await scanned(pilot)
        pilot.app.push_screen(EnvironmentScreen(known, "production", True, "local"))
        await until(
            pilot, lambda: isinstance(pilot.app.screen, EnvironmentScreen), 10, "the dialog"
        )

    assert snap_compare(make_app(quickstart), terminal_size=(80, 24), run_before=picking)
