"""Watching the target, as a part of `FlashApp`: connecting, status, events, health and logs.

Connecting (and `r` connecting again) starts the rest: a status tick that asks the target's
event log for news and refreshes the full status only when there is some (or every
`Cadence.status_slow` seconds), the engine's health monitor feeding the sparklines, and the
log follow. A refresh that reaches the target at a new address follows the restarted service;
one that cannot reach it says so in the header. `T` switches targets, `h` probes now.

A layer of `FlashApp` over `AppCore` (see `app_core.py`): it works on the app's backend,
dashboard state and log, and owns the state of the watch (connection, timers, health monitor).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from textual import work

from engine.app_environments import picked_session
from engine.health import HealthMonitor, HealthSample
from engine.provider import TARGETS
from engine.status import RUNNING, Status
from flash_tui import present
from flash_tui.app_core import AppCore
from flash_tui.backend import BackendError
from flash_tui.messages import EngineUnavailable, HealthSampled, StatusUpdated
from flash_tui.screens.environment import EnvironmentChoice, EnvironmentScreen
from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable

if TYPE_CHECKING:
    from textual.timer import Timer

    from flash_tui.backend import Backend
    from flash_tui.screens.dashboard_state import DashboardState

__all__ = ["Cadence", "TargetWatch"]


@dataclass(frozen=True)
class Cadence:
    """How often the app looks at its target, in seconds."""

    # Base interval of the health probes (healthy endpoints back off from it; `h` resets it).
    health: float = 2.0
    # The event log is asked for news every `status` seconds (one small request); the full
    # status only when there is news, or every `status_slow` seconds (uptime, late changes).
    status: float = 5.0
    status_slow: float = 60.0
    # Health samples arriving within `redraw` seconds are drawn together (a failure at once).
    redraw: float = 0.5


class TargetWatch(AppCore):
    """The app's live view of its target: connection, status, events, health samples, logs."""

    def __init__(
        self,
        backend: Backend,
        clock: Callable[[], datetime],
        state: DashboardState,
        cadence: Cadence,
    ) -> None:
        super().__init__(backend, clock, state)
        self.cadence = cadence
        self.connected = False
        self.health_monitor: HealthMonitor | None = None
        # The target's description as last reached: a change means the local cloud moved.
        self._reached: str | None = None
        self._status_timer: Timer | None = None
        self._event_id = 0
        self._status_at = 0.0  # monotonic time of the last full status refresh
        self._stale: set[str] = set()  # endpoints whose sample was shown stale last tick
        self._redraw: Timer | None = None  # the pending redraw of health samples

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
            self._status_timer = self.set_interval(self.cadence.status, self._status_tick)

    def on_engine_unavailable(self, message: EngineUnavailable) -> None:
        """The target could not be reached: the header, the log and a toast say so."""
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
        slow = time.monotonic() - self._status_at >= self.cadence.status_slow
        if slow or not self.connected or await self._pull_events() or self._target_moved():
            self._refresh_status()

    def _target_moved(self) -> bool:
        """The last engine call reached the target at another address than the screen shows (a
        restarted local cloud with no news in its event log yet): the header must follow now,
        not at the next slow refresh."""
        now = self.backend.target_now()
        return self._reached is not None and now is not None and now != self._reached

    @work(exclusive=True, group="status")
    async def _refresh_status(self) -> None:
        if not self.scanned:
            return  # the scan, when it lands, asks again: drift needs the code
        self._status_at = time.monotonic()
        # The monitor's latest samples, not a second round of probes; before it runs, one probe.
        monitor = self.health_monitor
        health = monitor.latest_samples() if monitor is not None else None
        try:
            statuses = await self.backend.status(
                self.state.manifest, self.state.diagnostics, health
            )
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

        monitor = self.backend.health_monitor(self.cadence.health)
        monitor.prefer = self._visible_endpoints
        self.health_monitor = monitor
        events = monitor.events()
        monitor.start()
        try:
            async for event in events:
                if isinstance(event, HealthSample):
                    self.post_message(_sampled(event))
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
        if endpoint in self._state.retired:
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

    def on_status_updated(self, message: StatusUpdated) -> None:
        """The target's report becomes the dashboard's statuses."""
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
        return {(s.name, s.url) for s in self.state.statuses.values() if s.status in RUNNING}

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

    def on_health_sampled(self, message: HealthSampled) -> None:
        """A probe's sample joins the sparkline; a disagreeing one refreshes the status."""
        if not self.dashboard.query(EndpointsTable):
            return
        state = self._state.with_sample(
            message.endpoint,
            message.ok,
            message.latency_ms,
            message.url,
            message.at,
            message.fresh_until,
        )
        if state is None:
            return
        shown = self.state.statuses.get(message.endpoint)
        if shown is not None and shown.status in (Status.HEALTHY, Status.UNHEALTHY):
            if (shown.status == Status.HEALTHY) != message.ok:
                self._refresh_status()  # the row says otherwise: the status follows the probe
        # Samples come one by one: redrawing the table for each would cost more than probing.
        # One redraw for the samples of the next `cadence.redraw` seconds (a failure at once).
        self._state = state
        if not message.ok:
            self.state = state
        elif self._redraw is None:
            self._redraw = self.set_timer(self.cadence.redraw, self._redraw_health)

    def _redraw_health(self) -> None:
        self._redraw = None
        self.state = self._state

    def action_switch_target(self) -> None:
        """Work on the next target (local cloud ↔ RunPod); nothing deployed is touched."""
        if self.refused_while_busy():
            return
        names = list(TARGETS)
        target = names[(names.index(self.backend.target) + 1) % len(names)]
        self._switch_target(target)

    def action_toggle_mothership(self) -> None:
        """Deploy directly, or through the environment's mothership (`D` deploys it)."""
        if self.refused_while_busy():
            return
        self._apply_environment(self.backend.env, not self.backend.mothership)

    def action_pick_environment(self) -> None:
        """The environment dialog: the app's environments on the target and the deploy mode."""
        if self.refused_while_busy():
            return
        self._pick_environment()

    @work(exclusive=True, group="environments")
    async def _pick_environment(self) -> None:
        note = ""
        try:
            known = await self.backend.environments()
        except BackendError as exc:
            known, note = [], f"cannot list the environments: {exc}"
        screen = EnvironmentScreen(
            known,
            self.backend.environment_name,
            self.backend.mothership,
            self.backend.target,
            note,
            app_key=self.backend.app,
        )
        self.push_screen(screen, self._choose_environment)

    def _choose_environment(self, choice: EnvironmentChoice | None) -> None:
        if choice is not None:  # None: cancelled, nothing changes
            self._apply_environment(
                *picked_session(self.backend.target, choice.name, choice.mothership)
            )

    @work(exclusive=True, group="switch")
    async def _apply_environment(self, env: str | None, mothership: bool) -> None:
        """Work on `env` in deploy mode `mothership` from now on; another environment is
        reached as a switch of targets is (statuses cleared, reconnected), and nothing
        deployed anywhere is touched."""
        before = self.backend.environment_name
        changed = self.backend.choose_environment(env, mothership)
        self._update(mothership=mothership, environment=self.backend.environment_shown)
        if self.backend.environment_name != before:
            self.log_engine(f"environment: {self.backend.environment_name}")
        mode = "through the mothership" if mothership else "directly"
        self.log_engine(f"deploy mode: D deploys {mode}")
        if changed:
            # The engine's session was on the old environment: a new one, as for a new target.
            await self._reconnect(self.backend.target)

    @work(exclusive=True, group="switch")
    async def _switch_target(self, target: str) -> None:
        await self._reconnect(target)

    async def _reconnect(self, target: str) -> None:
        """Work on `target` in a new engine session: forget what the old one showed, connect."""
        # The old session's health probes and log stream stop; its statuses are not this one's.
        self.workers.cancel_group(self, "health")
        self.workers.cancel_group(self, "logs")
        self.workers.cancel_group(self, "status")
        if self.health_monitor is not None:
            await self.health_monitor.stop()
        self.health_monitor = None
        switched = target != self.backend.target
        await self.backend.switch(target)
        self.connected, self._reached, self._event_id = False, None, 0
        self.state = replace(
            self._state,
            statuses={},
            samples={},
            sampled_at={},
            events={},
            target=target,
            environment=self.backend.environment_shown,
        )
        if switched:
            self.log_engine(f"switched to target {target}")
        self._connect()

    def action_probe_health(self) -> None:
        if self.health_monitor is not None:
            self.health_monitor.trigger()  # every endpoint at the base rate again
        self._probe()

    @work(group="probe")
    async def _probe(self) -> None:
        try:
            samples = await self.backend.probe(self.cadence.health)
        except BackendError as exc:
            self.notify(str(exc), title="Health probe failed", severity="warning")
            return
        for sample in samples:
            self.post_message(_sampled(sample))
        self.notify(f"{len(samples)} endpoints probed", title="Health")


def _sampled(sample: HealthSample) -> HealthSampled:
    """The message of an engine sample (its freshness decided by the engine, not here)."""
    return HealthSampled(
        sample.endpoint, sample.ok, sample.latency_ms, sample.url, sample.at, sample.fresh_until
    )
