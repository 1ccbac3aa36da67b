"""The dashboard follows a mothership's provisioning live (real local cloud, real workers): while
`D` deploys through the mothership, a child that is still provisioning says so in the table and
the detail pane (never `healthy`), the progress line counts the children ready, and once the
child is up the table says so."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from projectfiles import write_files
from textual.widgets import Label
from waiting import until

from flash_tui.app import FlashApp
from flash_tui.backend import Backend
from flash_tui.screens.confirm import PlanScreen
from flash_tui.widgets.dashboard.detail_pane import DetailPane
from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable


def _files(gate: Path) -> dict[str, str]:
    return {
        "main.py": """
            from tetra_rp import CpuLiveServerless, remote

            fast_config = CpuLiveServerless(name="fast", workersMax=1)


            @remote(fast_config)
            def fast() -> int:
                return 1
            """,
        "late.py": f"""
            import os
            import time
            from pathlib import Path

            from tetra_rp import CpuLiveServerless, remote

            late_config = CpuLiveServerless(name="late", workersMax=1)

            if os.environ.get("FLASH_RESOURCE_NAME") == "late":
                gate = Path({str(gate)!r})
                deadline = time.monotonic() + 120
                while not gate.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)


            @remote(late_config)
            def late() -> int:
                return 2
            """,
    }


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "gate"
    yield path
    path.write_text("open\n")  # a worker still at the gate ends with its cloud


@pytest.fixture
def tui_home(cloud_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own home (`cloud_home`), with room for a mothership on a loaded machine."""
    monkeypatch.setenv("FLASH_MOTHERSHIP_WAIT", "120")
    return cloud_home


def _cell(table: EndpointsTable, name: str, column: str) -> str:
    keys = [str(k.value) for k in table.rows]
    return table.get_cell(name, column).plain if name in keys else ""


async def test_the_table_follows_each_childs_provisioning_live(
    tmp_path: Path, tui_home: Path, gate: Path
) -> None:
    project = write_files(tmp_path / "liveapp", _files(gate))
    backend = Backend(project, "local", mothership=True)
    app = FlashApp(project, "local", watch=False, backend=backend)
    async with app.run_test(size=(140, 34)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1 and app.connected, 60, "scan and cloud")
        table = app.dashboard.query_one(EndpointsTable)
        progress = app.dashboard.query_one("#progress-text", Label)
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, PlanScreen), 60, "the plan dialog")
        await pilot.press("enter")

        # `fast` comes up, `late` waits at its gate: the screen says exactly that.
        def fast_up_late_waiting() -> bool:
            fast = app.state.statuses.get("fast")
            return (
                fast is not None
                and fast.provisioning == "deployed"
                and _cell(table, "late", "status") == "provisioning"
            )

        await until(pilot, fast_up_late_waiting, 90, "fast up, late provisioning")
        assert _cell(table, "late", "name") == "late ↳"
        assert "healthy" not in _cell(table, "late", "status")
        await until(
            pilot,
            lambda: "mothership: 1/2 children ready" in str(progress.render()),
            30,
            "the progress line counts the children ready",
        )
        app.state = replace(app.state, selection="late")
        pane = app.dashboard.query_one(DetailPane)
        await until(
            pilot,
            lambda: "provisioning: provisioning" in pane.plain_text(120),
            30,
            "the detail pane says late is provisioning",
        )

        gate.write_text("open\n")
        await until(pilot, lambda: app.state.busy is None, 120, "the deploy to finish")
        await until(
            pilot, lambda: _cell(table, "late", "status") == "healthy", 60, "late shown healthy"
        )
        assert app.state.statuses["late"].provisioning == "deployed"
        assert any("mothership: 2/2 children ready" in r.text for r in app.logs)
