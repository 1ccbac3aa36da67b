"""A virtual log view: renders only the visible rows, so 10,000-line bursts never freeze the UI."""

from __future__ import annotations

import re

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollTo, ScrollUp
from textual.strip import Strip

from flash_tui.widgets.logs.buffer import LogBuffer, LogRecord

SOURCE_WIDTH = 12
_SOURCE_COLOURS = ["cyan", "magenta", "green", "blue", "yellow", "bright_cyan", "bright_magenta"]
_LEVEL_STYLES = {"error": "red", "warning": "yellow"}


def is_probe(record: LogRecord) -> bool:
    """A worker's access-log line for a health probe (the engine's rule, as `logs` applies it:
    useful in the logs screen, noise elsewhere)."""
    return record.probe


def source_colour(source: str) -> str:
    """A stable colour per source, so one endpoint's lines are recognisable at a glance."""
    if source == "engine":
        return "bold white"
    return _SOURCE_COLOURS[sum(map(ord, source)) % len(_SOURCE_COLOURS)]


class LogView(ScrollView, can_focus=True):
    """Shows the records of a `LogBuffer`, optionally for one source, highlighting a search.

    The view keeps a list of the matching records and appends to it as the buffer grows
    (`pull()`), so each refresh costs only the new lines; rendering is per visible row.

    Follow mode keeps the newest line in view. Scrolling up (keys, wheel, scrollbar) turns it
    off, so new lines do not yank the view away from what a person is reading; scrolling back
    to the end, or `f`, turns it on again. With `title` the border title shows the state.
    """

    DEFAULT_CSS = """
    LogView { background: $surface; }
    """

    BINDINGS = [
        Binding("end", "scroll_end", "Newest", show=False),
        Binding("home", "scroll_home", "Oldest", show=False),
        Binding("f", "toggle_follow", "Follow", show=False),
    ]

    follow: reactive[bool] = reactive(True)
    source_filter: reactive[str | None] = reactive(None)
    search: reactive[str] = reactive("")
    show_probes: reactive[bool] = reactive(False)

    def __init__(
        self,
        buffer: LogBuffer,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        title: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.buffer = buffer
        self.pane_title = title
        if title:
            self.border_title = f"{title} · following"
        # True while the view moves itself (a search jump): only a person's scroll may turn
        # following back on.
        self._moving_itself = False
        self._rows: list[LogRecord] = []
        self._seen = -1
        self._max_width = 0
        self._cache: LRUCache[tuple[int, str], Strip] = LRUCache(1024)

    @property
    def row_count(self) -> int:
        """Rows currently matching the filter."""
        return len(self._rows)

    @property
    def rows(self) -> list[LogRecord]:
        """The records shown, oldest first."""
        return self._rows

    def _matches(self, record: LogRecord) -> bool:
        if not self.show_probes and is_probe(record):
            return False
        return self.source_filter is None or record.source == self.source_filter

    def pull(self) -> int:
        """Take records newer than the last seen from the buffer; returns how many were shown."""
        new = [r for r in self.buffer.since(self._seen) if self._matches(r)]
        if self.buffer.last_seq >= 0:
            self._seen = self.buffer.last_seq
        if not new and self._rows and self._rows[0].seq >= self.buffer.first_seq:
            return 0
        self._rows.extend(new)
        # Drop rows the buffer has evicted so the view stays as bounded as the buffer.
        first = self.buffer.first_seq
        if self._rows and self._rows[0].seq < first:
            cut = 0
            while cut < len(self._rows) and self._rows[cut].seq < first:
                cut += 1
            del self._rows[:cut]
            self._cache.clear()
        for record in new:
            self._max_width = max(self._max_width, len(record.text) + SOURCE_WIDTH + 10)
        self._update_size()
        if self.follow:
            # After the refresh: the new virtual size must be laid out before "end" means the end.
            self.call_after_refresh(self._to_end)
        return len(new)

    def _to_end(self) -> None:
        if self.follow:
            self.scroll_to(y=self.max_scroll_y, animate=False)

    def rebuild(self) -> None:
        """Recompute the rows from the whole buffer (after the filter changed)."""
        self._rows = []
        self._seen = -1
        self._cache.clear()
        self.pull()
        self.refresh()

    def _update_size(self) -> None:
        self.virtual_size = Size(self._max_width, len(self._rows))

    def watch_source_filter(self) -> None:
        self.rebuild()

    def watch_show_probes(self) -> None:
        self.rebuild()

    def watch_search(self) -> None:
        self._cache.clear()
        self.refresh()

    def watch_follow(self, follow: bool) -> None:
        if self.pane_title:
            self.border_title = f"{self.pane_title} · {'following' if follow else 'paused'}"
        if follow:
            self.call_after_refresh(self._to_end)

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    # A person scrolling up: every way of doing it pauses following (when there is anything to
    # scroll; a view that fits its lines has nothing to pause).

    def _scrolled_up(self) -> None:
        if self.max_scroll_y > 0:
            self.follow = False

    def action_scroll_up(self) -> None:
        self._scrolled_up()
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self._scrolled_up()
        super().action_page_up()

    def action_scroll_home(self) -> None:
        self._scrolled_up()
        super().action_scroll_home()

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._scrolled_up()
        super()._on_mouse_scroll_up(event)

    def _on_scroll_up(self, event: ScrollUp) -> None:  # a click on the scrollbar track
        self._scrolled_up()
        super()._on_scroll_up(event)

    def _on_scroll_to(self, message: ScrollTo) -> None:  # the scrollbar thumb dragged
        if message.y is not None and message.y < self.scroll_y:
            self._scrolled_up()
        super()._on_scroll_to(message)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        # Scrolled down to the newest line again: follow from here.
        at_end = new_value >= self.max_scroll_y
        if not self.follow and not self._moving_itself and new_value > old_value and at_end:
            self.follow = True

    def search_hits(self) -> list[int]:
        """Row indices whose text contains the search (case-insensitive)."""
        if not self.search:
            return []
        needle = self.search.lower()
        return [i for i, r in enumerate(self._rows) if needle in r.text.lower()]

    def scroll_to_row(self, row: int) -> None:
        """Bring `row` into view (stops following so the view does not jump away)."""
        self.follow = False
        self._moving_itself = True
        try:
            self.scroll_to(y=max(0, row - self.size.height // 2), animate=False)
        finally:
            self._moving_itself = False

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        style = self.rich_style
        if index >= len(self._rows):
            return Strip.blank(width, style)
        record = self._rows[index]
        key = (record.seq, self.search)
        strip = self._cache.get(key)
        if strip is None:
            strip = self._render_record(record, style)
            self._cache[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, index)

    def _render_record(self, record: LogRecord, base: Style) -> Strip:
        text = Text(no_wrap=True, end="")
        text.append(record.time + " ", style="dim")
        text.append(
            f"{record.source[:SOURCE_WIDTH]:<{SOURCE_WIDTH}} ", style=source_colour(record.source)
        )
        body = Text(record.text, style=_LEVEL_STYLES.get(record.level, ""))
        if self.search:
            body.highlight_regex(
                re.compile(re.escape(self.search), re.IGNORECASE), "black on yellow"
            )
        text.append_text(body)
        segments = list(text.render(self.app.console))
        return Strip(Segment.apply_style(segments, base), text.cell_len)
