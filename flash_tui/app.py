"""FlashApp: the Textual application. It runs engine work in workers and turns what they bring
into a new DashboardState, which the dashboard screen renders.

Here: the app's lifecycle, the scan and file watch, the target's status, events, health and
logs, and the screens it opens. The build, deploy and undeploy keys with their confirmations
are `deployment_actions.py`; the rules the state applies live in `screens/dashboard_state.py`,
the wording of outcomes in `reports.py`.

A little over 600 lines: the app is the one place where the engine's asynchronous work (scan,
status, events, health, logs) meets the screens, each as a short worker and its message handler.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App
from textual.timer import Timer

from engine.callgraph import CallGraph
from engine.diagnostics import Diagnostic
from engine.health import HealthMonitor, HealthSample
from engine.invoke import list_calls
from engine.provider import TARGETS
from engine.status import RUNNING, EndpointStatus, Status
from flash_tui import editor, present
from flash_tui.backend import Backend, BackendError
from flash_tui.commands import FlashCommands, bindings
from flash_tui.deployment_actions import DeploymentActions
from flash_tui.messages import (
    EngineUnavailable,
    HealthSampled,
    ScanFailed,
    ScanFinished,
    StatusUpdated,
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
from flash_tui.widgets.dashboard.endpoints_table import EndpointRow, EndpointsTable
from flash_tui.widgets.dashboard.manifest_tree import ManifestTree, TreeItem
from flash_tui.widgets.logs.buffer import LogBuffer

# Actions that act on the dashboard; on other screens their keys mean something else or nothing.
DASHBOARD_ACTIONS = frozenset(
    {
        "build",
        "deploy",
        "deploy_all",
        "undeploy",
        "undeploy_all",
        "test_route",
        "logs",
        "rescan",
        "probe_health",
        "edit",
    }
)
HEALTH_INTERVAL = 2.0
# The event log is asked for news every STATUS_INTERVAL seconds (one small request); the full
# status only when there is news, or every STATUS_SLOW_INTERVAL seconds (uptime, late changes).
STATUS_INTERVAL = 5.0
STATUS_SLOW_INTERVAL = 60.0
HEALTH_REDRAW = 0.5


def _now() -> datetime:
    return datetime.now().astimezone()


class FlashApp(DeploymentActions, App[None]):
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
    ) -> None:
        super().__init__()
        self.backend = backend or Backend(Path(project), target)
        self.clock = clock or _now
        self.connect_target = connect
        self.watch_project = watch
        self.logs = LogBuffer()
        self._state = DashboardState(project=self.backend.project_name, target=target)
        self.connected = False
        # The target's description as last reached: a change means the local cloud moved.
        self._reached: str | None = None
        self.tester_history: list[HistoryEntry] = []
        self.scan_count = 0
        # The manifest holds the code as last scanned (not before the first scan, nor after a
        # failed one): status refreshes compare the target with it.
        self.scanned = False
        self._stop_watch = asyncio.Event()
        self.health_monitor: HealthMonitor | None = None
        self._status_timer: Timer | None = None
        self._event_id = 0
        self._status_at = 0.0  # monotonic time of the last full status refresh
        self._stale: set[str] = set()  # endpoints whose sample was shown stale last tick
        self._redraw: Timer | None = None  # the pending redraw of health samples
        # The line `run` prints once the app has exited (endpoints left running), if any.
        self.quit_message: str | None = None
        if statuses is not None:
            self._state = replace(self._state, statuses={s.name: s for s in statuses})
        self._state = self._state.with_history(health or {})

    # -- the dashboard's state ------------------------------------------------------------

    @property
    def state(self) -> DashboardState:
        """What the dashboard shows; setting it renders the dashboard."""
        return self._state

    @state.setter
    def state(self, state: DashboardState) -> None:
        self._state = state
        dashboard = getattr(self, "dashboard", None)
        if dashboard is not None and dashboard.is_attached:
            dashboard.state = state

    def _update(self, **changes: Any) -> None:
        self.state = replace(self._state, **changes)

    @property
    def manifest(self) -> Mapping[str, Any]:
        """The manifest as last scanned (empty before a scan or after a failed one)."""
        return self._state.manifest

    @property
    def diagnostics(self) -> tuple[Diagnostic, ...]:
        """The diagnostics of the last scan."""
        return self._state.diagnostics

    @property
    def statuses(self) -> Mapping[str, EndpointStatus]:
        """The target's last report, by endpoint name."""
        return self._state.statuses

    @property
    def samples(self) -> Mapping[str, tuple[float | None, ...]]:
        """Health history (latency or None for a failed probe) per endpoint."""
        return self._state.samples

    @property
    def sampled_at(self) -> Mapping[str, tuple[str | None, int | None]]:
        """(url, pid) of the worker each sparkline was measured on."""
        return self._state.sampled_at

    @property
    def retired(self) -> frozenset[str]:
        """Endpoints whose probes are ignored (being or having been undeployed)."""
        return self._state.retired

    @property
    def events(self) -> Mapping[str, tuple[str, ...]]:
        """Recent target events per endpoint."""
        return self._state.events

    @property
    def busy(self) -> str | None:
        """The long operation running (build, deploy, undeploy), if any."""
        return self._state.busy

    # -- lifecycle ------------------------------------------------------------------------

    async def on_mount(self) -> None:
        self.dashboard = DashboardScreen(self.clock, self.logs)
        await self.push_screen(self.dashboard)
        self.dashboard.state = self._state
        self.log_engine(f"opening {self.backend.project_name} (target {self.backend.target})")
        self.rescan()
        if self.watch_project:
            self._watch()
        if self.connect_target:
            self._connect()

    async def action_quit(self) -> None:
        self._stop_watch.set()
        self.quit_message = self.running_message()
        self.exit()

    def running_message(self) -> str | None:
        """One line saying how many endpoints keep running after quitting, if any."""
        return still_running(self.statuses.values(), self.backend.target)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in DASHBOARD_ACTIONS and not isinstance(self.screen, DashboardScreen):
            return False
        return True

    # -- logging --------------------------------------------------------------------------

    def stamp(self) -> str:
        """`HH:MM:SS` from the app's clock (injected in tests for stable frames)."""
        return self.clock().strftime("%H:%M:%S")

    def log_engine(self, text: str, level: str = "info", source: str = "engine") -> None:
        """Add an engine event line to the log pane."""
        self.logs.append(self.stamp(), source, text, level)

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
        self.scan_count += 1
        first = not self.scanned
        self.scanned = True
        tree = self.dashboard.query_one(ManifestTree)
        changed = tree.show(manifest, diagnostics)
        names = sorted({key[1] for key in changed if key[0] in {"endpoint", "function"}})
        if message.changed:
            files = ", ".join(sorted({p.name for p in message.changed})[:3])
            what = f"; changed: {', '.join(names)}" if names else ""
            self.log_engine(f"rescan ({files}) {message.elapsed_ms:.0f}ms{what}")
        elif self.scan_count == 1:
            count = len(manifest.get("resources") or {})
            self.log_engine(f"scanned: {count} endpoints, {len(self.diagnostics)} diagnostics")
        self._update(manifest=manifest, diagnostics=diagnostics, calls=message.calls)
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
        self.dashboard.query_one(ManifestTree).show_error(message.reason)
        self._update(manifest={}, diagnostics=(), calls=CallGraph())

    @work(exclusive=True, group="watch")
    async def _watch(self) -> None:
        try:
            from engine.watch import watch_project

            async for paths in watch_project(self.backend.project, stop_event=self._stop_watch):
                self.rescan(paths)
        except Exception as exc:  # a watcher failure must not take the app down; say so
            self.log_engine(f"file watcher stopped: {exc}", "warning")

    # -- target status --------------------------------------------------------------------

    @work(exclusive=True, group="connect")
    async def _connect(self) -> None:
        try:
            target = await self.backend.connect()
        except BackendError as exc:
            self.post_message(EngineUnavailable(str(exc)))
            return
        first = self._reached is None
        self.connected = True
        self._reached = target
        self.log_engine(f"connected to {target}")
        self._update(target=target)
        self._refresh_status()
        if self.health_monitor is None:
            self._monitor()
        else:
            self.health_monitor.trigger()
        # A reconnect follows the (possibly new) service's logs without replaying old lines.
        self._follow_logs(20 if first else 0)
        # Restarts, uptime and supervisor states change without a health transition. Once: a
        # retry after a failed connect must not add a second timer.
        if self._status_timer is None:
            self._status_timer = self.set_interval(STATUS_INTERVAL, self._status_tick)

    @on(EngineUnavailable)
    def _unavailable(self, message: EngineUnavailable) -> None:
        self.connected = False
        # The header keeps saying so after the toast fades; `r` tries again.
        self._update(target=f"{self.backend.target} unreachable (r retries)")
        self.log_engine(f"target unavailable: {message.reason}", "warning")
        self.notify(
            present.short_reason(message.reason),
            title=f"Target {self.backend.target} unreachable",
            severity="warning",
        )

    @work(exclusive=True, group="tick")
    async def _status_tick(self) -> None:
        """The full status only when the event log has news or the slow interval is up."""
        stale = set(self._state.stale(self.clock().timestamp()))
        if stale != self._stale:  # a sample aged past its interval: the screen must say so
            self._stale = stale
            self.state = self._state
        slow = time.monotonic() - self._status_at >= STATUS_SLOW_INTERVAL
        if slow or not self.connected or await self._pull_events():
            self._refresh_status()

    @work(exclusive=True, group="status")
    async def _refresh_status(self) -> None:
        if not self.scanned:
            return  # the scan, when it lands, asks again: drift needs the code
        self._status_at = time.monotonic()
        # The monitor's latest samples, not a second round of probes; before it runs, one probe.
        monitor = self.health_monitor
        health = monitor.latest_samples() if monitor is not None else None
        try:
            statuses = await self.backend.status(self.manifest, self.diagnostics, health)
        except BackendError as exc:
            self._target_lost(str(exc))
            return
        self.post_message(StatusUpdated(statuses, self.backend.target_now()))
        await self._pull_events()

    def _target_lost(self, reason: str) -> None:
        """A refresh could not reach the target: the header says so until one can (once)."""
        if not self.connected:
            return  # already said; the next refresh that reaches it says so too
        self.connected = False
        self._update(target=f"{self.backend.target} unreachable (r retries)")
        self.log_engine(f"status failed: {reason}", "warning")

    async def _pull_events(self) -> bool:
        """New entries of the target's event log: per-endpoint history, crashes in the log pane.

        Whether there were any."""
        try:
            events = await self.backend.events(self._event_id)
        except BackendError:
            return False  # the status refresh says what is wrong
        first = self._event_id == 0
        state = self._state
        for event in events:
            self._event_id = max(self._event_id, event.id)
            name = event.endpoint
            if not name:
                continue
            stamp = datetime.fromtimestamp(event.at).astimezone().strftime("%H:%M:%S")
            text = f"{event.kind}: {event.message}".rstrip(": ")
            state = state.with_event(name, f"{stamp} {text}", keep=20)
            # Older history stays in the detail pane; new crashes and restarts are news.
            if not first and any(word in event.kind for word in ("crash", "restart", "fail")):
                self.logs.append(stamp, name, text, "error")
        if events:
            self.state = replace(self._state, events=state.events)
        return bool(events)

    @work(exclusive=True, group="health")
    async def _monitor(self) -> None:
        """Feed the engine's health monitor into the sparklines; transitions refresh status."""
        from engine.health import HealthChange

        monitor = self.backend.health_monitor(HEALTH_INTERVAL)
        monitor.prefer = self._visible_endpoints
        self.health_monitor = monitor
        events = monitor.events()
        monitor.start()
        try:
            async for event in events:
                if isinstance(event, HealthSample):
                    self.post_message(
                        HealthSampled(event.endpoint, event.ok, event.latency_ms, event.url)
                    )
                elif isinstance(event, HealthChange):
                    self.health_changed(event.endpoint, event.ok, event.detail)
        finally:
            await monitor.stop()

    def _visible_endpoints(self) -> set[str]:
        """The endpoints whose rows are on screen now (probed first)."""
        tables = self.dashboard.query(EndpointsTable)
        if not tables or self.screen is not self.dashboard:
            return set()
        table = tables.first()
        top = int(table.scroll_offset.y)
        rows = table.ordered_rows[top : top + max(1, table.size.height - 1)]
        return {str(row.key.value) for row in rows}

    def health_changed(self, endpoint: str, ok: bool, detail: str | None) -> None:
        """An endpoint turned healthy or unhealthy: say so and ask for the new status."""
        if endpoint in self.retired:
            return  # undeployed on purpose: its worker not answering is expected
        state = "healthy" if ok else f"unhealthy: {detail or 'no answer'}"
        self.log_engine(f"{endpoint} {state}", "info" if ok else "error")
        self._refresh_status()

    @work(exclusive=True, group="logs")
    async def _follow_logs(self, lines: int = 20) -> None:
        """Stream every deployed endpoint's log lines into the shared buffer."""
        try:
            async for line in self.backend.follow_logs(lines):
                # The time the worker wrote the line; an unstamped one (an old log file) shows
                # no time rather than the time it arrived.
                stamp = present.clock_time(line.at)
                level = "error" if line.source == "error" else "info"
                self.logs.append(stamp, line.endpoint, line.text, level, line.probe)
        except BackendError as exc:
            if "no logs to follow" in str(exc):
                return  # nothing deployed yet; a deploy restarts the stream
            self.log_engine(f"log stream stopped: {exc}", "warning")

    @on(StatusUpdated)
    def _status_updated(self, message: StatusUpdated) -> None:
        if not self.dashboard.query(EndpointsTable):
            return  # posted while the app closes: its dashboard is already gone
        if message.target is not None:
            self._reached_target(message.target)
        before = self._running_endpoints()
        self.state = self._state.with_statuses(message.statuses)
        if self.health_monitor is not None and self._running_endpoints() != before:
            # Deployed, undeployed or restarted elsewhere: the monitor's targets changed.
            self.health_monitor.refresh_targets()

    def _running_endpoints(self) -> set[tuple[str, str | None]]:
        return {(s.name, s.url) for s in self.statuses.values() if s.status in RUNNING}

    def _reached_target(self, target: str) -> None:
        """A refresh reached the target as `target`; a new address is a restarted service."""
        moved = self._reached is not None and target != self._reached
        if moved:
            self.log_engine(f"target restarted: now {target}")
        if moved or not self.connected:
            # The log streams ended with the old service: follow the new one (new lines only).
            self._follow_logs(0)
            if self.health_monitor is not None:
                self.health_monitor.trigger()
        self._reached = target
        self._update(target=target)
        self.connected = True

    @on(HealthSampled)
    def _health(self, message: HealthSampled) -> None:
        if not self.dashboard.query(EndpointsTable):
            return
        monitor = self.health_monitor
        every = monitor.probe_interval(message.endpoint) if monitor else HEALTH_INTERVAL
        state = self._state.with_sample(
            message.endpoint, message.ok, message.latency_ms, message.url, time.time(), every
        )
        if state is None:
            return
        shown = self.statuses.get(message.endpoint)
        if shown is not None and shown.status in (Status.HEALTHY, Status.UNHEALTHY):
            if (shown.status == Status.HEALTHY) != message.ok:
                self._refresh_status()  # the row says otherwise: the status follows the probe
        # Samples come one by one: redrawing the table for each would cost more than probing.
        # One redraw for the samples of the next HEALTH_REDRAW seconds (a failure at once).
        self._state = state
        if not message.ok:
            self.state = state
        elif self._redraw is None:
            self._redraw = self.set_timer(HEALTH_REDRAW, self._redraw_health)

    def _redraw_health(self) -> None:
        self._redraw = None
        self.state = self._state

    def rows(self) -> list[EndpointRow]:
        """Table rows: every endpoint in code or deployed, merged with status and health."""
        return self._state.rows(self.clock().timestamp())

    def on_dashboard_screen_selected(self, message: DashboardScreen.Selected) -> None:
        self._update(selection=message.item)

    def visible_selection(self) -> TreeItem | str | None:
        """What the person sees selected (the rule `d`, `u` and `t` follow)."""
        return self.dashboard.visible_selection()

    def selected_endpoint(self) -> str | None:
        """The endpoint of the visible selection (None when it is no endpoint's)."""
        item = self.visible_selection()
        return item.endpoint if isinstance(item, TreeItem) else item

    def endpoint_names(self) -> list[str]:
        """Every endpoint in the code or deployed, by name."""
        return sorted(set(self.manifest.get("resources") or {}) | set(self.statuses))

    def deployed_names(self) -> list[str]:
        """Endpoints the target reports as deployed (any state but not deployed)."""
        return self._state.deployed_names()

    # -- screens --------------------------------------------------------------------------

    def route_targets(self) -> list[RouteTarget]:
        """LB routes and QB functions (class methods one by one), deployed endpoints first."""
        return route_targets(list_calls(self.manifest), self.deployed_names())

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
        where = editor.locate(self.visible_selection(), self.manifest, self.backend.project)
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

    def action_switch_target(self) -> None:
        """Work on the next target (local cloud ↔ RunPod); nothing deployed is touched."""
        if self.busy:
            self.notify(f"wait for {self.busy} to finish", severity="warning")
            return
        names = list(TARGETS)
        target = names[(names.index(self.backend.target) + 1) % len(names)]
        self._switch_target(target)

    @work(exclusive=True, group="switch")
    async def _switch_target(self, target: str) -> None:
        # The old target's health probes and log stream stop; its statuses are not this one's.
        self.workers.cancel_group(self, "health")
        self.workers.cancel_group(self, "logs")
        self.workers.cancel_group(self, "status")
        if self.health_monitor is not None:
            await self.health_monitor.stop()
        self.health_monitor = None
        await self.backend.switch(target)
        self.connected, self._reached, self._event_id = False, None, 0
        self.state = replace(
            self._state, statuses={}, samples={}, sampled_at={}, events={}, target=target
        )
        self.log_engine(f"switched to target {target}")
        self._connect()

    def action_probe_health(self) -> None:
        if self.health_monitor is not None:
            self.health_monitor.trigger()  # every endpoint at the base rate again
        self._probe()

    @work(group="probe")
    async def _probe(self) -> None:
        try:
            samples = await self.backend.probe()
        except BackendError as exc:
            self.notify(str(exc), title="Health probe failed", severity="warning")
            return
        for sample in samples:
            self.post_message(
                HealthSampled(sample.endpoint, sample.ok, sample.latency_ms, sample.url)
            )
        self.notify(f"{len(samples)} endpoints probed", title="Health")

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
    return parser.parse_args(list(argv))


def run(argv: Sequence[str]) -> int:
    """Open the TUI on the project given on the command line."""
    args = parse_args(argv)
    app = FlashApp(
        Path(args.path), args.target, backend=Backend(Path(args.path), args.target, args.env)
    )
    app.run()
    if app.quit_message:
        print(app.quit_message)
    return 0


# `textual run flash_tui.app` / `textual serve "python -m flash_tui.app PATH"` entry point.
if __name__ == "__main__":
    import sys

    raise SystemExit(run(sys.argv[1:]))
