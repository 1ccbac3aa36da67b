"""Pilot tests of the dashboard: opening, selection, live rescan, palette and every action's key."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fixedclock import noon as clock
from hosts import run_palette_command
from waiting import until

from engine.diagnostics import Diagnostic
from engine.health import HealthSample
from engine.provider import DeploymentEvent
from engine.status import EndpointStatus
from flash_tui.app import FlashApp, parse_args
from flash_tui.backend import Backend, BackendError, JSONObject
from flash_tui.commands import ACTIONS, FlashCommands
from flash_tui.messages import ScanFailed, ScanFinished
from flash_tui.screens.environment import EnvironmentScreen
from flash_tui.screens.help import HelpScreen
from flash_tui.screens.logs import LogsScreen
from flash_tui.screens.route_tester import RouteTesterScreen
from flash_tui.widgets.dashboard.detail_pane import DetailPane
from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable
from flash_tui.widgets.dashboard.header_line import HeaderLine
from flash_tui.widgets.dashboard.manifest_tree import ManifestTree

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("private_home")  # tests/tui/conftest.py


def endpoint(name: str, status: str, drift: str = "in_sync") -> EndpointStatus:
    """An endpoint as the engine's `status` reports it (deployed unless `not_deployed`)."""
    return EndpointStatus(
        name=name,
        resource_type=None,
        status=status,
        drift=drift,
        in_code=drift != "orphaned",
        deployed=status != "not_deployed",
    )


def tree_keys(app: FlashApp) -> set[tuple[str, ...]]:
    return app.dashboard.query_one(ManifestTree).shown_keys()


def detail_text(app: FlashApp) -> str:
    return app.dashboard.query_one(DetailPane).plain_text()


def test_command_line_arguments() -> None:
    args = parse_args(["examples/quickstart", "--target", "local"])
    assert args.path == "examples/quickstart" and args.target == "local"
    assert parse_args([]).path == "."


async def test_opens_project_and_shows_every_endpoint(quickstart: Path) -> None:
    app = FlashApp(quickstart, clock=clock, connect=False, watch=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        resources = sorted(app.state.manifest["resources"])
        assert resources, "quickstart has endpoints"
        keys = tree_keys(app)
        for name in resources:
            assert ("endpoint", name) in keys
            for fn in app.state.manifest["resources"][name]["functions"]:
                assert ("function", name, fn["name"]) in keys
        table = app.dashboard.query_one(EndpointsTable)
        assert table.row_count == len(resources)
        # Selecting a function shows its signature and where it lives.
        tree = app.dashboard.query_one(ManifestTree)
        assert tree.move_to(("function", "gateway", "pipeline")) is not None
        await until(pilot, lambda: "def pipeline(" in detail_text(app))
        assert "main.py:" in detail_text(app)


async def test_not_a_flash_project_opens_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    app = FlashApp(tmp_path, clock=clock, connect=False, watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        assert app.state.manifest.get("resources", {}) == {}
        assert any(k[0] == "hint" for k in tree_keys(app))


async def test_unreadable_directory_is_reported_in_the_app(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    app = FlashApp(missing, clock=clock, connect=False, watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: any("scan failed" in r.text for r in app.logs))
        assert any("not a readable directory" in n.message for n in app._notifications)
        # The tree keeps the reason (the toast fades); no "no endpoints here" hint.
        keys = tree_keys(app)
        assert ("error",) in keys and not any(k[0] == "hint" for k in keys)
        tree = app.dashboard.query_one(ManifestTree)
        labels = [str(node.label) for node in tree.root.children[0].children]
        assert any("not a readable directory" in label for label in labels)
        tree.move_to(("error", "0"))
        await until(pilot, lambda: "not a readable directory" in " ".join(detail_text(app).split()))


async def test_rescan_keeps_selection_and_expansion_and_flashes_changes(quickstart: Path) -> None:
    app = FlashApp(quickstart, clock=clock, connect=False, watch=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        tree = app.dashboard.query_one(ManifestTree)
        gateway = tree.node_for(("endpoint", "gateway"))
        cpu = tree.node_for(("endpoint", "cpu_worker"))
        assert gateway is not None and cpu is not None
        cpu.collapse()
        await pilot.pause()  # let the tree re-index its lines after the collapse
        tree.move_cursor(gateway)
        await pilot.pause()
        assert tree.cursor_node is gateway
        main = quickstart / "main.py"
        main.write_text(
            main.read_text()
            + '\n\n@remote(gateway_config, method="GET", path="/hello")\n'
            + "async def hello(name: str = 'x') -> dict:\n    return {'hi': name}\n"
        )
        await until(pilot, lambda: ("function", "gateway", "hello") in tree_keys(app), timeout=5)
        assert tree.node_for(("endpoint", "gateway")) is gateway, "node updated in place"
        assert not cpu.is_expanded, "collapsed node stays collapsed"
        assert tree.cursor_node is gateway, "selection kept"
        assert ("function", "gateway", "hello") in tree.flashing
        await until(pilot, lambda: not tree.flashing, timeout=5)


async def test_palette_offers_every_action(quickstart: Path) -> None:
    """The palette's provider lists every action and finds each by name, bound to that action."""
    app = FlashApp(quickstart, clock=clock, connect=False, watch=False)
    async with app.run_test(size=(100, 30)):
        provider = FlashCommands(app.screen)
        discovered = [hit async for hit in provider.discover()]
        assert [hit.text for hit in discovered] == [action.name for action in ACTIONS]
        assert [hit.command.args for hit in discovered] == [(a.action,) for a in ACTIONS]  # type: ignore[attr-defined]
        for action in ACTIONS:
            hits = [hit async for hit in provider.search(action.name)]
            found = {hit.text: hit.command.args for hit in hits}  # type: ignore[attr-defined]
            assert found.get(action.name) == (action.action,), (action.name, found)


async def test_palette_runs_an_action(quickstart: Path) -> None:
    """End to end through the palette: ctrl+p, type a name, enter runs it."""
    app = FlashApp(quickstart, clock=clock, connect=False, watch=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        await run_palette_command(pilot, "Logs", "Logs")
        await until(pilot, lambda: isinstance(app.screen, LogsScreen))


async def test_screen_keys_open_and_close(quickstart: Path) -> None:
    app = FlashApp(quickstart, clock=clock, connect=False, watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        for key, screen_type in [
            ("l", LogsScreen),
            ("t", RouteTesterScreen),
            ("question_mark", HelpScreen),
        ]:
            await pilot.press(key)
            await until(pilot, lambda t=screen_type: isinstance(app.screen, t))
            # Dashboard keys do nothing on other screens (no deploy from the logs screen).
            assert app.check_action("deploy", ()) is False
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.dashboard)
        await pilot.press("r")
        await until(pilot, lambda: app.scan_count >= 2)


async def test_route_tester_prefills_body_from_the_signature(quickstart: Path) -> None:
    app = FlashApp(quickstart, clock=clock, connect=False, watch=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, RouteTesterScreen))
        screen = app.screen
        assert isinstance(screen, RouteTesterScreen)
        titles = [t.title for t in screen._targets]
        assert "POST /pipeline" in titles
        index = titles.index("POST /pipeline")
        from textual.widgets import OptionList, TextArea

        screen.query_one("#targets", OptionList).highlighted = index
        await pilot.pause()
        import json

        assert json.loads(screen.query_one("#body", TextArea).text) == {"text": "", "dims": 8}
        # A QB class method: its own parameters, and the constructor's under `init`.
        screen.query_one("#targets", OptionList).highlighted = titles.index(
            "cpu_worker:TextAnalyzer.keywords"
        )
        await pilot.pause()
        assert json.loads(screen.query_one("#body", TextArea).text) == {
            "text": "",
            "top": 3,
            "init": {"stopwords": None},
        }
        # Invalid JSON is refused with a message, nothing is sent.
        screen.query_one("#body", TextArea).text = "{not json"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert any("not valid JSON" in n.message for n in app._notifications)
        assert screen.history == []


async def test_keys_without_a_selection_or_target_explain_themselves(tmp_path: Path) -> None:
    app = FlashApp(tmp_path, clock=clock, connect=False, watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        await pilot.press("d")
        await pilot.press("u")
        await pilot.press("U")
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert any("Select an endpoint" in m for m in messages)
        assert any("Nothing is deployed" in m for m in messages)


async def test_keys_that_switch_what_the_app_works_on_wait_for_a_running_operation(
    quickstart: Path,
) -> None:
    app = FlashApp(quickstart, clock=clock, connect=False, watch=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        app._update(busy="deploy")  # as `_begin` marks it while a deploy runs
        target, mothership = app.backend.target, app.backend.mothership
        await pilot.press("T", "M", "E", "b")
        await pilot.pause()
        refusals = [n.message for n in app._notifications if n.title == "Busy"]
        assert refusals == ["Wait for the running deploy to finish"] * 4, refusals
        assert (app.backend.target, app.backend.mothership) == (target, mothership)
        assert not isinstance(app.screen, EnvironmentScreen)


async def test_build_key_builds_with_progress_and_notifies(quickstart: Path) -> None:
    app = FlashApp(quickstart, clock=clock, connect=False, watch=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        await pilot.press("b")
        assert app.state.busy == "build"
        await pilot.press("b")  # a second build while one runs is refused with a reason
        # Read the refusal now: a toast expires, and a slow build would outlive it.
        refusals = [n.message for n in app._notifications]
        assert any("Wait for the running build" in m for m in refusals), refusals
        await until(pilot, lambda: app.state.busy is None, timeout=60)
        messages = [n.message for n in app._notifications]
        titles = [n.title for n in app._notifications]
        assert "Build finished" in titles, messages
        assert (quickstart / ".flash" / "archive.tar.gz").is_file()
        assert any(r.text.startswith("build: build ") for r in app.logs)


async def test_build_failure_is_reported_with_the_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(ROOT / "examples" / "broken", broken)
    app = FlashApp(broken, clock=clock, connect=False, watch=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        await pilot.press("b")
        await until(pilot, lambda: app.state.busy is None, timeout=60)
        failed = [n for n in app._notifications if n.title == "Build failed"]
        assert failed and "error diagnostic" in failed[0].message


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
async def test_every_endpoint_row_is_visible(quickstart: Path, size: tuple[int, int]) -> None:
    # Two orphans beside the four endpoints in code: six rows, a typical project's worth.
    orphans = [endpoint(n, "healthy", "orphaned") for n in ("old_a", "old_b")]
    app = FlashApp(quickstart, clock=clock, connect=False, watch=False, statuses=orphans)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        table = app.dashboard.query_one(EndpointsTable)
        await until(pilot, lambda: table.row_count == 6)
        await pilot.pause()
        # Header plus every row fit in the table's own viewport: nothing to scroll to.
        assert table.scrollable_content_region.height >= table.row_count + 1
        assert table.max_scroll_y == 0
        assert app.dashboard.query_one(DetailPane).size.height >= 3, "detail keeps some room"


async def test_a_failure_toast_is_short_and_the_log_keeps_the_traceback(quickstart: Path) -> None:
    from flash_tui.messages import OperationFinished

    traceback = "\n".join(
        ["1 failed — cpu_worker: import failed: Traceback (most recent call last):"]
        + [f'  File "/x/mod{i}.py", line {i}, in <module>' for i in range(40)]
        + ["ModuleNotFoundError: No module named 'nowhere'"]
    )
    app = FlashApp(quickstart, clock=clock, connect=False, watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        app.post_message(OperationFinished("deploy", False, error=traceback))
        await until(pilot, lambda: any(n.title == "Deploy failed" for n in app._notifications))
        toast = next(n for n in app._notifications if n.title == "Deploy failed")
        assert len(toast.message.splitlines()) <= 3
        assert toast.message.startswith("1 failed — cpu_worker")
        assert toast.message.endswith("No module named 'nowhere'")
        assert any("mod39.py" in r.text for r in app.logs), "the full text stays in the log"


class FlakyTarget(Backend):
    """A target that is unreachable on the first connect and reachable after (no cloud)."""

    def __init__(
        self, project: Path, failures: int = 1, statuses: Sequence[EndpointStatus] = ()
    ) -> None:
        super().__init__(project)
        self.connects = 0
        self.failures = failures
        self.statuses = list(statuses)

    async def connect(self) -> str:
        self.connects += 1
        if self.connects <= self.failures:
            raise BackendError("local cloud is not running")
        return "local (127.0.0.1:40123)"

    async def status(
        self,
        manifest: JSONObject,
        diagnostics: Sequence[Diagnostic] = (),
        health: Mapping[str, HealthSample] | None = None,
    ) -> list[EndpointStatus]:
        return list(self.statuses)

    async def events(self, since: int = 0) -> list[DeploymentEvent]:
        return []

    def health_monitor(self, interval: float) -> Any:
        from engine.health import HealthMonitor

        async def nothing() -> list[Any]:
            return []

        return HealthMonitor(nothing, interval=interval)

    async def follow_logs(self, lines: int = 20) -> AsyncIterator[Any]:
        raise BackendError("no logs to follow")
        yield  # an async generator that ends at once


async def test_status_refresh_uses_the_apps_scan_and_never_rescans(quickstart: Path) -> None:
    # A real local cloud (in the private home; stopped by the fixture), nothing deployed.
    app = FlashApp(quickstart, clock=clock, watch=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.connected and len(app.state.statuses) == 4, timeout=60)
        assert {s.status for s in app.state.statuses.values()} == {"not_deployed"}
        assert {s.drift for s in app.state.statuses.values()} == {"new"}
        scanned = app.backend.scanner.stats  # every scan replaces its stats
        for _ in range(3):
            app.state = app.state.with_statuses([])
            app._refresh_status()
            await until(pilot, lambda: len(app.state.statuses) == 4, timeout=30)
        assert app.backend.scanner.stats is scanned, "a status refresh rescanned the project"


async def test_rescan_key_retries_an_unreachable_target(quickstart: Path) -> None:
    backend = FlakyTarget(quickstart)
    app = FlashApp(quickstart, clock=clock, watch=False, backend=backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: backend.connects == 1 and app.scan_count >= 1)
        header = app.dashboard.query_one(HeaderLine)
        await until(pilot, lambda: "unreachable" in header.summary)
        assert not app.connected
        await pilot.press("r")
        await until(pilot, lambda: app.connected)
        assert backend.connects == 2
        await until(pilot, lambda: "target: local (127.0.0.1:40123)" in header.summary)


def header_text(app: FlashApp) -> str:
    """The header line as shown (rendered at the header's own width)."""
    import io

    from rich.console import Console

    header = app.dashboard.query_one(HeaderLine)
    console = Console(width=header.size.width, file=io.StringIO(), record=True)
    console.print(header.render())
    return console.export_text().rstrip("\n")


@pytest.mark.parametrize("width", [80, 100])
async def test_header_summary_fits_the_width(quickstart: Path, width: int) -> None:
    statuses = [endpoint("gateway", "healthy", "drifted")]
    # The target reports one drifted endpoint on every refresh (a refresh replaces them all).
    backend = FlakyTarget(quickstart, failures=0, statuses=statuses)
    app = FlashApp(quickstart, clock=clock, watch=False, backend=backend, statuses=statuses)
    async with app.run_test(size=(width, 24)) as pilot:
        await until(pilot, lambda: app.connected and app.scan_count >= 1)
        await until(pilot, lambda: "1 drifted" in header_text(app), what="the drift counted")
        text = header_text(app)
        assert "4 endpoints · 1 drifted" in text and "12:00:00" in text, text
        assert "…" not in text
        # host:port only where there is room for it.
        assert ("127.0.0.1:40123" in text) == (width >= 100), text


async def test_undeployed_endpoints_lose_their_health_history(quickstart: Path) -> None:
    from flash_tui.messages import HealthSampled, StatusUpdated

    deployed = [endpoint("gateway", "healthy"), endpoint("api", "healthy")]
    app = FlashApp(
        quickstart,
        clock=clock,
        connect=False,
        watch=False,
        statuses=deployed,
        health={"gateway": [2.0, 3.0], "api": [1.0]},
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        table = app.dashboard.query_one(EndpointsTable)
        # Confirming an undeploy: a probe failing while its worker stops is expected, not news.
        app.retire(["gateway"])
        app.health_changed("gateway", False, "connection refused")
        app.post_message(HealthSampled("gateway", False, None))
        app.post_message(HealthSampled("api", True, 1.5))
        await until(pilot, lambda: len(app.state.samples["api"]) == 2)
        assert "gateway" not in app.state.samples
        assert not any("gateway unhealthy" in r.text for r in app.logs)
        # The target reports api undeployed too (by another client): its sparkline goes.
        app.post_message(StatusUpdated([endpoint("gateway", "not_deployed", "new")]))
        await until(pilot, lambda: "api" not in app.state.samples)
        rows = {row.name: row for row in app.rows()}
        assert rows["api"].samples == [] and rows["gateway"].samples == []
        assert table._shown["api"].samples == []
        # Deployed again: its health counts again.
        app.post_message(StatusUpdated([endpoint("gateway", "healthy")]))
        await until(pilot, lambda: "gateway" not in app.state.retired)
        app.post_message(HealthSampled("gateway", True, 2.5))
        await until(pilot, lambda: list(app.state.samples.get("gateway", ())) == [2.5])


class EventLogTarget(FlakyTarget):
    """A reachable target whose event log is the given `DeploymentEvent`s (no cloud)."""

    def __init__(self, project: Path, log: list[DeploymentEvent]) -> None:
        super().__init__(project, failures=0)
        self.log = log
        self.asked: list[int] = []

    async def events(self, since: int = 0) -> list[DeploymentEvent]:
        self.asked.append(since)
        return [e for e in self.log if e.id > since]


async def test_the_event_log_feeds_the_detail_pane_and_new_crashes_the_log(
    quickstart: Path,
) -> None:
    at = clock().timestamp()
    history = [
        DeploymentEvent(1, at, "service_started", "local cloud started"),
        DeploymentEvent(2, at, "deployed", "created, pid 41", app="a", endpoint="gateway"),
        DeploymentEvent(3, at, "crashed", "exit code 1", app="a", endpoint="gateway"),
    ]
    backend = EventLogTarget(quickstart, history)
    app = FlashApp(quickstart, clock=clock, watch=False, backend=backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: len(app.state.events.get("gateway", ())) == 2)
        stamp = datetime.fromtimestamp(at).astimezone().strftime("%H:%M:%S")
        assert list(app.state.events["gateway"]) == [
            f"{stamp} deployed: created, pid 41",
            f"{stamp} crashed: exit code 1",
        ]
        # History from before the app opened is not news: the log pane does not repeat it.
        assert not any("exit code 1" in r.text for r in app.logs)
        # A crash after that is: the next pull asks only for what came after event 3.
        backend.log.append(DeploymentEvent(4, at, "crashed", "exit code 9", endpoint="gateway"))
        app._refresh_status()
        await until(pilot, lambda: any("exit code 9" in r.text for r in app.logs))
        assert 3 in backend.asked and len(app.state.events["gateway"]) == 3


async def test_a_scan_that_lands_while_the_app_closes_is_dropped(quickstart: Path) -> None:
    """The scan runs in a thread: quitting while it runs must not end in a traceback."""
    app = FlashApp(quickstart, clock=clock, connect=False, watch=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.scanned, 30, "the first scan")
        manifest, diagnostics = app.state.manifest, app.state.diagnostics
    count = app.scan_count
    # The dashboard is gone now, as it is when a scan finishes after `q`.
    app._scan_finished(ScanFinished(manifest, diagnostics))
    app._scan_failed(ScanFailed("gone"))
    assert app.scan_count == count
