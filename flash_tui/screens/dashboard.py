"""The dashboard: header, manifest tree, endpoints table, detail pane, log pane, footer.

It renders a DashboardState (set by the app as work lands) and says what the person selects
with a `Selected` message. `/` filters the tree and the table (flash_tui/filtering.py) until
escape clears it. While a long operation runs, `escape` (with no filter to clear) and `ctrl+c`
ask for it to be cancelled with a `CancelRequested` message; the progress line says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from typing import Any

from textual import on
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import DescendantFocus
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Label, ProgressBar, Tree

from flash_tui.filtering import filter_rows
from flash_tui.screens.dashboard_state import DashboardState
from flash_tui.widgets.dashboard.detail_pane import DetailPane
from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable
from flash_tui.widgets.dashboard.header_line import HeaderLine
from flash_tui.widgets.dashboard.manifest_tree import ManifestTree, TreeItem
from flash_tui.widgets.logs.buffer import LogBuffer
from flash_tui.widgets.logs.log_view import LogView
from flash_tui.widgets.panes import titled

SELECT_DELAY = 0.03
# Every field of the state but the selection: what the table's rows may depend on.
_ROW_INPUTS = tuple(f for f in fields(DashboardState) if f.name != "selection")
# From this width the detail pane sits beside the table (which still gets ~80 columns).
WIDE = 170


class _Footer(Footer):
    """Textual's footer, recomposed once per frame however often the bindings change in it:
    at start-up they change five times before the first frame, and each recompose mounts
    every key anew (a third of the start-up's CPU time went there)."""

    _recompose_pending = False

    def bindings_changed(self, screen: Screen[Any]) -> None:
        if self._recompose_pending and screen is self.screen:
            return  # the recompose already scheduled shows these bindings too
        scheduled = screen.app.app_focus and self.is_attached and screen is self.screen
        super().bindings_changed(screen)
        self._recompose_pending = bool(scheduled)

    async def recompose(self) -> None:
        self._recompose_pending = False
        await super().recompose()


class DashboardScreen(Screen[None]):
    """Shows `state`; posts `Selected` when the person picks something in the tree or table."""

    CSS_PATH = "dashboard.tcss"

    BINDINGS = [
        Binding("slash", "filter", "Filter", key_display="/", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("ctrl+c", "cancel_operation", "Cancel", show=False),
    ]

    # The widgets repaint what changed; a repaint of the whole screen per state would not.
    state: reactive[DashboardState] = reactive(
        DashboardState, always_update=True, init=False, repaint=False
    )

    class Selected(Message):
        """The tree node or table row (endpoint name) the person picked; None: nothing."""

        def __init__(self, item: TreeItem | str | None) -> None:
            super().__init__()
            self.item = item

    class CancelRequested(Message):
        """The person asked for the running operation (build, deploy) to be cancelled."""

    def __init__(self, clock: Callable[[], datetime], logs: LogBuffer) -> None:
        super().__init__()
        self._clock = clock
        self._logs = logs
        self._detail_pending: TreeItem | str | None = None
        self._detail_timer: Timer | None = None
        self._filter = ""

    def _on_select(self, item: TreeItem | str | None) -> None:
        # The detail pane re-lays out the screen; holding it back ~1 frame lets the cursor move
        # paint at once while a held arrow key scrolls through the tree.
        self._detail_pending = item
        if self._detail_timer is not None:
            self._detail_timer.stop()
        self._detail_timer = self.set_timer(SELECT_DELAY, self._flush_select)

    def _flush_select(self) -> None:
        self._detail_timer = None
        self.post_message(self.Selected(self._detail_pending))

    @property
    def filter_text(self) -> str:
        """The `/` filter in force ("" when none)."""
        return self._filter

    def _statuses(self, state: DashboardState) -> dict[str, str]:
        return {name: str(s.status) for name, s in state.statuses.items()}

    def _show_rows(self, state: DashboardState) -> None:
        # A health sample can land while the app shuts down and the widgets are gone.
        for table in self.query(EndpointsTable):
            rows = state.rows(self._clock().timestamp())
            table.show(filter_rows(rows, self._filter, state.manifest))

    def set_filter(self, text: str) -> None:
        """Show only the endpoints, functions and diagnostics `text` matches ("" clears)."""
        self._filter = text
        self.query_one(ManifestTree).apply_filter(text, self._statuses(self.state))
        self._show_rows(self.state)
        suffix = f" · /{text}" if text else ""
        self.query_one(ManifestTree).border_title = f"Manifest{suffix}"
        self.query_one(EndpointsTable).border_title = f"Endpoints{suffix}"

    def action_filter(self) -> None:
        self.query_one("#filter-bar").display = True
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        bar = self.query_one("#filter-bar")
        if not bar.display and not self._filter:
            if self.state.busy:
                self.post_message(self.CancelRequested())
            return
        self.query_one("#filter", Input).value = ""
        bar.display = False
        self.set_filter("")
        self.query_one(ManifestTree).focus()

    def action_cancel_operation(self) -> None:
        if not self.state.busy:
            raise SkipAction()  # ctrl+c keeps the app's meaning when nothing runs
        self.post_message(self.CancelRequested())

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.set_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        # The filter stays; the focus goes where j/k and the action keys work.
        if not event.value:
            self.query_one("#filter-bar").display = False
        self.query_one(ManifestTree).focus()

    def watch_state(self, old: DashboardState, state: DashboardState) -> None:
        # A new selection (every cursor move, a frame later) changes no row: the table keeps
        # its rows, and a key press does not wait for every row to be recomputed.
        if any(getattr(old, f.name) is not getattr(state, f.name) for f in _ROW_INPUTS):
            self._show_rows(state)
        if self._filter and old.statuses is not state.statuses:
            self.query_one(ManifestTree).apply_filter(self._filter, self._statuses(state))
        for header in self.query(HeaderLine):
            header.summary, header.compact = state.header()
        # The detail pane re-lays out the screen: only when what it shows may have changed.
        inputs = ("selection", "manifest", "statuses", "events")
        selected = state.selection if isinstance(state.selection, str) else None
        if isinstance(state.selection, TreeItem) and state.selection.kind == "endpoint":
            selected = state.selection.endpoint
        probed = old.samples.get(selected or "") is not state.samples.get(selected or "")
        if probed or any(getattr(old, n) is not getattr(state, n) for n in inputs):
            detail = state.detail(self._clock().timestamp())
            if detail is not None:
                for pane in self.query(DetailPane):
                    pane.show(detail[0], title=detail[1])

    def visible_selection(self) -> TreeItem | str | None:
        """What the person sees selected (the rule `d`, `u` and `t` follow, README "Selection").

        The focused tree's highlighted node, or the focused table's highlighted row; with the
        focus elsewhere (details, logs), the one last picked there, which the detail pane shows.
        Never a cursor the person did not put there: an unfocused table's first row is not chosen.
        """
        table = self.query_one(EndpointsTable)
        if self.focused is table:
            return table.selected_name
        tree = self.query_one(ManifestTree)
        if self.focused is tree:
            node = tree.cursor_node
            return node.data if node is not None else None
        return self.state.selection

    def compose(self) -> ComposeResult:
        yield HeaderLine(self._clock, id="header")
        with Horizontal(id="filter-bar"):
            yield Label("/", id="filter-slash")
            yield Input(placeholder="name, type or status", id="filter", compact=True)
            yield Label("enter keeps · esc clears", id="filter-keys")
        with Horizontal(id="main"):
            yield titled(ManifestTree(id="tree"), "Manifest")
            with Vertical(id="right"):
                yield titled(EndpointsTable(id="table"), "Endpoints")
                yield titled(DetailPane(id="detail"), "Details")
        with Horizontal(id="progress-line"):
            yield Label("", id="progress-text")
            yield ProgressBar(id="progress", show_eta=False)
            yield Label("", id="progress-keys")
        log = LogView(self._logs, id="log-pane", title="Logs · all")
        yield log
        yield _Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(ManifestTree).focus()
        # Pull new log lines at 10 Hz: batching keeps a fast stream from flooding the UI.
        self.set_interval(0.1, self.query_one(LogView).pull)

    def on_resize(self) -> None:
        # Wide terminals get a side-by-side detail pane; below WIDE the table takes the width.
        self.set_class(self.size.width >= WIDE, "-wide")
        self.set_class(self.size.height < 30, "-short")
        # The palette hint costs 12 columns the action keys need at 80 columns (help lists ^p).
        self.query_one(Footer).show_command_palette = self.size.width >= 100

    # The detail pane follows whichever of tree and table has the focus; the other one's
    # cursor moving (rows added by a status update) must not steal the selection.

    @on(Tree.NodeHighlighted, "#tree")
    def _tree_highlight(self, event: Tree.NodeHighlighted[TreeItem]) -> None:
        if self.focused is event.control:
            self._on_select(event.node.data)

    @on(DataTable.RowHighlighted, "#table")
    def _row_highlight(self, event: DataTable.RowHighlighted) -> None:
        if self.focused is event.control and event.row_key.value is not None:
            self._on_select(str(event.row_key.value))

    def on_descendant_focus(self, event: DescendantFocus) -> None:
        if isinstance(event.widget, ManifestTree):
            node = event.widget.cursor_node
            self._on_select(node.data if node is not None else None)
        elif isinstance(event.widget, EndpointsTable) and event.widget.selected_name:
            self._on_select(event.widget.selected_name)
