"""Small Textual apps that host what a Pilot test drives: one screen pushed on start, or some
widgets alone; the Pilot steps several dashboard tests take (a key on a selected endpoint,
a command from the palette); the route tester over an echo; and the endpoints' statuses they
feed the dashboard.

No tests here; the TUI test modules import it (`from hosts import ScreenHost, WidgetHost`), as
pytest puts this directory on `sys.path`.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fixedclock import noon
from rich.console import Console
from textual.app import App, ComposeResult
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Label, Static
from waiting import until

from engine.invoke import CallSpec
from engine.status import EndpointStatus
from flash_tui.app import FlashApp
from flash_tui.screens import route_tester
from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable

__all__ = [
    "EchoTester",
    "ScreenHost",
    "WidgetHost",
    "deployed_status",
    "endpoint_status",
    "local_app",
    "offline_app",
    "press_on_endpoint",
    "run_palette_command",
    "running_tester",
    "shown_response",
]


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


class EchoTester:
    """A route tester's backend (the screen's seam) answering each request with its body and
    headers; its curl commands carry the key only when asked."""

    def targets(self) -> list[route_tester.RouteTarget]:
        """POST /compute, then GET /greet."""
        post = CallSpec("api", True, method="POST", path="/compute", function="compute")
        get = CallSpec("api", True, method="GET", path="/greet", function="greet")
        return [route_tester.RouteTarget(post), route_tester.RouteTarget(get)]

    async def send(
        self, target: route_tester.RouteTarget, body: Any, headers: Mapping[str, str]
    ) -> route_tester.TesterResponse:
        """The request's body and headers, as a 200 with an authorization header."""
        echoed = {"body": body, "headers": dict(headers)}
        return route_tester.TesterResponse(200, 1.5, {"authorization": "Bearer sk-x"}, echoed)

    async def curl(
        self,
        target: route_tester.RouteTarget,
        body: Any,
        reveal_key: bool,
        headers: Mapping[str, str],
    ) -> str:
        """`curl -X METHOD -H 'Authorization: Bearer KEY' [-H ...] http://x/path`."""
        key = "sk-secret" if reveal_key else "$FLASH_ENDPOINT_KEY"
        extra = "".join(f" -H '{k}: {v}'" for k, v in headers.items())
        return (
            f"curl -X {target.method} -H 'Authorization: Bearer {key}'{extra} http://x{target.path}"
        )


@asynccontextmanager
async def running_tester(
    history_file: Path | None, size: tuple[int, int] = (100, 30)
) -> AsyncIterator[tuple[Pilot[None], route_tester.RouteTesterScreen]]:
    """The route tester over an `EchoTester`, its history kept in `history_file`, running."""
    app = ScreenHost(route_tester.RouteTesterScreen(EchoTester(), history_file=history_file))
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, route_tester.RouteTesterScreen)
        yield pilot, screen


def shown_response(screen: Screen[Any]) -> str:
    """The route tester's response pane as plain text, white space folded."""
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(screen.query_one("#response", Static).content)
    return " ".join(console.export_text().split())


@asynccontextmanager
async def offline_app(
    project: Path, size: tuple[int, int], **options: Any
) -> AsyncIterator[tuple[FlashApp, Pilot[None]]]:
    """The app on `project` offline (noon's clock, no cloud, no watcher unless `options` say
    otherwise; they also give statuses...), running, its first scan done."""
    app = FlashApp(project, **{"clock": noon, "connect": False, "watch": False, **options})
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        yield app, pilot


@asynccontextmanager
async def local_app(
    project: Path, size: tuple[int, int]
) -> AsyncIterator[tuple[FlashApp, Pilot[None]]]:
    """The app on `project` with the local cloud (no watcher), running, once it is connected
    and its first scan is done."""
    app = FlashApp(project, "local", watch=False)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.connected and app.scan_count >= 1, 60, "scan and cloud")
        yield app, pilot


async def run_palette_command(pilot: Pilot[Any], typed: str, wanted: str) -> None:
    """Open the command palette (ctrl+p), type `typed`, wait (with a deadline) until the
    highlighted command's prompt starts with `wanted`, and run it (enter)."""
    app = pilot.app
    await pilot.press("ctrl+p")
    await until(pilot, lambda: isinstance(app.screen, CommandPalette), what="the palette")
    await pilot.press(*typed)

    def highlighted() -> str:
        commands = app.screen.query_one("CommandList")
        index = commands.highlighted  # type: ignore[attr-defined]
        if index is None:
            return ""
        return str(commands.get_option_at_index(index).prompt)  # type: ignore[attr-defined]

    await until(pilot, lambda: highlighted().startswith(wanted), what=f"{wanted!r} highlighted")
    await pilot.press("enter")


async def press_on_endpoint(
    pilot: Pilot[Any], name: str, key: str, screen: type[Screen[Any]], timeout: float
) -> None:
    """Select `name` in the dashboard's table (focused), press `key`, and wait (with a deadline)
    for the `screen` it opens."""
    app = pilot.app
    assert isinstance(app, FlashApp)
    table = app.dashboard.query_one(EndpointsTable)
    table.focus()
    table.select_name(name)
    await pilot.pause()
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, screen), timeout, f"{screen.__name__}")


def endpoint_status(name: str, **fields: Any) -> EndpointStatus:
    """An endpoint's status as the engine reports it: healthy and in sync unless `fields` say
    otherwise (they set the rest: resource type, drift, url, role...)."""
    return EndpointStatus(
        name=name, **{"resource_type": None, "status": "healthy", "drift": "in_sync", **fields}
    )


def deployed_status(name: str, role: str = "endpoint", **fields: Any) -> EndpointStatus:
    """A deployed endpoint of the code, healthy and in sync unless `fields` say otherwise, with
    its `role` (`fields` set the rest: resource type, provisioning, start time...)."""
    return endpoint_status(name, **{"in_code": True, "deployed": True, "role": role, **fields})
