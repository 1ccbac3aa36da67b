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
from textual.widget import Widget

from flash_tui.widgets.logs.buffer import LogBuffer, LogRecord
from flash_tui.widgets.panes import vim_keys

SOURCE_WIDTH = 12
# `HH:MM:SS ` + the source column: where a wrapped line's text starts.
_PREFIX_WIDTH = 9 + SOURCE_WIDTH + 1
_SOURCE_COLOURS = ["cyan", "magenta", "green", "blue", "yellow", "bright_cyan", "bright_magenta"]
_LEVEL_STYLES = {"error": "red", "warning": "yellow"}
_MATCH_STYLE = "black on yellow"
_CURRENT_MATCH_STYLE = "bold black on bright_magenta"


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

    With `wrap` a long line continues on the next rows (indented under its text) instead of
    running off to the right; `current_match` (a row index) marks the search match jumped to.
    """

    DEFAULT_CSS = """
    LogView { background: $surface; }
    """

    BINDINGS = [
        Binding("end", "scroll_end", "Newest", show=False),
        Binding("home", "scroll_home", "Oldest", show=False),
        Binding("f", "toggle_follow", "Follow", show=False),
        *vim_keys("scroll_down", "scroll_up", "scroll_home", "scroll_end", ("Oldest", "Newest")),
    ]

    follow: reactive[bool] = reactive(True)
    source_filter: reactive[str | None] = reactive(None)
    search: reactive[str] = reactive("")
    show_probes: reactive[bool] = reactive(False)
    wrap: reactive[bool] = reactive(False)
    current_match: reactive[int] = reactive(-1)

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
        self._cache: LRUCache[tuple[int, str, bool, int, int], Strip] = LRUCache(1024)
        # With wrap on: (row, chunk) per display line, and each row's first display line.
        self._lines: list[tuple[int, int]] = []
        self._first_line: list[int] = []

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
        evicted = bool(self._rows) and self._rows[0].seq < self.buffer.first_seq
        if not new and not evicted:
            return 0  # polled ten times a second: nothing to lay out or scroll
        self._rows.extend(new)
        # Drop rows the buffer has evicted so the view stays as bounded as the buffer.
        first = self.buffer.first_seq
        if self._rows and self._rows[0].seq < first:
            cut = 0
            while cut < len(self._rows) and self._rows[cut].seq < first:
                cut += 1
            del self._rows[:cut]
            self._cache.clear()
            self.current_match = -1
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

    def _body_width(self) -> int:
        return max(8, self.size.width - _PREFIX_WIDTH)

    def _chunks(self, record: LogRecord) -> int:
        return max(1, -(-len(record.text) // self._body_width()))

    def _update_size(self) -> None:
        if not self.wrap:
            self._set_virtual_size(Size(self._max_width, len(self._rows)))
            return
        # Recounted whole: rows evicted at the front shift every index (cheap next to a frame).
        self._lines, self._first_line = [], []
        for row, record in enumerate(self._rows):
            self._first_line.append(len(self._lines))
            self._lines.extend((row, chunk) for chunk in range(self._chunks(record)))
        self._set_virtual_size(Size(self.size.width, len(self._lines)))

    def _set_virtual_size(self, size: Size) -> None:
        """Set the scrollable size; when only the scroll range grew (lines appended to a view
        already scrolling), without re-laying out the screen: `virtual_size` is a layout
        reactive, and a log streaming 2,000 lines/s re-laid out and repainted the whole
        dashboard ten times a second, in the way of every key press."""
        old = self.virtual_size
        update = getattr(self, "_scroll_update", None)  # Textual's own, for layout=False
        if (
            update is not None
            and size.width == old.width
            and min(old.height, size.height) > self.scrollable_content_region.height
        ):
            self.set_reactive(Widget.virtual_size, size)
            update(size)  # the scrollbars' range (and their visibility, if that changes)
            self.refresh()
        else:
            self.virtual_size = size

    def display_line(self, row: int) -> int:
        """The first display line of `row` (they differ once wrapped lines take several)."""
        return self._first_line[row] if self.wrap and row < len(self._first_line) else row

    def watch_wrap(self) -> None:
        self._cache.clear()
        self._update_size()
        self.refresh()
        if self.follow:
            self.call_after_refresh(self._to_end)

    def watch_current_match(self) -> None:
        self._cache.clear()
        self.refresh()

    def on_resize(self) -> None:
        if self.wrap:
            self._cache.clear()
            self._update_size()

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
            line = self.display_line(row)
            self.scroll_to(y=max(0, line - self.size.height // 2), animate=False)
        finally:
            self._moving_itself = False

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        style = self.rich_style
        if self.wrap:
            scroll_x = 0
            if index >= len(self._lines):
                return Strip.blank(width, style)
            row, chunk = self._lines[index]
        elif index >= len(self._rows):
            return Strip.blank(width, style)
        else:
            row, chunk = index, -1
        record = self._rows[row]
        current = row == self.current_match
        key = (record.seq, self.search, current, chunk, width if chunk >= 0 else 0)
        strip = self._cache.get(key)
        if strip is None:
            strip = self._render_record(record, style, current, chunk)
            self._cache[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, index)

    def _render_record(self, record: LogRecord, base: Style, current: bool, chunk: int) -> Strip:
        """One row: the whole record (`chunk` -1) or one wrapped piece of its text."""
        text = Text(no_wrap=True, end="")
        if chunk <= 0:
            # The current match's row is marked in the gutter too: a highlight alone is easy
            # to lose among the other matches.
            text.append(record.time, style="dim")
            text.append("▶" if current else " ", style="bold bright_magenta")
            text.append(
                f"{record.source[:SOURCE_WIDTH]:<{SOURCE_WIDTH}} ",
                style=source_colour(record.source),
            )
        else:
            text.append(" " * _PREFIX_WIDTH)
        body = Text(record.text, style=_LEVEL_STYLES.get(record.level, ""))
        if self.search:
            body.highlight_regex(
                re.compile(re.escape(self.search), re.IGNORECASE),
                _CURRENT_MATCH_STYLE if current else _MATCH_STYLE,
            )
        if chunk >= 0:
            size = self._body_width()
            body = body[chunk * size : (chunk + 1) * size]
        text.append_text(body)
        segments = list(text.render(self.app.console))
        return Strip(Segment.apply_style(segments, base), text.cell_len)
