"""Logs: bounded buffer, a 10,000-line burst that does not freeze the UI, filter, search, follow."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from hosts import ScreenHost, WidgetHost
from textual import events
from textual.pilot import Pilot
from textual.widgets import Input, Label, Select
from waiting import until

from flash_tui.screens.logs import LogsScreen
from flash_tui.widgets.logs.buffer import LogBuffer
from flash_tui.widgets.logs.log_view import LogView


def test_buffer_is_bounded_and_readers_catch_up() -> None:
    buffer = LogBuffer(capacity=100)
    for i in range(250):
        buffer.append("12:00:00", "api", f"line {i}")
    assert len(buffer) == 100
    assert buffer.first_seq == 150 and buffer.last_seq == 249
    assert [r.text for r in buffer.since(247)] == ["line 248", "line 249"]
    # A reader that fell behind further than the capacity gets what is left, not an error.
    assert len(buffer.since(10)) == 100
    assert buffer.since(249) == []


def test_multiline_text_becomes_one_record_per_line() -> None:
    buffer = LogBuffer()
    buffer.append("t", "api", "Traceback\n  File x\nValueError")
    assert [r.text for r in buffer] == ["Traceback", "  File x", "ValueError"]


def api_lines(texts: Iterable[str]) -> LogBuffer:
    """A log buffer holding `texts` as api's lines, all at 12:00:00."""
    buffer = LogBuffer()
    for text in texts:
        buffer.append("12:00:00", "api", text)
    return buffer


@asynccontextmanager
async def running_logs(
    buffer: LogBuffer, size: tuple[int, int]
) -> AsyncIterator[tuple[ScreenHost, Pilot[None]]]:
    """The logs screen of `buffer` (endpoints api and worker) pushed on start, running."""
    app = ScreenHost(LogsScreen(buffer, ["api", "worker"]))
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        yield app, pilot


async def test_burst_of_10000_lines_stays_responsive() -> None:
    buffer = LogBuffer()
    async with running_logs(buffer, (100, 30)) as (app, pilot):
        view = app.screen.query_one(LogView)
        for i in range(10_000):
            buffer.append("12:00:00", "api" if i % 2 else "worker", f"GET /x 200 {i}ms")
        # A key press right after the burst is handled (bench/tui.py times keys under load).
        await pilot.press("f")
        await until(pilot, lambda: view.row_count >= 10_000, 5, "10,000 rows")
        assert view.row_count == 10_000
        assert not view.follow  # "f" toggled follow off
        await pilot.press("f")
        await until(
            pilot, lambda: view.follow and view.scroll_y == view.max_scroll_y, 5, "following"
        )


async def test_filter_search_and_jump() -> None:
    buffer = LogBuffer()
    for i in range(200):
        buffer.append(
            "12:00:00", "api" if i % 2 else "worker", f"request {i} {'boom' if i == 151 else 'ok'}"
        )
    async with running_logs(buffer, (100, 30)) as (app, pilot):
        view = app.screen.query_one(LogView)
        assert view.row_count == 200
        app.screen.query_one(Select).value = "api"
        await pilot.pause()
        assert view.row_count == 100 and all(r.source == "api" for r in view.rows)
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"boom")
        await pilot.pause()
        assert view.search == "boom" and view.search_hits() == [75]
        await pilot.press("enter")  # jump to the first match
        await pilot.pause()
        assert view.scroll_y <= 75 < view.scroll_y + view.size.height
        state = str(app.screen.query_one("#logs-state", Label).render())
        assert "match 1/1" in state and "api" in state
        await pilot.press("escape")  # enter moved focus to the view: escape leaves the screen
        await pilot.pause()
        assert not isinstance(app.screen, LogsScreen)


async def test_next_and_previous_say_which_match_and_mark_it() -> None:
    buffer = api_lines(f"request {i} {'boom' if i % 20 == 3 else 'ok'}" for i in range(100))
    async with running_logs(buffer, (100, 30)) as (app, pilot):
        view = app.screen.query_one(LogView)
        state = app.screen.query_one("#logs-state", Label)
        await pilot.press("slash", *"boom")
        await until(pilot, lambda: "5 matches" in str(state.render()), what="5 matches")
        assert view.current_match == -1  # nothing jumped to yet
        await pilot.press("enter")
        await until(pilot, lambda: "match 1/5" in str(state.render()), what="match 1/5")
        assert view.current_match == 3
        await pilot.press("n")
        await until(pilot, lambda: "match 2/5" in str(state.render()), what="match 2/5")
        assert view.current_match == 23
        # The current match's row is marked in the gutter; another match's is not.
        line = view.render_line(23 - int(view.scroll_y)).text
        assert "▶" in line and "request 23 boom" in line
        assert "▶" not in view.render_line(43 - int(view.scroll_y)).text
        await pilot.press("N", "N")
        await until(pilot, lambda: "match 5/5" in str(state.render()), what="wraps to 5/5")
        assert view.current_match == 83


async def test_wrap_shows_a_long_line_whole() -> None:
    buffer = LogBuffer()
    long = " ".join(f"word{i}" for i in range(60)) + " THE-END"
    buffer.append("12:00:00", "api", long)
    buffer.append("12:00:01", "api", "short line")
    async with running_logs(buffer, (80, 24)) as (app, pilot):
        view = app.screen.query_one(LogView)

        def shown() -> str:
            return "\n".join(view.render_line(y).text for y in range(view.size.height))

        assert "THE-END" not in shown()  # cut at the right edge
        await pilot.press("w")
        await until(pilot, lambda: "THE-END" in shown(), what="the wrapped end")
        assert view.wrap and "wrap" in str(app.screen.query_one("#logs-state", Label).render())
        lines = shown().splitlines()
        # The continuation lines are indented under the text, the next record follows them.
        assert lines[0].startswith("12:00:00") and lines[1].startswith(" " * 20)
        assert any(line.startswith("12:00:01") for line in lines[2:])
        assert "".join(line.strip() for line in lines if "12:00:01" not in line).replace(
            "12:00:00 api", ""
        ).replace(" ", "") == long.replace(" ", "")
        await pilot.press("w")
        await until(pilot, lambda: "THE-END" not in shown(), what="cut again")


async def test_escape_leaves_the_search_box_and_the_screen_in_one_press() -> None:
    buffer = LogBuffer()
    buffer.append("12:00:00", "api", "hello")
    async with running_logs(buffer, (80, 24)) as (app, pilot):
        await pilot.press("slash", "h")
        assert isinstance(app.focused, Input)
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, LogsScreen), what="screen left")


async def test_vim_keys_move_in_the_logs() -> None:
    buffer = api_lines(f"line {i}" for i in range(200))
    async with running_logs(buffer, (80, 24)) as (app, pilot):
        view = app.screen.query_one(LogView)
        await until(pilot, lambda: view.scroll_y == view.max_scroll_y > 0, what="at the end")
        await pilot.press("g")
        await until(pilot, lambda: view.scroll_y == 0 and not view.follow, what="at the top")
        await pilot.press("j", "j")
        await until(pilot, lambda: view.scroll_y == 2, what="two down")
        await pilot.press("k")
        await until(pilot, lambda: view.scroll_y == 1, what="one up")
        await pilot.press("G")
        await until(pilot, lambda: view.scroll_y == view.max_scroll_y and view.follow)


async def test_logs_help_lists_the_logs_keys() -> None:
    from flash_tui.screens.help import HelpScreen
    from flash_tui.screens.logs import log_help_rows

    async with running_logs(LogBuffer(), (80, 24)) as (app, pilot):
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        shown = app.export_screenshot().replace("&#160;", " ")
        for key, text in log_help_rows():
            assert text[:15] in shown, key
        assert "Wrap long lines" in shown and "match 2/5" in shown
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, LogsScreen), what="back to logs")


async def test_scrolling_up_pauses_follow_and_the_end_resumes_it() -> None:
    buffer = api_lines(f"line {i}" for i in range(100))
    app = WidgetHost(LogView(buffer, id="log-pane", title="Logs · all"))  # as the dashboard's
    async with app.run_test(size=(80, 20)) as pilot:
        view = app.query_one(LogView)
        view.focus()
        view.pull()
        await until(pilot, lambda: view.scroll_y == view.max_scroll_y > 0)
        assert view.border_title == "Logs · all · following"

        for scroll_up in ("pageup", "up", "wheel"):
            if scroll_up == "wheel":
                view.post_message(events.MouseScrollUp(view, 1, 1, 0, -1, 0, False, False, False))
            else:
                await pilot.press(scroll_up)
            await until(pilot, lambda: not view.follow)
            assert view.border_title == "Logs · all · paused"
            # New lines arrive: the view stays where the person is reading.
            await until(pilot, lambda: view.scroll_y < view.max_scroll_y)
            where, bottom = view.scroll_y, view.max_scroll_y
            buffer.append("12:00:01", "api", "a new line")
            view.pull()
            await until(pilot, lambda b=bottom: view.max_scroll_y > b, what="the new line laid out")
            assert view.scroll_y == where and not view.follow
            await pilot.press("end")  # back at the newest line: following again
            await until(pilot, lambda: view.follow and view.scroll_y == view.max_scroll_y)
            assert view.border_title == "Logs · all · following"

        await pilot.press("f")
        await until(pilot, lambda: not view.follow)
        await pilot.press("f")
        await until(pilot, lambda: view.follow and view.scroll_y == view.max_scroll_y)
