"""Full-screen logs: all endpoints or one, follow and wrap toggles, search with highlight and
jumps ("match 2/5")."""

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

# (key, action, footer title, help): the footer, the bindings and this screen's help agree.
LOG_KEYS: list[tuple[str, str, str, str]] = [
    ("escape", "close", "Back", "Back to the dashboard (from the search box too)"),
    ("f", "toggle_follow", "Follow", "Follow the newest line, or stop following"),
    ("w", "toggle_wrap", "Wrap", "Wrap long lines, or scroll them sideways"),
    ("slash", "focus_search", "Search", "Search (enter jumps to the first match)"),
    ("n", "next_match", "Match", "Next match (the state line says which: match 2/5)"),
    ("N", "previous_match", "", "Previous match"),
    ("e", "focus_filter", "Endpoint", "Pick one endpoint, the engine, or all"),
    ("p", "toggle_probes", "Probes", "Show or hide health-probe requests"),
    ("question_mark", "help", "Help", "These keys"),
]
# In the view, not the footer: they move, as in vim, k9s and lazydocker.
MOVE_KEYS: list[tuple[str, str]] = [
    ("j / k", "Down / up one line (also arrows, page up/down)"),
    ("g / G", "Oldest / newest line (also home / end)"),
]
_DISPLAY = {"slash": "/", "question_mark": "?"}


def log_help_rows() -> list[tuple[str, str]]:
    """(key, what it does) for every key of the logs screen."""
    return [(_DISPLAY.get(k, k), text) for k, _, _, text in LOG_KEYS] + MOVE_KEYS


class LogsScreen(Screen[None]):
    """Reads the app's shared log buffer; new lines are pulled on a short timer."""

    CSS_PATH = "logs.tcss"

    BINDINGS = [
        # A key without a footer title (N, next to n) is bound but not shown: 80 columns.
        Binding(key, action, title, key_display=_DISPLAY.get(key), show=bool(title))
        for key, action, title, _ in LOG_KEYS
    ]

    def __init__(self, buffer: LogBuffer, endpoints: list[str], source: str | None = None) -> None:
        super().__init__()
        self.buffer = buffer
        self.endpoints = endpoints
        self.initial_source = source
        self._match = -1

    def compose(self) -> ComposeResult:
        # Endpoints in the buffer too: an undeployed or crashed one's lines stay readable.
        names = dict.fromkeys([*self.endpoints, *self.buffer.sources()])
        if self.initial_source:
            names[self.initial_source] = None
        names.pop("engine", None)
        options = [("all endpoints", ALL), ("engine", "engine")] + [(n, n) for n in names]
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

    def on_resize(self) -> None:
        # At 80 columns the logs keys need the palette hint's room (help lists ctrl+p).
        self.query_one(Footer).show_command_palette = self.size.width >= 100

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
        search = ""
        if view.search:
            at = f"match {self._match + 1}/{hits}" if 0 <= self._match < hits else f"{hits} matches"
            search = f" · {at}"
        if view.wrap:
            follow += " · wrap"
        self.query_one("#logs-state", Label).update(
            f"{source} · {follow} · {view.row_count} lines{search}"
        )
        self.sub_title = source

    def action_close(self) -> None:
        # One press, from the search box too: a second escape to leave was a trap.
        self.dismiss(None)

    def action_toggle_follow(self) -> None:
        view = self.query_one(LogView)
        view.follow = not view.follow
        self._update_state()

    def action_toggle_wrap(self) -> None:
        view = self.query_one(LogView)
        view.wrap = not view.wrap
        if 0 <= self._match < len(view.search_hits()):
            view.scroll_to_row(view.search_hits()[self._match])
        self._update_state()

    def action_help(self) -> None:
        from flash_tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen(log_help_rows(), title="flash-tui · logs keys"))

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
        if self._match < 0 and step < 0:
            self._match = 0
        self._match = (self._match + step) % len(hits)
        view.current_match = hits[self._match]
        view.scroll_to_row(hits[self._match])
        self._update_state()

    def action_next_match(self) -> None:
        self._jump(1)

    def action_previous_match(self) -> None:
        self._jump(-1)

    @on(Input.Changed, "#logs-search")
    def _search(self, event: Input.Changed) -> None:
        view = self.query_one(LogView)
        view.search = event.value
        view.current_match = -1
        self._match = -1
        self._update_state()

    @on(Input.Submitted, "#logs-search")
    def _search_submitted(self) -> None:
        self.query_one(LogView).focus()
        self._jump(1)

    @on(Select.Changed, "#logs-source")
    def _source(self, event: Select.Changed) -> None:
        value = event.value
        view = self.query_one(LogView)
        view.current_match = -1
        self._match = -1
        view.source_filter = None if value in (ALL, Select.BLANK) else str(value)
        self._update_state()
