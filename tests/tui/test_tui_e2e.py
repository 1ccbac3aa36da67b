"""End to end through the TUI: a real local cloud, real workers, real HTTP, real file edits.

examples/quickstart copied to a temp dir -> tree shows every endpoint -> deploy all (cancel once,
then confirm) -> rows healthy -> a worker killed turns its row red, then its restart shows ->
route tester POSTs to an LB route and shows 200 with the right body -> a file edit adds a
function and changes a config value -> tree shows the function and the endpoint `drifted` within
1 s -> undeploy (cancel) -> undeploy all (typed confirm) -> no worker process left.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from hosts import press_on_endpoint
from projectfiles import copy_example
from textual.widgets import Input, OptionList, TextArea
from waiting import until, wait_for
from worker_harness import home_workers

from flash_tui.app import FlashApp
from flash_tui.screens.confirm import PlanScreen, UndeployAllScreen, UndeployScreen
from flash_tui.screens.route_tester import RouteTesterScreen
from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable
from flash_tui.widgets.dashboard.manifest_tree import ManifestTree


def status_of(app: FlashApp, name: str) -> str | None:
    status = app.state.statuses.get(name)
    return status.status if status is not None else None


def drift_of(app: FlashApp, name: str) -> str | None:
    status = app.state.statuses.get(name)
    return status.drift if status is not None else None


async def test_quickstart_end_to_end(tmp_path: Path, cloud_home: Path) -> None:
    project = copy_example("quickstart", tmp_path / "quickstart")
    app = FlashApp(project, "local", watch=True)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1 and app.connected, 60, "scan and cloud")
        names = sorted(app.state.manifest["resources"])
        assert names == ["api", "cpu_worker", "gateway", "gpu_worker"]
        tree = app.dashboard.query_one(ManifestTree)
        assert all(tree.node_for(("endpoint", n)) is not None for n in names)

        # Deploy all: the plan dialog; Escape cancels and nothing is deployed.
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, PlanScreen), 60, "the plan dialog")
        await pilot.press("escape")
        await until(pilot, lambda: app.state.busy is None, 10, "the cancelled deploy to end")
        assert any("cancelled" in r.text for r in app.logs)
        assert home_workers(cloud_home) == []

        # Deploy all, confirmed.
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, PlanScreen), 60, "the plan dialog")
        plan_screen = app.screen
        assert isinstance(plan_screen, PlanScreen)
        assert {i.name for i in plan_screen.items if i.action == "create"} == set(names)
        await pilot.pause()
        assert app.screen.focused is not None and app.screen.focused.id == "confirm"
        await pilot.press("enter")
        await until(
            pilot,
            lambda: app.state.busy is None and all(status_of(app, n) == "healthy" for n in names),
            60,
            "every endpoint healthy",
        )
        table = app.dashboard.query_one(EndpointsTable)
        assert table.row_count == len(names)

        # A worker that stops answering turns its row red within its probe interval (backed
        # off while it stayed healthy) plus the probe's timeout, and green again when it answers.
        frozen = int(app.state.statuses["gateway"].pid)
        assert app.health_monitor is not None
        limit = app.health_monitor.probe_interval("gateway") + 8
        os.kill(frozen, signal.SIGSTOP)
        try:
            await until(pilot, lambda: status_of(app, "gateway") == "unhealthy", limit, "a red row")
            assert "bold red" in str(table.get_cell("gateway", "status").style)
        finally:
            os.kill(frozen, signal.SIGCONT)
        await until(pilot, lambda: status_of(app, "gateway") == "healthy", 10, "green again")

        # A worker that dies is restarted by the supervisor: new pid, restart count shown.
        old_pid = int(app.state.statuses["cpu_worker"].pid)
        os.kill(old_pid, signal.SIGKILL)

        def restarted() -> bool:
            status = app.state.statuses["cpu_worker"]
            return status.status == "healthy" and status.restarts >= 1 and status.pid != old_pid

        await until(pilot, restarted, 30, "the restart to show")
        # The cloud's event log reaches the endpoint's history and the log pane.
        await until(
            pilot,
            lambda: (
                any("crashed" in e for e in app.state.events.get("cpu_worker", []))
                and any(r.source == "cpu_worker" and "restarted" in r.text for r in app.logs)
            ),
            15,
            "the crash and restart events",
        )

        # Route tester: POST /compute and its answer.
        table.focus()
        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, RouteTesterScreen), 10, "route tester")
        tester = app.screen
        assert isinstance(tester, RouteTesterScreen)
        titles = [t.title for t in tester._targets]
        tester.query_one("#targets", OptionList).highlighted = titles.index("POST /compute")
        await pilot.pause()
        assert json.loads(tester.query_one("#body", TextArea).text) == {"numbers": [], "scale": 1.0}
        tester.query_one("#body", TextArea).text = json.dumps({"numbers": [1, 2, 3], "scale": 2})
        await pilot.press("ctrl+s")
        await until(pilot, lambda: len(tester.history) == 1, 30, "the response")
        response = tester.history[0].response
        assert response.status == 200 and response.ok
        assert response.body == {"count": 3, "sum": 12.0, "max": 6.0}
        await pilot.press("ctrl+y")  # copy as curl, key redacted
        await until(pilot, lambda: tester.last_curl is not None, 10, "the curl command")
        assert tester.last_curl is not None and "$FLASH_ENDPOINT_KEY" in tester.last_curl
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, 5, "the dashboard")

        # Edit the code: a new function and a changed config value.
        cpu = project / "workers" / "cpu" / "endpoint.py"
        source = cpu.read_text().replace("workersMax=2", "workersMax=5")
        cpu.write_text(
            source
            + "\n\n@remote(cpu_config)\ndef shout(text: str) -> str:\n    return text.upper()\n"
        )
        # "Within 1 s" is a figure of bench/tui.py (file save -> drift shown); a test only
        # waits with a deadline, so a loaded CI machine cannot make it flaky.
        await until(
            pilot,
            lambda: (
                tree.node_for(("function", "cpu_worker", "shout")) is not None
                and drift_of(app, "cpu_worker") == "drifted"
            ),
            5,
            "the new function and drift",
        )
        fields = app.state.statuses["cpu_worker"].drift_fields
        assert any(f.field == "workersMax" for f in fields)

        # `d` deploys the selected endpoint: its plan shows the update with the field diff.
        await press_on_endpoint(pilot, "cpu_worker", "d", PlanScreen, 60)
        update = app.screen
        assert isinstance(update, PlanScreen)
        items = {i.name: i for i in update.items}
        assert items["cpu_worker"].action == "update"
        assert any(c.field == "workersMax" for c in items["cpu_worker"].changes)
        await pilot.pause()
        assert app.screen.focused is not None and app.screen.focused.id == "confirm"
        await pilot.press("enter")
        await until(
            pilot,
            lambda: (
                app.state.busy is None
                and drift_of(app, "cpu_worker") == "in_sync"
                and status_of(app, "cpu_worker") == "healthy"
            ),
            60,
            "cpu_worker updated and in sync",
        )

        # `h` probes every endpoint now.
        await pilot.press("h")
        await until(
            pilot,
            lambda: any(n.title == "Health" for n in app._notifications),
            15,
            "the probe notification",
        )

        # Undeploy one, cancelled: Cancel has the focus, Enter cancels.
        await press_on_endpoint(pilot, "gateway", "u", UndeployScreen, 30)
        await pilot.press("enter")
        await until(pilot, lambda: app.state.busy is None, 10, "the cancelled undeploy")
        assert status_of(app, "gateway") == "healthy"

        # Undeploy all with the typed project name.
        await pilot.press("U")
        await until(pilot, lambda: isinstance(app.screen, UndeployAllScreen), 30, "undeploy all")
        await pilot.press(*"wrong", "enter")
        assert isinstance(app.screen, UndeployAllScreen)
        app.screen.query_one(Input).value = ""
        await pilot.press(*project.name, "enter")
        await until(
            pilot, lambda: app.state.busy is None and not app.deployed_names(), 60, "undeploy all"
        )
        await pilot.press("q")
        await until(
            pilot, lambda: app._exit_renderables is not None or not app.is_running, 10, "quit"
        )
    wait_for(lambda: home_workers(cloud_home) == [], 10, "the workers stopped")
