"""Start-up and speed: the first frame comes before the scan and says so (never "0 endpoints");
what the app imports for it (no httpx; the SDK's pydantic models only when used); a log pane
that grows does not re-lay out the screen."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hosts import WidgetHost
from projectfiles import copy_example
from waiting import until

from engine.scan import scan_project
from flash_tui.app import FlashApp
from flash_tui.screens.dashboard_state import DashboardState
from flash_tui.widgets.dashboard.manifest_tree import ManifestTree
from flash_tui.widgets.logs.buffer import LogBuffer
from flash_tui.widgets.logs.log_view import LogView


def test_header_before_the_first_scan_says_scanning() -> None:
    summary, compact = DashboardState(project="p", target="local", scanning=True).header()
    assert "scanning…" in summary and "scanning…" in compact
    assert "0 endpoints" not in summary
    assert "0 endpoints" in DashboardState(project="p", target="local").header()[0]


async def test_the_loading_node_gives_way_to_the_scan(tmp_path: Path) -> None:
    project = copy_example("quickstart", tmp_path / "quickstart")
    scanned = scan_project(project)
    app = WidgetHost(ManifestTree(id="tree"))
    async with app.run_test() as pilot:
        tree = app.query_one(ManifestTree)
        tree.show_loading("scanning quickstart…")
        await pilot.pause()
        assert tree.shown_keys() == {("hint", "loading")}
        assert "scanning quickstart…" in str(tree.root.children[0].label)
        tree.show(dict(scanned.manifest), list(scanned.diagnostics))
        await pilot.pause()
        assert ("hint", "loading") not in tree.shown_keys()
        assert ("endpoint", "gateway") in tree.shown_keys()
        assert tree.flashing == set()  # the first scan's nodes are not "changed" ones


class _Observed(FlashApp):
    """The app, noting what its dashboard shows when the first scan starts (the real one)."""

    CSS_PATH = Path(sys.modules[FlashApp.__module__].__file__ or "").parent / "app.tcss"
    first_frame: tuple[str, set[tuple[str, ...]]] | None = None

    def rescan(self, changed: Sequence[Path] = ()) -> Any:
        if self.first_frame is None:
            keys = self.dashboard.query_one(ManifestTree).shown_keys()
            self.first_frame = (self.state.header()[0], keys)
        return super().rescan(changed)


async def test_the_app_opens_on_scanning_then_shows_the_tree(tmp_path: Path) -> None:
    project = copy_example("quickstart", tmp_path / "quickstart")
    app = _Observed(project, connect=False, watch=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1, 30, "the first scan")
        assert app.first_frame is not None
        header, keys = app.first_frame
        assert "scanning…" in header and "endpoints" not in header
        assert keys == {("hint", "loading")}
        assert "4 endpoints" in app.state.header()[0]
        keys = app.dashboard.query_one(ManifestTree).shown_keys()
        assert ("hint", "loading") not in keys and ("endpoint", "api") in keys


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_the_app_imports_no_http_client() -> None:
    loaded = _loaded_after("import flash_tui.app")
    assert "httpx" not in loaded and "fastapi" not in loaded


def test_runtime_loads_its_models_on_first_use() -> None:
    assert "runtime.resources" not in _loaded_after("import runtime.errors")
    # `remote` stays the decorator even once its submodule is imported (the names clash).
    loaded = _loaded_after(
        "import runtime.remote, runtime; from runtime import remote, LiveServerless; "
        "assert callable(remote) and not isinstance(remote, type(sys)); "
        "assert runtime.remote is remote"
    )
    assert "runtime.resources" in loaded


async def test_a_growing_log_scrolls_without_relaying_out_the_screen() -> None:
    buffer = LogBuffer()
    for i in range(100):
        buffer.append("12:00:00", "api", f"line {i:04d}")
    app = WidgetHost(LogView(buffer, id="log"))
    async with app.run_test(size=(80, 20)) as pilot:
        view = app.query_one(LogView)
        view.pull()
        await pilot.pause()
        before = view.virtual_size
        assert before.height > view.scrollable_content_region.height  # it scrolls already
        for i in range(100, 150):
            buffer.append("12:00:01", "api", f"line {i:04d}")
        view.pull()
        # Only the scroll range grew: no layout asked for (Textual's flag on the widget).
        assert not view._layout_required
        grown = view.virtual_size.height
        assert grown > before.height
        assert view.vertical_scrollbar.window_virtual_size == grown
        await pilot.pause()
        assert view.scroll_y == view.max_scroll_y  # following: the newest line is in view
        assert "line 0149" in " ".join(str(s.text) for s in view.render_lines(view.region))
