"""The core of `FlashApp` that each of its parts builds on: the backend, the clock, the log
buffer, the dashboard screen, the one `DashboardState` it shows, and what is selected in it.

The app is built in layers, each a class over the one below, so every part reads the members it
uses from its base instead of declaring them again: `AppCore` → `TargetWatch` (connecting,
status, events, health, logs) → `DeploymentActions` (build, deploy, undeploy, restart) →
`FlashApp` (lifecycle, scan, file watch, screens). Each layer owns the state it sets up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from textual.app import App

from flash_tui.backend import Backend
from flash_tui.screens.dashboard import DashboardScreen
from flash_tui.screens.dashboard_state import DashboardState
from flash_tui.widgets.dashboard.manifest_tree import TreeItem
from flash_tui.widgets.logs.buffer import LogBuffer

__all__ = ["AppCore"]


class AppCore(App[None]):
    """The backend, clock, log and dashboard state the app's parts share; `state`'s one owner."""

    # Made on mount (a screen belongs to a running app); it renders `state`.
    dashboard: DashboardScreen

    def __init__(
        self, backend: Backend, clock: Callable[[], datetime], state: DashboardState
    ) -> None:
        super().__init__()
        self.backend = backend
        self.clock = clock
        self.logs = LogBuffer()
        self._state = state
        # The manifest holds the code as last scanned (not before the first scan, nor after a
        # failed one): status refreshes compare the target with it.
        self.scanned = False

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

    def refused_while_busy(self) -> bool:
        """True, said in a toast, while an operation runs: a key that would start another
        (or switch what it works on) waits for it."""
        if not self._state.busy:
            return False
        self.notify(
            f"Wait for the running {self._state.busy} to finish", title="Busy", severity="warning"
        )
        return True

    def _update(self, **changes: Any) -> None:
        self.state = replace(self._state, **changes)

    # -- logging --------------------------------------------------------------------------

    def stamp(self) -> str:
        """`HH:MM:SS` from the app's clock (injected in tests for stable frames)."""
        return self.clock().strftime("%H:%M:%S")

    def log_engine(self, text: str, level: str = "info", source: str = "engine") -> None:
        """Add an engine event line to the log pane."""
        self.logs.append(self.stamp(), source, text, level)

    # -- selection ------------------------------------------------------------------------

    def visible_selection(self) -> TreeItem | str | None:
        """What the person sees selected (the rule `d`, `u` and `t` follow)."""
        return self.dashboard.visible_selection()

    def selected_endpoint(self) -> str | None:
        """The endpoint of the visible selection (None when it is no endpoint's)."""
        item = self.visible_selection()
        return item.endpoint if isinstance(item, TreeItem) else item

    def deployed_names(self) -> list[str]:
        """Endpoints the target reports as deployed (any state but not deployed)."""
        return self._state.deployed_names()
