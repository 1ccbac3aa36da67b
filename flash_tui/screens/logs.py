"""Full-screen logs: all endpoints or one, follow toggle, search with highlight and jumps."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Select

from flash_tui.widgets.logs.buffer import LogBuffer
from flash_tui.widgets.logs.log_view import LogView

ALL = "__all__"


class LogsScreen(Screen[None]):
    """Reads the app's shared log buffer; new lines are pulled on a short timer."""

    CSS_PATH = "logs.tcss"

    BINDINGS = [
        Binding("escape", "close", "Back"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("slash", "focus_search", "Search", key_display="/"),
        Binding("n", "next_match", "Next"),
        Binding("N", "previous_match", "Prev"),
        Binding("e", "focus_filter", "Endpoint"),
        Binding("p", "toggle_probes", "Probes"),
    ]

    def __init__(self, buffer: LogBuffer, endpoints: list[str], source: str | None = None) -> None:
        super().__init__()
        self.buffer = buffer
        self.endpoints = endpoints
        self.initial_source = source
        self._match = -1

    def compose(self) -> ComposeResult:
        options = [("all endpoints", ALL), ("engine", "engine")] + [(n, n) for n in self.endpoints]
        with Horizontal(id="logs-bar"):
            yield Select(
                options, value=self.initial_source or ALL, allow_blank=False, id="logs-source"
            )
            yield Input(placeholder="search (/)", id="logs-search")
            yield Label("", id="logs-state")
        view = LogView(self.buffer, id="logs-view")
        view.source_filter = self.initial_source
        yield view
        yield Footer(compact=True)

    def on_mount(self) -> None:
        view = self.query_one(LogView)
        view.rebuild()
        view.focus()
        # Scrolling in the view turns following off and on: the state line says so at once.
        self.watch(view, "follow", lambda _: self._update_state(), init=False)
        self._update_state()
        # 10 Hz: often enough to feel live, rare enough that a 2,000 lines/s stream costs little.
        self.set_interval(0.1, self.pull)

    def pull(self) -> None:
        """Show newly buffered lines."""
        if self.query_one(LogView).pull():
            self._update_state()

    def _update_state(self) -> None:
        view = self.query_one(LogView)
        source = view.source_filter or "all"
        follow = "following" if view.follow else "paused"
        if view.show_probes:
            follow += " · probes"
        hits = len(view.search_hits()) if view.search else 0
        search = f" · {hits} matches" if view.search else ""
        self.query_one("#logs-state", Label).update(
            f"{source} · {follow} · {view.row_count} lines{search}"
        )
        self.sub_title = source

    def action_close(self) -> None:
        focused = self.focused
        if isinstance(focused, (Input, Select)):
            # First escape leaves the search field, the second one leaves the screen.
            self.query_one(LogView).focus()
            return
        self.dismiss(None)

    def action_toggle_follow(self) -> None:
        view = self.query_one(LogView)
        view.follow = not view.follow
        self._update_state()

    def action_toggle_probes(self) -> None:
        view = self.query_one(LogView)
        view.show_probes = not view.show_probes
        self._update_state()

    def action_focus_search(self) -> None:
        self.query_one("#logs-search", Input).focus()

    def action_focus_filter(self) -> None:
        self.query_one("#logs-source", Select).focus()

    def _jump(self, step: int) -> None:
        view = self.query_one(LogView)
        hits = view.search_hits()
        if not hits:
            self.notify("No matches", severity="warning", timeout=2)
            return
        self._match = (self._match + step) % len(hits)
        view.scroll_to_row(hits[self._match])
        self._update_state()

    def action_next_match(self) -> None:
        self._jump(1)

    def action_previous_match(self) -> None:
        self._jump(-1)

    @on(Input.Changed, "#logs-search")
    def _search(self, event: Input.Changed) -> None:
        self.query_one(LogView).search = event.value
        self._match = -1
        self._update_state()

    @on(Input.Submitted, "#logs-search")
    def _search_submitted(self) -> None:
        self.query_one(LogView).focus()
        self._jump(1)

    @on(Select.Changed, "#logs-source")
    def _source(self, event: Select.Changed) -> None:
        value = event.value
        self.query_one(LogView).source_filter = None if value in (ALL, Select.BLANK) else str(value)
        self._update_state()
