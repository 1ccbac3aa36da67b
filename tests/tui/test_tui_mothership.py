"""Mothership mode in the TUI: the detail pane (an endpoint's role, a child's provisioning and
error), the palette's deploy-mode switch and the header, the role marks in the table."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixedclock import noon
from hosts import deployed_status, endpoint_status, run_palette_command
from projectfiles import copy_example
from waiting import until

from engine.status import EndpointStatus
from flash_tui.app import FlashApp
from flash_tui.widgets.dashboard.detail_pane import DetailPane, endpoint_detail
from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable
from flash_tui.widgets.dashboard.header_line import HeaderLine


def _text(status: EndpointStatus) -> str:
    pane = DetailPane()
    pane.shown = endpoint_detail(status.name, None, status)
    return pane.plain_text(100)


def test_a_child_shows_its_provisioning_and_its_error() -> None:
    status = endpoint_status(
        "worker",
        resource_type="CpuLiveServerless",
        status="unhealthy",
        role="child",
        provisioning="failed",
        provisioning_error="not ready within 30s",
    )
    text = _text(status)
    assert "role: child · provisioning: failed" in text
    assert "not ready within 30s" in text


def test_the_mothership_says_what_it_is_not_orphaned() -> None:
    status = endpoint_status(
        "mothership",
        resource_type="CpuLoadBalancerSlsResource",
        drift="orphaned",
        role="mothership",
    )
    text = _text(status)
    assert "role: mothership" in text and "provisions the other endpoints" in text
    assert "no longer in the code" not in text


def test_direct_mode_shows_no_role() -> None:
    status = endpoint_status("api")
    assert "role" not in _text(status)


@pytest.mark.usefixtures("private_home")
async def test_the_palette_switches_the_deploy_mode_and_the_table_marks_roles(
    tmp_path: Path,
) -> None:
    project = copy_example("quickstart", tmp_path / "quickstart")
    statuses = [
        deployed_status("api", "mothership"),
        deployed_status("gateway", "child"),
        deployed_status("cpu_worker", "endpoint"),
    ]
    app = FlashApp(project, clock=noon, connect=False, watch=False, statuses=statuses)
    async with app.run_test(size=(120, 30)) as pilot:
        header = app.dashboard.query_one(HeaderLine)
        table = app.dashboard.query_one(EndpointsTable)
        await until(pilot, lambda: "api" in [str(k.value) for k in table.rows])
        assert "mothership" not in header.summary and app.backend.mothership is False
        assert table.get_cell("api", "name").plain == "api ⌂"
        assert table.get_cell("gateway", "name").plain == "gateway ↳"
        assert table.get_cell("cpu_worker", "name").plain == "cpu_worker"

        await run_palette_command(pilot, "Deploy through mothership", "Deploy through mothership")
        await until(pilot, lambda: app.backend.mothership, what="mothership mode on")
        await until(pilot, lambda: "via mothership" in header.summary)
        # The key does the same, back to direct mode.
        await pilot.press("M")
        await until(pilot, lambda: not app.backend.mothership, what="direct mode again")
        assert "via mothership" not in header.summary
