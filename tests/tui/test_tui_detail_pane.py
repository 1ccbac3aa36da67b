"""The detail pane follows the cursor without re-laying out the screen (issue 14 item 11)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hosts import offline_app
from rich.console import Group
from rich.text import Text
from textual.pilot import Pilot
from textual.screen import Screen
from waiting import until

from flash_tui.widgets.dashboard.detail_pane import DetailPane
from flash_tui.widgets.dashboard.manifest_tree import ManifestTree

pytestmark = pytest.mark.usefixtures("private_home")  # tests/tui/conftest.py


def _painted(pane: DetailPane) -> str:
    """The text the pane paints on its rows (not what it was told to show)."""
    return "\n".join(pane.render_line(y).text for y in range(pane.scrollable_content_region.height))


def _count_layouts(screen: Screen[None]) -> list[bool]:
    """Records each layout the screen performs: False for a full reflow, True for a scroll."""
    seen: list[bool] = []
    refresh: Callable[..., None] = screen._refresh_layout

    def counted(size: object = None, scroll: bool = False) -> None:
        seen.append(scroll)
        refresh(size, scroll)

    screen._refresh_layout = counted  # type: ignore[method-assign]
    return seen


async def _settled(pilot: Pilot[None], layouts: list[bool], deadline: float = 20.0) -> None:
    """Wait (bounded) until the screen goes three frames without a full layout: under load the
    start-up's own layouts (tree, table, footer) may still be coming when the test begins."""
    give_up = time.monotonic() + deadline
    while True:
        layouts.clear()
        for _ in range(3):
            await pilot.pause()
        if all(layouts) or time.monotonic() > give_up:
            layouts.clear()
            return


async def test_detail_follows_rapid_key_presses_to_the_selected_node(quickstart: Path) -> None:
    async with offline_app(quickstart, (120, 40)) as (app, pilot):
        tree = app.dashboard.query_one(ManifestTree)
        tree.focus()
        await pilot.pause()
        # Faster than the pane's once-a-frame update: only the last position may stay shown.
        await pilot.press(*["down"] * 7, "up", "down", "down")
        node = tree.cursor_node
        assert node is not None and node.data is not None
        item = node.data
        expected = item.endpoint if item.kind == "endpoint" else str(item.payload.get("name"))
        assert item.kind in ("endpoint", "function"), item
        pane = app.dashboard.query_one(DetailPane)
        await until(pilot, lambda: pane.border_title == expected)
        await pilot.pause()
        assert app.dashboard.state.selection == item
        assert str(expected) in _painted(pane)


async def test_showing_a_detail_does_not_lay_out_the_screen(quickstart: Path) -> None:
    async with offline_app(quickstart, (120, 40)) as (app, pilot):
        tree = app.dashboard.query_one(ManifestTree)
        await until(pilot, lambda: len(tree.root.children) >= 4, what="the tree filled")
        await pilot.pause()  # the tree and table laid out: the pane has its size
        pane = app.dashboard.query_one(DetailPane)
        size = pane.size
        visible = pane.scrollable_content_region.height
        layouts = _count_layouts(app.dashboard)
        await _settled(pilot, layouts)
        # Contents of different heights, all within the pane: nothing the screen's layout
        # depends on changes.
        for lines in (1, 3, visible - 1, 2):
            pane.show(Group(*(Text(f"short {lines}.{i}") for i in range(lines))), title="s")
            await pilot.pause()
            assert [scroll for scroll in layouts if not scroll] == [], "a full layout was requested"
            assert f"short {lines}.{lines - 1}" in _painted(pane)
        # Beyond the pane: the scrollbar comes (the compositor places it), then contents of
        # other heights, all beyond it, scroll inside the pane.
        pane.show(Group(*(Text(f"long {i}") for i in range(visible + 1))), title="l")
        await _settled(pilot, layouts)  # that one layout (the scrollbar's), however late
        for lines in (visible + 5, visible + 30, visible + 2):
            pane.show(Group(*(Text(f"long {lines}.{i}") for i in range(lines))), title="l")
            await pilot.pause()
            assert f"long {lines}.0" in _painted(pane)
            assert pane.max_scroll_y == lines - pane.scrollable_content_region.height
        assert [scroll for scroll in layouts if not scroll] == [], "a full layout was requested"
        assert pane.size == size
