"""FlashApp: the Textual application. It runs engine work in workers and turns what they bring
into a new DashboardState, which the dashboard screen renders.

Here: the app's lifecycle, the scan and file watch, the rows, and the screens it opens. It is
the top layer of the app (see `app_core.py`): the state, the log and the selection are
`app_core.py`'s; watching the target (connecting, status, events, health and logs, switching
targets) is `target_watch.py`; the build, deploy and undeploy keys with their confirmations are
`deployment_actions.py`; the rules the state applies live in `screens/dashboard_state.py`, the
wording of outcomes in `reports.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from textual import on, work
from textual.app import App

from engine.callgraph import CallGraph
from engine.dev.loop import Reload
from engine.invoke import list_calls
from engine.provider import TARGETS
from engine.status import EndpointStatus
from flash_tui import editor, present
from flash_tui.backend import Backend, BackendError
from flash_tui.commands import FlashCommands, bindings
from flash_tui.deployment_actions import DeploymentActions
from flash_tui.messages import (
    ScanFailed,
    ScanFinished,
)
from flash_tui.reports import still_running
from flash_tui.screens.dashboard import DashboardScreen
from flash_tui.screens.dashboard_state import DashboardState
from flash_tui.screens.help import HelpScreen
from flash_tui.screens.logs import LogsScreen
from flash_tui.screens.route_tester import (
    HISTORY_FILE,
    BackendTester,
    HistoryEntry,
    RouteTarget,
    RouteTesterScreen,
    route_targets,
)
from flash_tui.target_watch import Cadence
from flash_tui.widgets.dashboard.endpoints_table import EndpointRow
from flash_tui.widgets.dashboard.manifest_tree import ManifestTree, TreeItem

# Actions that act on the dashboard; on other screens their keys mean something else or nothing.
DASHBOARD_ACTIONS = frozenset(
    {
        "build",
        "deploy",
        "deploy_all",
        "undeploy",
        "undeploy_all",
        "restart",
        "test_route",
        "logs",
        "rescan",
        "probe_health",
        "edit",
        "watch_deploy",
    }
)


def _now() -> datetime:
    return datetime.now().astimezone()


class FlashApp(DeploymentActions):
    """flash-tui: live manifest, deployment status, drift, health and logs of one project."""

    CSS_PATH = "app.tcss"
    TITLE = "flash-tui"
    COMMANDS = App.COMMANDS | {FlashCommands}
    BINDINGS = bindings()

    def __init__(
        self,
        project: Path | str = ".",
        target: str = "local",
        *,
        clock: Callable[[], datetime] | None = None,
        connect: bool = True,
        watch: bool = True,
        statuses: Sequence[EndpointStatus] | None = None,
        health: Mapping[str, Sequence[float | None]] | None = None,
        backend: Backend | None = None,
        cadence: Cadence | None = None,
    ) -> None:
        backend = backend or Backend(Path(project), target)
        state = DashboardState(
            project=backend.project_name,
            target=target,
            scanning=True,
            mothership=backend.mothership,
            environment=backend.environment_shown,
        )
        if statuses is not None:
            state = replace(state, statuses={s.name: s for s in statuses})
        super().__init__(
            backend, clock or _now, state.with_history(health or {}), cadence or Cadence()
        )
        self.connect_target = connect
        self.watch_project = watch
        self.tester_history: list[HistoryEntry] = []
        self.scan_count = 0
        self._stop_watch = asyncio.Event()
        # Set to stop watch-deploy (`w`); None while it is off.
        self._stop_watch_deploy: asyncio.Event | None = None
        # The line `run` prints once the app has exited (endpoints left running), if any.
        self.quit_message: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def on_mount(self) -> None:
        self.dashboard = DashboardScreen(self.clock, self.logs)
        await self.push_screen(self.dashboard)
        self.dashboard.state = self._state
        if not self.scanned:  # the first frame comes before the scan: say it is coming
            self.dashboard.query_one(ManifestTree).show_loading(
                f"scanning {self.backend.project_name}…"
            )
        # The scan (a thread, holding the GIL most of the time) starts once the first frame is
        # painted: started earlier, it slows that frame and not the tree.
        self.call_after_refresh(self.rescan)
        self.log_engine(f"opening {self.backend.project_name} (target {self.backend.target})")
        if self.watch_project:
            self._watch()
        if self.connect_target:
            self._connect()

    async def action_quit(self) -> None:
        self._stop_watch.set()
        if self._stop_watch_deploy is not None:
            self._stop_watch_deploy.set()
        self.quit_message = self.running_message()
        self.exit()

    def running_message(self) -> str | None:
        """One line saying how many endpoints keep running after quitting, if any."""
        return still_running(
            self.state.statuses.values(), self.backend.target, self.backend.environment
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in DASHBOARD_ACTIONS and not isinstance(self.screen, DashboardScreen):
            return False
        return True

    # -- scanning -------------------------------------------------------------------------

    # Not exclusive: each batch names its own changed files, so none may be dropped; the
    # backend serialises scans.
    @work(thread=True, group="scan")
    def rescan(self, changed: Sequence[Path] = ()) -> None:
        """Scan off the UI thread; the result arrives as a ScanFinished message."""
        try:
            outcome = self.backend.scan(changed or None)
        except BackendError as exc:
            self.post_message(ScanFailed(str(exc)))
            return
        except Exception as exc:  # the engine promises diagnostics, but never crash the UI
            self.post_message(ScanFailed(f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(
            ScanFinished(
                outcome.manifest,
                outcome.diagnostics,
                list(changed),
                outcome.elapsed_ms,
                outcome.calls,
            )
        )

    @on(ScanFinished)
    def _scan_finished(self, message: ScanFinished) -> None:
        manifest = dict(message.manifest)
        diagnostics = tuple(message.diagnostics)
        trees = self.dashboard.query(ManifestTree)
        if not trees:
            return  # the scan ended while the app closes: its dashboard is already gone
        self.scan_count += 1
        first = not self.scanned
        self.scanned = True
        tree = trees.first()
        changed = tree.show(manifest, diagnostics)
        names = sorted({key[1] for key in changed if key[0] in {"endpoint", "function"}})
        if message.changed:
            files = ", ".join(sorted({p.name for p in message.changed})[:3])
            what = f"; changed: {', '.join(names)}" if names else ""
            self.log_engine(f"rescan ({files}) {message.elapsed_ms:.0f}ms{what}")
        elif self.scan_count == 1:
            count = len(manifest.get("resources") or {})
            self.log_engine(
                f"scanned: {count} endpoints, {len(self.state.diagnostics)} diagnostics"
            )
        self._update(
            manifest=manifest, diagnostics=diagnostics, calls=message.calls, scanning=False
        )
        if self.connected and (message.changed or first):
            # Drift depends on the code: ask the engine again now that the code changed.
            self._refresh_status()

    @on(ScanFailed)
    def _scan_failed(self, message: ScanFailed) -> None:
        self.log_engine(f"scan failed: {message.reason}", "error")
        self.notify(
            present.short_reason(message.reason),
            title="Cannot scan the project",
            severity="error",
            timeout=8,
        )
        # The reason stays in the tree: a notification fades, and an empty tree would show the
        # "no endpoints here" hint, which is not what happened.
        self.scanned = False
        for tree in self.dashboard.query(ManifestTree):  # none when the app closes meanwhile
            tree.show_error(message.reason)
        self._update(manifest={}, diagnostics=(), calls=CallGraph(), scanning=False)

    @work(exclusive=True, group="watch")
    async def _watch(self) -> None:
        try:
            from engine.watch import watch_project

            async for paths in watch_project(self.backend.project, stop_event=self._stop_watch):
                self.rescan(paths)
        except Exception as exc:  # a watcher failure must not take the app down; say so
            self.log_engine(f"file watcher stopped: {exc}", "warning")

    def action_watch_deploy(self) -> None:
        """Turn watch-deploy on or off: every save redeploys the endpoints that changed."""
        if self._stop_watch_deploy is not None:
            self._stop_watch_deploy.set()
            self._stop_watch_deploy = None
            self._update(watching=False)
            self.log_engine("watch-deploy off")
            return
        self._stop_watch_deploy = asyncio.Event()
        self._update(watching=True)
        self.log_engine("watch-deploy on: every save redeploys the endpoints that changed")
        self._watch_deploy(self._stop_watch_deploy)

    @work(exclusive=True, group="watch-deploy")
    async def _watch_deploy(self, stop: asyncio.Event) -> None:
        async def reloaded(reload: Reload) -> None:
            self.log_engine(reload.line(), "info" if reload.ok else "error")
            self._refresh_status()

        try:
            await self.backend.watch_deploy(reloaded).run(stop)
        except Exception as exc:  # the loop must not take the app down; say so and stop
            self.log_engine(f"watch-deploy stopped: {exc}", "warning")
            if self._stop_watch_deploy is stop:
                self._stop_watch_deploy = None
                self._update(watching=False)

    # -- rows and selection ---------------------------------------------------------------

    def rows(self) -> list[EndpointRow]:
        """Table rows: every endpoint in code or deployed, merged with status and health."""
        return self._state.rows(self.clock().timestamp())

    def on_dashboard_screen_selected(self, message: DashboardScreen.Selected) -> None:
        self._update(selection=message.item)

    def endpoint_names(self) -> list[str]:
        """Every endpoint in the code or deployed, by name."""
        return sorted(set(self.state.manifest.get("resources") or {}) | set(self.state.statuses))

    # -- screens --------------------------------------------------------------------------

    def route_targets(self) -> list[RouteTarget]:
        """LB routes and QB functions (class methods one by one), deployed endpoints first."""
        return route_targets(list_calls(self.state.manifest), self.deployed_names())

    def action_test_route(self) -> None:
        item = self.visible_selection()
        function = None
        if isinstance(item, TreeItem) and item.kind == "function":
            function = str(item.payload.get("name"))
        endpoint = item.endpoint if isinstance(item, TreeItem) else item
        # Nothing selected: the tester opens on its picker, nothing chosen for the person.
        self.push_screen(
            RouteTesterScreen(
                BackendTester(self.backend, self.route_targets()),
                self.tester_history,
                initial=endpoint,
                initial_function=function,
                history_file=self.backend.project / HISTORY_FILE,
            )
        )

    def action_logs(self) -> None:
        # The selected endpoint's lines (one key from a resource to its logs), all without one.
        self.open_logs(self.selected_endpoint())

    def open_logs(self, endpoint: str | None = None) -> None:
        """The logs screen, filtered to `endpoint` (all endpoints when None)."""
        if (
            endpoint is not None
            and self.connected
            and endpoint not in self.deployed_names()
            and not any(record.source == endpoint for record in self.logs)
        ):
            self._post_mortem(endpoint)  # its last lines are kept until its next deploy
            return
        self.push_screen(LogsScreen(self.logs, self.endpoint_names(), endpoint))

    @work(exclusive=True, group="post-mortem")
    async def _post_mortem(self, endpoint: str) -> None:
        """Load what a not deployed endpoint wrote before it stopped, then open its logs."""
        try:
            lines = await self.backend.logs(endpoint)
        except BackendError:
            lines = []  # never deployed, or its logs went with a redeploy: the screen says none
        if lines:
            self.logs.append(
                self.stamp(), endpoint, "(not deployed; last lines before it stopped)", "warning"
            )
        for line in lines:
            stamp = present.clock_time(line.at)
            level = "error" if line.source == "error" else "info"
            self.logs.append(stamp, line.endpoint, line.text, level, line.probe)
        self.push_screen(LogsScreen(self.logs, self.endpoint_names(), endpoint))

    def action_edit(self) -> None:
        where = editor.locate(self.visible_selection(), self.state.manifest, self.backend.project)
        if where is None:
            self.notify("Select a function, an endpoint or a diagnostic first", severity="warning")
            return
        try:
            argv = editor.editor_command(os.environ.get("EDITOR"), where)
        except editor.EditorError as exc:
            self.notify(str(exc), severity="warning")
            return
        editor.open_in_editor(self, argv)

    def action_rescan(self) -> None:
        self.log_engine("rescan requested")
        self.rescan()
        if not self.connect_target:
            return
        if not self.connected:
            self._update(target=f"{self.backend.target} connecting…")
        # Connect again even when connected: the service may have been restarted elsewhere
        # (another address); connecting finds the running one and refreshes the status.
        self.log_engine(f"connecting to {self.backend.target} again")
        self._connect()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """`flash-tui [PATH] [--target local|runpod]`."""
    parser = argparse.ArgumentParser(prog="flash-tui", description="Open the flash-tui dashboard.")
    parser.add_argument("path", nargs="?", default=".", help="project directory (default .)")
    parser.add_argument("--target", choices=list(TARGETS), default="local")
    parser.add_argument(
        "--env", metavar="NAME", help="the app's environment on RunPod (default production)"
    )
    parser.add_argument(
        "--mothership",
        action="store_true",
        help="D deploys the environment's mothership, which provisions the other endpoints",
    )
    return parser.parse_args(list(argv))


def run(argv: Sequence[str]) -> int:
    """Open the TUI on the project given on the command line."""
    args = parse_args(argv)
    app = FlashApp(
        Path(args.path),
        args.target,
        backend=Backend(Path(args.path), args.target, args.env, mothership=args.mothership),
    )
    app.run()
    if app.quit_message:
        print(app.quit_message)
    return 0


# `textual run flash_tui.app` / `textual serve "python -m flash_tui.app PATH"` entry point.
if __name__ == "__main__":
    import sys

    raise SystemExit(run(sys.argv[1:]))
