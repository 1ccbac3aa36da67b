"""Help screen: every key, what it does, and where the palette is (or one screen's own keys)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from flash_tui.commands import ACTIONS, DISPLAY_KEYS

SCREEN_KEYS: list[tuple[str, str]] = [
    ("ctrl+p", "Command palette: every action by name, per-endpoint commands too"),
    ("tab", "Move between tree, table, details and logs (shift+tab back)"),
    ("j k g G", "Down, up, first, last (tree, table, logs)"),
    ("/", "Filter the tree and the table by name, type or status (escape clears)"),
    ("enter", "Expand a tree node / select a row / the focused dialog button"),
    ("escape", "Close a screen, cancel a dialog, clear the filter"),
    ("esc ctrl+c", "While a build or deploy runs: cancel it (a deploy finishes what started)"),
    (
        "d u t l e R",
        "act on the highlighted tree node or table row (the one the details show); "
        "with none, d u e R say so, t l open on everything",
    ),
    ("tester", "ctrl+s or ctrl+enter send · ctrl+y copy as curl · ctrl+k curl with key"),
    ("logs", "f follow · w wrap · / search · n/N match · e endpoint · ? its keys"),
]


def app_help_rows() -> list[tuple[str, str]]:
    """(key, what it does) for every app action, then the keys every screen shares."""
    rows = [(DISPLAY_KEYS.get(a.key, a.key), a.help) for a in ACTIONS]
    return [*rows, ("", ""), *SCREEN_KEYS]


def help_table(rows: Sequence[tuple[str, str]] | None = None) -> Table:
    """Keys and descriptions, the app's by default."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for key, text in app_help_rows() if rows is None else rows:
        table.add_row(key, text)
    return table


class HelpScreen(ModalScreen[None]):
    """Modal help; any of escape, q or ? closes it. It scrolls (with a visible bar) when the
    terminal is too short for every key."""

    BINDINGS = [
        Binding("escape", "dismiss_help", "Close"),
        Binding("q", "dismiss_help", "Close", show=False),
        Binding("question_mark", "dismiss_help", "Close", show=False),
        Binding("j", "scroll('down')", "Down", show=False),
        Binding("k", "scroll('up')", "Up", show=False),
    ]

    def __init__(
        self, rows: Sequence[tuple[str, str]] | None = None, title: str = "flash-tui · keys"
    ) -> None:
        super().__init__()
        self.rows = rows
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog help") as box:
            box.border_title = self.title_text
            with VerticalScroll(id="help-body"):
                yield Static(help_table(self.rows))
            yield Static(Text("↑↓ j k scroll · escape closes", style="dim"), id="help-keys")

    def on_mount(self) -> None:
        # The body takes the focus so the arrow keys scroll it.
        self.query_one("#help-body").focus()

    def action_dismiss_help(self) -> None:
        self.dismiss(None)

    def action_scroll(self, direction: str) -> None:
        """Scroll the keys one line (j/k, as the arrows do)."""
        body = self.query_one("#help-body", VerticalScroll)
        if direction == "down":
            body.scroll_down(animate=False)
        else:
            body.scroll_up(animate=False)
