"""Help screen: every key, what it does, and where the palette is."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from flash_tui.commands import ACTIONS, DISPLAY_KEYS


def help_table() -> Table:
    """Keys and descriptions of every app action, then the screen-level keys."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for action in ACTIONS:
        table.add_row(DISPLAY_KEYS.get(action.key, action.key), action.help)
    table.add_row("", "")
    for key, text in [
        ("ctrl+p", "Command palette: every action by name"),
        ("tab / shift+tab", "Move between tree, table, details and logs"),
        ("enter", "Expand a tree node / select a row"),
        ("escape", "Close a screen or cancel a dialog"),
        (
            "Selection",
            "d u t act on the highlighted tree node or table row (the one the details show); "
            "with none, they say so",
        ),
        ("Route tester", "ctrl+s or ctrl+enter send · ctrl+y copy as curl · ctrl+k curl with key"),
        ("Logs screen", "f follow · / search · n/N next/prev match · e endpoint · p health probes"),
    ]:
        table.add_row(key, text)
    return table


class HelpScreen(ModalScreen[None]):
    """Modal help; any of escape, q or ? closes it."""

    BINDINGS = [
        Binding("escape", "dismiss_help", "Close"),
        Binding("q", "dismiss_help", "Close", show=False),
        Binding("question_mark", "dismiss_help", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog help") as box:
            box.border_title = "flash-tui · keys"
            with VerticalScroll():
                yield Static(help_table())
            yield Static(Text("escape closes", style="dim"))

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
