"""Issue 14: the dashboard fits every size, health you can read, the route tester's history,
query parameters and honest copy."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fixedclock import NOON as NOW
from hosts import (
    EchoTester,
    WidgetHost,
    deployed_status,
    endpoint_status,
    running_tester,
    shown_response,
)
from textual.widgets import Input, TextArea
from waiting import until

from engine.invoke import CallSpec, curl_command
from engine.provider import EndpointTarget
from flash_tui.app import FlashApp
from flash_tui.screens import route_tester
from flash_tui.widgets.dashboard.detail_pane import DetailPane, endpoint_detail
from flash_tui.widgets.dashboard.endpoints_table import EndpointRow, EndpointsTable, fit_columns

STATUSES = [
    deployed_status(
        "gateway",
        resource_type="CpuLoadBalancerSlsResource",
        url="http://127.0.0.1:40001",
        pid=4242,
        restarts=2,
        is_load_balanced=True,
        started_at=NOW.timestamp() - 180,
    ),
    deployed_status(
        "gpu_worker",
        resource_type="LiveServerless",
        status="failed",
        restarts=5,
        last_error="ImportError: No module named 'torchx' (5 crashes in 60 s)",
    ),
]
HEALTH = {"gateway": [2.0, 4.0, None, 3.0]}


pytestmark = pytest.mark.usefixtures("private_home")  # tests/tui/conftest.py


def make_app(project: Path) -> FlashApp:
    return FlashApp(
        project,
        clock=lambda: NOW,
        connect=False,
        watch=False,
        statuses=STATUSES,
        health=HEALTH,
    )


def test_fit_columns_keeps_the_telling_ones_and_drops_by_priority() -> None:
    wide = fit_columns(200, 10)
    assert wide.keys[-1] == "url" and "latency" in wide.keys
    at_100 = fit_columns(59, 10)
    assert {"name", "type", "status", "drift", "health"} <= set(at_100.keys)
    narrow = fit_columns(47, 10)
    # The type goes before a name is cut; status words are abbreviated first.
    assert "type" not in narrow.keys and narrow.width_of("name") == 10 and narrow.short_status
    # A 24-character name is cut (with an ellipsis) before the type goes at 100 columns.
    long_names = fit_columns(59, 24)
    assert "type" in long_names.keys and 12 <= long_names.width_of("name") < 24
    tiny = fit_columns(20, 10)
    assert tiny.keys[:3] == ["dot", "name", "status"]


async def test_a_changed_row_is_painted_and_only_it_is_repainted() -> None:
    rows = [EndpointRow(f"ep{i}", "LiveServerless", "healthy", latency_ms=10.0) for i in range(6)]
    table = EndpointsTable()
    app = WidgetHost(table)
    async with app.run_test(size=(120, 12)) as pilot:
        table.show(rows)
        await pilot.pause()
        assert "10ms" in app.export_screenshot().replace("&#160;", " ")
        repaints: list[tuple[int, int]] = []
        refresh_region = table._refresh_region

        def record(region: Any) -> Any:
            repaints.append((region.y, region.height))
            return refresh_region(region)

        table._refresh_region = record  # type: ignore[method-assign]
        table.show([replace(rows[0], latency_ms=987.0), *rows[1:]])
        await pilot.pause()
        shown = app.export_screenshot().replace("&#160;", " ")
        assert "987ms" in shown and shown.count("10ms") == 5
        # One row's worth of screen (a health tick with 40 endpoints repainted all of them).
        assert repaints and all(height == 1 for _, height in repaints), repaints


@pytest.mark.parametrize("width", [100, 120])
async def test_table_shows_the_main_columns_without_scrolling(
    shared_quickstart: Path, width: int
) -> None:
    app = make_app(shared_quickstart)
    async with app.run_test(size=(width, 30)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1, 10, "the first scan")
        table = app.dashboard.query_one(EndpointsTable)
        await until(pilot, lambda: table.row_count >= 4, 10, "the rows")
        keys = [str(column.key.value) for column in table.ordered_columns]
        assert {"name", "type", "status", "drift", "health"} <= set(keys)
        assert table.max_scroll_x == 0  # no horizontal scrollbar
        table.focus()
        await pilot.press("end")
        await pilot.pause()
        assert table.scroll_x == 0 and table.cursor_row == table.row_count - 1


async def test_table_uses_the_width_at_160(shared_quickstart: Path) -> None:
    widths = {}
    for size in [(120, 40), (160, 45)]:
        app = make_app(shared_quickstart)
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda a=app: a.scan_count >= 1, 10, "the first scan")
            table = app.dashboard.query_one(EndpointsTable)
            await pilot.pause()
            widths[size[0]] = (table.size.width, len(table.ordered_columns))
            assert table.virtual_size.width >= table.size.width - 2
    assert widths[160][0] > widths[120][0] and widths[160][1] > widths[120][1]


async def _detail_of(app: FlashApp, pilot: Any, name: str) -> str:
    table = app.dashboard.query_one(EndpointsTable)
    await until(pilot, lambda: table.row_count >= 4, 10, "the rows")
    table.focus()
    table.select_name(name)
    await until(pilot, lambda: app.dashboard.state.selection == name, 5, f"{name} selected")
    await pilot.pause()
    return app.dashboard.query_one(DetailPane).plain_text(60)


async def test_detail_pane_health_legend_and_facts_at_80(shared_quickstart: Path) -> None:
    app = make_app(shared_quickstart)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1, 10, "the first scan")
        text = await _detail_of(app, pilot, "gateway")
        assert "last 4 probes, 1 failed" in text
        assert "a bar per probe: its latency, 0–4.0ms; red = failed" in text
        assert "pid 4242 · up 3m · restarts 2" in text


async def test_failed_endpoint_leads_with_its_reason(shared_quickstart: Path) -> None:
    app = make_app(shared_quickstart)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1, 10, "the first scan")
        text = await _detail_of(app, pilot, "gpu_worker")
        assert text.splitlines()[0].startswith("failed: ImportError: No module named 'torchx'")


async def test_history_is_kept_across_runs_without_headers(tmp_path: Path) -> None:
    path = tmp_path / ".flash" / "route_history.json"
    async with running_tester(path) as (pilot, screen):
        screen.query_one("#body", TextArea).text = '{"numbers": [7]}'
        await pilot.press("ctrl+s")
        await until(pilot, lambda: path.exists(), 5, "the history file")
    saved = path.read_text()
    assert "sk-x" not in saved and "authorization" not in saved.lower()
    assert json.loads(saved)["entries"][0]["title"] == "POST /compute"

    async with running_tester(path) as (pilot, screen):
        assert [e.body for e in screen.history] == ['{"numbers": [7]}']


def test_history_is_bounded(tmp_path: Path) -> None:
    target = EchoTester().targets()[0]
    entries = [
        route_tester.HistoryEntry(target, str(i), route_tester.TesterResponse(200, 1.0))
        for i in range(route_tester.HISTORY_LIMIT + 10)
    ]
    path = tmp_path / "h.json"
    route_tester.save_history(path, entries)
    loaded = route_tester.load_history(path, [target])
    assert len(loaded) == route_tester.HISTORY_LIMIT and loaded[-1].body == entries[-1].body


async def test_get_shows_query_parameters(tmp_path: Path) -> None:
    async with running_tester(tmp_path / "h.json") as (pilot, screen):
        body = screen.query_one("#body", TextArea)
        assert body.border_title == "Body (JSON)"
        await pilot.press("down")
        await until(pilot, lambda: "Query parameters" in str(body.border_title), 5, "GET")


async def test_copy_without_clipboard_command_says_osc52(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    async with running_tester(tmp_path / "h.json") as (pilot, screen):
        await pilot.press("ctrl+y")
        await until(pilot, lambda: "curl -X POST" in shown_response(screen), 5, "the command")
        assert "OSC 52" in shown_response(screen) and "copied" not in shown_response(screen)


async def test_copy_with_a_clipboard_command_says_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    received = tmp_path / "clipboard"
    script = bin_dir / "xclip"
    script.write_text(f"#!/bin/sh\ncat > {received}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin:/bin")
    async with running_tester(tmp_path / "h.json") as (pilot, screen):
        await pilot.press("ctrl+y")
        copied = "copied to the clipboard (xclip)"
        await until(pilot, lambda: copied in shown_response(screen), 5, "copied")
    assert received.read_text() == (
        "curl -X POST -H 'Authorization: Bearer $FLASH_ENDPOINT_KEY' http://x/compute"
    )


async def test_headers_are_sent_and_kept_without_authorization(tmp_path: Path) -> None:
    path = tmp_path / ".flash" / "route_history.json"
    async with running_tester(path) as (pilot, screen):
        field = screen.query_one("#headers", Input)
        field.value = "X-Trace: abc; Authorization: Bearer typed-secret"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: path.exists(), 5, "the history file")
        sent = screen.history[-1].response.body
        assert sent["headers"] == {"X-Trace": "abc", "Authorization": "Bearer typed-secret"}
        assert screen.history[-1].headers == {"X-Trace": "abc"}
        field.value = "no colon here"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert len(screen.history) == 1  # not sent: the field says what is wrong
    assert "typed-secret" not in path.read_text() and "X-Trace" in path.read_text()


def test_parse_headers_names_the_bad_entry() -> None:
    assert route_tester.parse_headers(" A: 1 ;B:two words ") == {"A": "1", "B": "two words"}
    with pytest.raises(ValueError, match="'oops' is not 'Name: value'"):
        route_tester.parse_headers("A: 1; oops")


def test_curl_command_with_extra_headers_redacts_a_typed_authorization() -> None:
    target = EndpointTarget("api", "http://127.0.0.1:1", True, key="endpoint-key")
    call = CallSpec("api", True, method="POST", path="/compute", function="compute")
    line = curl_command(target, call, {}, headers={"X-A": "1", "Authorization": "Bearer mine"})
    assert "X-A: 1" in line and "mine" not in line and "endpoint-key" not in line
    assert "Bearer mine" in curl_command(
        target, call, {}, reveal=True, headers={"Authorization": "Bearer mine"}
    )


def test_failing_without_a_reason_says_where_to_look() -> None:
    status = endpoint_status("w", status="unhealthy")
    pane = DetailPane()
    pane.shown = endpoint_detail("w", None, status)
    assert pane.plain_text(80).splitlines()[0] == "unhealthy: no reason reported (l: its logs)"
