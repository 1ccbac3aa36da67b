"""The idle dashboard on a real local cloud: probes on a budget (`h` resets it), stale samples
shown as stale, post-mortem logs with `l`, and the line printed on quitting."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from projectfiles import copy_example
from waiting import until

from engine.operations import Engine
from engine.provider import DeploymentEvent
from engine.status import EndpointStatus
from flash_tui.app import FlashApp
from flash_tui.backend import Backend
from flash_tui.screens.logs import LogsScreen
from flash_tui.target_watch import Cadence
from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable

RUNNING = ("api", "cpu_worker", "gpu_worker")
# The app's own cadence, quicker: what is measured is the ratio of probes to ticks, not seconds.
CADENCE = Cadence(health=0.5, status=1.0)


class CountingBackend(Backend):
    """The real backend, counting the full status refreshes and event-log checks it is asked
    for."""

    status_calls = 0
    event_checks = 0

    async def status(self, *args: Any, **kwargs: Any) -> list[EndpointStatus]:
        self.status_calls += 1
        return await super().status(*args, **kwargs)

    async def events(self, since: int = 0) -> list[DeploymentEvent]:
        self.event_checks += 1
        return await super().events(since)


NOTE = "(not deployed; last lines before it stopped)"


@pytest.fixture
def quiet_home(cloud_home: Path) -> Path:
    """A private flash-tui home whose local cloud and workers are stopped afterwards."""
    return cloud_home


async def test_idle_dashboard_probes_on_a_budget_and_never_lies(
    tmp_path: Path, quiet_home: Path
) -> None:
    project = copy_example("quickstart", tmp_path / "quickstart")
    async with Engine(project) as engine:
        assert (await engine.deploy()).ok
        # Undeployed before the app opens: its last lines are only on the cloud.
        assert (await engine.undeploy(["gateway"])).ok
    ahead = [0.0]  # seconds the app's clock is ahead of the real one

    def clock() -> datetime:
        return datetime.now().astimezone() + timedelta(seconds=ahead[0])

    backend = CountingBackend(project, "local")
    app = FlashApp(project, "local", watch=False, clock=clock, backend=backend, cadence=CADENCE)
    async with app.run_test(size=(140, 34)) as pilot:
        await until(
            pilot,
            lambda: all(
                app.state.statuses.get(n) is not None
                and app.state.statuses[n].status == "healthy"
                and app.state.samples.get(n)
                for n in RUNNING
            ),
            90,
            "three healthy endpoints with samples",
        )
        table = app.dashboard.query_one(EndpointsTable)

        # `l` on the undeployed endpoint: what it wrote before it stopped, said so.
        table.focus()
        table.select_name("gateway")
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogsScreen), 20, "the logs screen")
        records = [r for r in app.logs if r.source == "gateway"]
        assert records[0].text == NOTE
        assert any("[flash]" in r.text or "GET /ping" in r.text for r in records[1:]), records
        await pilot.press("escape")

        # Healthy endpoints back off; `h` brings them back to the base interval.
        monitor = app.health_monitor
        assert monitor is not None
        await until(
            pilot,
            lambda: monitor.probe_interval("api") >= 4 * CADENCE.health,
            60,
            "api's probes to back off",
        )
        before = len(monitor.history["api"])
        await pilot.press("h")
        await until(
            pilot,
            lambda: (
                len(monitor.history["api"]) > before
                and monitor.probe_interval("api") <= 2 * CADENCE.health
            ),
            20,
            "api probed again at the base rate",
        )

        # A sample older than its interval is shown dim with its age, by the app itself.
        ahead[0] = 600.0
        await until(
            pilot, lambda: "ago" in table.get_cell("api", "health").plain, 20, "api shown stale"
        )
        cell = table.get_cell("api", "health")
        assert cell.plain == "10m ago" and "dim" in str(cell.style)
        ahead[0] = 0.0
        await pilot.press("h")
        await until(
            pilot,
            lambda: "ago" not in table.get_cell("api", "health").plain,
            20,
            "a fresh sample shown as current",
        )

        # Nothing changes: no full status refresh over several ticks of the event-log check (the
        # slow refresh is 60 s away); before, one every tick. Five checks: at least two ticks'
        # refreshes have begun by then even if each tick refreshed (a refresh checks once more).
        await until(pilot, lambda: app.state.statuses["api"].status == "healthy", 20, "api healthy")
        calls, checks = backend.status_calls, backend.event_checks
        await until(pilot, lambda: backend.event_checks >= checks + 5, 20, "5 event-log checks")
        assert backend.status_calls - calls <= 1, backend.status_calls - calls

        await pilot.press("q")
    assert app.quit_message == (
        "3 endpoints keep running on the local cloud — `flash-tui undeploy --all` stops them"
    )
