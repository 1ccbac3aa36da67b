"""Small Textual apps that host what a Pilot test drives: one screen pushed on start, or some
widgets alone.

No tests here; the TUI test modules import it (`from hosts import ScreenHost, WidgetHost`), as
pytest puts this directory on `sys.path`.
"""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Label

__all__ = ["ScreenHost", "WidgetHost"]


class ScreenHost(App[None]):
    """Pushes `screen` on start (over a base screen saying "base") and records what it was
    dismissed with in `results`."""

    def __init__(self, screen: Screen[Any]) -> None:
        super().__init__()
        self.hosted = screen
        self.results: list[Any] = []

    def compose(self) -> ComposeResult:
        yield Label("base")

    def on_mount(self) -> None:
        self.push_screen(self.hosted, self.results.append)


class WidgetHost(App[None]):
    """Shows `widgets`, alone on its screen."""

    def __init__(self, *widgets: Widget) -> None:
        super().__init__()
        self._widgets = widgets

    def compose(self) -> ComposeResult:
        yield from self._widgets
