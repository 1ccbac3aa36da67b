"""One-line header: project · target · counts on the left, the clock on the right."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


class HeaderLine(Widget):
    """`flash-tui · quickstart · target: local · 5 endpoints · 2 drifted          12:04:31`."""

    DEFAULT_CSS = """
    HeaderLine { height: 1; background: $panel; color: $text; }
    """

    summary: reactive[str] = reactive("")
    # The same without details (host:port) for narrow terminals, where the counts matter more.
    compact: reactive[str] = reactive("")

    def __init__(self, clock: Callable[[], datetime], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._clock = clock

    def on_mount(self) -> None:
        # The clock is the only thing that changes on its own; one refresh a second is enough.
        self.set_interval(1.0, self.refresh)

    def render(self) -> Table:
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(justify="right", no_wrap=True)
        left = Text(" flash-tui", style="bold")
        clock = Text(self._clock().strftime("%H:%M:%S") + " ", style="bold")
        summary = self.summary
        room = self.size.width - clock.cell_len - left.cell_len - len(" · ") - 1
        if self.compact and len(summary) > room:
            summary = self.compact
        if summary:
            left.append(" · " + summary)
        grid.add_row(left, clock)
        return grid
