"""Operator keys on the dashboard: `l` from a selection to its logs, `/` filter, vim keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixedclock import noon as clock
from hosts import offline_app, run_palette_command
from textual.widgets import Input, Select
from waiting import until

from engine.status import EndpointStatus
from flash_tui.app import FlashApp
from flash_tui.screens.logs import LogsScreen
from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable
from flash_tui.widgets.dashboard.manifest_tree import ManifestTree
from flash_tui.widgets.logs.log_view import LogView

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("private_home")  # tests/tui/conftest.py


def endpoint(name: str, status: str) -> EndpointStatus:
    return EndpointStatus(
        name=name,
        resource_type=None,
        status=status,
        drift="in_sync",
        in_code=True,
        deployed=status != "not_deployed",
    )


def tree_endpoints(app: FlashApp) -> list[str]:
    tree = app.dashboard.query_one(ManifestTree)
    return [n.data.key[1] for n in tree.root.children if n.data and n.data.kind == "endpoint"]


def table_names(app: FlashApp) -> list[str]:
    table = app.dashboard.query_one(EndpointsTable)
    return [str(key.value) for key in table.rows]


def logs_source(app: FlashApp) -> str | None:
    assert isinstance(app.screen, LogsScreen)
    return app.screen.query_one(LogView).source_filter


async def test_l_opens_the_selected_endpoints_logs(quickstart: Path) -> None:
    app = FlashApp(quickstart, clock=clock, connect=False, watch=False)
    # Lines of an endpoint that is no longer in the code nor deployed: still readable.
    app.logs.append("11:59:00", "old_worker", "Traceback: crashed before the undeploy")
    app.logs.append("11:59:01", "gateway", "POST /pipeline 200")
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1)
        tree = app.dashboard.query_one(ManifestTree)
        tree.focus()
        tree.move_to(("function", "gateway", "pipeline"))  # a function: its endpoint's logs
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogsScreen), what="logs screen")
        assert logs_source(app) == "gateway"
        view = app.screen.query_one(LogView)
        await until(pilot, lambda: [r.text for r in view.rows] == ["POST /pipeline 200"])
        assert app.screen.query_one(Select).value == "gateway"
        # The post-mortem: the gone endpoint is offered, and its lines are there.
        app.screen.query_one(Select).value = "old_worker"
        await until(pilot, lambda: [r.source for r in view.rows] == ["old_worker"])
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard)

        table = app.dashboard.query_one(EndpointsTable)
        table.focus()
        table.select_name("cpu_worker")
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogsScreen), what="logs screen")
        assert logs_source(app) == "cpu_worker"
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard)

        # Nothing of an endpoint's selected (a hint: the filter matches nothing): all lines.
        await pilot.press("slash", *"nomatch", "enter")
        await until(pilot, lambda: app.focused is tree and tree_endpoints(app) == [])
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogsScreen), what="logs screen")
        assert logs_source(app) is None


async def test_slash_filters_tree_and_table_by_name_type_and_status(quickstart: Path) -> None:
    statuses = [endpoint("gateway", "healthy"), endpoint("api", "unhealthy")]
    async with offline_app(quickstart, (80, 24), statuses=statuses) as (app, pilot):
        everything = ["api", "cpu_worker", "gateway", "gpu_worker"]
        assert tree_endpoints(app) == everything
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"cpu")  # names and types: cpu_worker, and gateway is an LB CPU
        await until(pilot, lambda: tree_endpoints(app) == ["cpu_worker", "gateway"])
        await until(pilot, lambda: table_names(app) == ["cpu_worker", "gateway"])
        assert "/cpu" in str(app.dashboard.query_one(ManifestTree).border_title)

        await pilot.press(*("backspace",) * 3, *"unhealthy")  # a status
        await until(pilot, lambda: tree_endpoints(app) == ["api"] and table_names(app) == ["api"])
        # Typing is text, not keys: "u" did not undeploy, "l" opened no logs.
        assert app.state.busy is None and app.screen is app.dashboard
        await pilot.press("enter")  # the filter stays, the focus goes to the tree
        await until(pilot, lambda: isinstance(app.focused, ManifestTree))
        assert tree_endpoints(app) == ["api"]

        await pilot.press("escape")  # clears it
        await until(pilot, lambda: tree_endpoints(app) == everything)
        await until(pilot, lambda: table_names(app) == everything)
        assert not app.dashboard.query_one("#filter-bar").display
        assert app.dashboard.query_one(ManifestTree).border_title == "Manifest"

        await pilot.press("slash", *"nomatch")
        await until(pilot, lambda: tree_endpoints(app) == [] and table_names(app) == [])
        tree = app.dashboard.query_one(ManifestTree)
        labels = [str(n.label) for n in tree.root.children]
        assert "Nothing matches /nomatch" in labels  # not the "no endpoints here" hint
        await pilot.press("escape")  # from the box: cleared in one press
        await until(pilot, lambda: tree_endpoints(app) == everything)
        assert app.screen is app.dashboard


async def test_filter_holds_across_a_rescan(quickstart: Path) -> None:
    async with offline_app(quickstart, (80, 24), watch=True) as (app, pilot):
        await pilot.press("slash", *"gpu")
        await until(pilot, lambda: tree_endpoints(app) == ["api", "gpu_worker"])
        main = quickstart / "main.py"
        main.write_text(main.read_text() + "\n# touched\n")
        await until(pilot, lambda: app.scan_count >= 2, what="the rescan")
        assert tree_endpoints(app) == ["api", "gpu_worker"]


async def test_vim_keys_move_in_tree_and_table(quickstart: Path) -> None:
    async with offline_app(quickstart, (80, 24)) as (app, pilot):
        tree = app.dashboard.query_one(ManifestTree)
        tree.focus()
        await pilot.press("g")
        await until(pilot, lambda: tree.cursor_line == 0)
        await pilot.press("j", "j")
        await until(pilot, lambda: tree.cursor_line == 2)
        await pilot.press("k")
        await until(pilot, lambda: tree.cursor_line == 1)
        await pilot.press("G")
        await until(pilot, lambda: tree.cursor_line == tree.last_line > 1)

        table = app.dashboard.query_one(EndpointsTable)
        table.focus()
        await pilot.press("g")
        await until(pilot, lambda: table.cursor_row == 0)
        await pilot.press("j")
        await until(pilot, lambda: table.selected_name == "cpu_worker")
        await pilot.press("G")
        await until(pilot, lambda: table.selected_name == "gpu_worker")
        await pilot.press("k")
        await until(pilot, lambda: table.selected_name == "gateway")


def fake_editor(bin_dir: Path, name: str, record: Path) -> Path:
    """An executable called `name` that writes its arguments, one a line, to `record`."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / name
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n')
    script.chmod(0o755)
    return script


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vim", ["+22", "{path}"]),
        ("nvim", ["+22", "{path}"]),
        ("nano", ["+22", "{path}"]),
        ("emacs", ["+22", "{path}"]),
        ("code", ["-g", "{path}:22"]),
        ("gedit", ["{path}"]),
    ],
)
def test_editor_command_puts_the_line_where_each_editor_wants_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, expected: list[str]
) -> None:
    from flash_tui.editor import Location, editor_command

    script = fake_editor(tmp_path / "bin", name, tmp_path / "args")
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    path = tmp_path / "main.py"
    argv = editor_command(f"{name} --flag", Location(path, 22))
    assert argv == [name, "--flag", *(e.format(path=path) for e in expected)]
    assert editor_command(name, Location(path, None)) == [name, str(path)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "$EDITOR is not set"),
        ("  ", "$EDITOR is not set"),
        ("no-such-editor-xyz", "'no-such-editor-xyz', which is not an executable on PATH"),
        ("vim 'unclosed", "cannot be read"),
    ],
)
def test_editor_problems_are_one_line(value: str | None, message: str) -> None:
    from flash_tui.editor import EditorError, Location, editor_command

    with pytest.raises(EditorError) as info:
        editor_command(value, Location(Path("main.py"), 3))
    assert message in str(info.value) and "\n" not in str(info.value)


async def test_e_opens_the_selected_function_in_the_editor_at_its_line(
    quickstart: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "args"
    script = fake_editor(tmp_path / "bin", "vim", record)
    monkeypatch.setenv("EDITOR", str(script))
    async with offline_app(quickstart, (100, 30)) as (app, pilot):
        line = next(
            f["line"]
            for f in app.state.manifest["resources"]["gateway"]["functions"]
            if f["name"] == "pipeline"
        )
        tree = app.dashboard.query_one(ManifestTree)
        tree.focus()
        tree.move_to(("function", "gateway", "pipeline"))
        await pilot.press("e")
        await until(pilot, record.exists, what="the editor ran")
        assert record.read_text().splitlines() == [f"+{line}", str(quickstart / "main.py")]
        assert "def pipeline" in (quickstart / "main.py").read_text().splitlines()[line - 1]


async def test_e_without_editor_says_so_in_one_line(
    quickstart: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDITOR", raising=False)
    async with offline_app(quickstart, (100, 30)) as (app, pilot):
        tree = app.dashboard.query_one(ManifestTree)
        tree.focus()
        tree.move_to(("function", "gateway", "pipeline"))
        await pilot.press("e")
        await until(
            pilot, lambda: any("$EDITOR is not set" in n.message for n in app._notifications)
        )
        message = next(n.message for n in app._notifications if "$EDITOR" in n.message)
        assert "\n" not in message


def test_locate_finds_a_diagnostic_a_table_row_and_nothing(tmp_path: Path) -> None:
    from engine.diagnostics import Diagnostic
    from flash_tui.editor import Location, locate
    from flash_tui.widgets.dashboard.manifest_tree import TreeItem

    diag = Diagnostic("error", "workers/x.py", 7, "duplicate route POST /x", "E1")
    item = TreeItem("diagnostic", ("diagnostic", "0"), diagnostic=diag)
    assert locate(item, {}, tmp_path) == Location(tmp_path / "workers/x.py", 7)
    manifest = {"resources": {"gateway": {"file": "main.py", "line": 11}}}
    assert locate("gateway", manifest, tmp_path) == Location(tmp_path / "main.py", 11)
    assert locate(TreeItem("hint", ("hint", "0")), manifest, tmp_path) is None
    assert locate(None, manifest, tmp_path) is None


async def test_palette_shows_keys_and_offers_per_endpoint_commands(quickstart: Path) -> None:

    from flash_tui.commands import ACTIONS, DISPLAY_KEYS, FlashCommands

    statuses = [endpoint("cpu_worker", "healthy"), endpoint("gateway", "not_deployed")]
    async with offline_app(quickstart, (100, 30), statuses=statuses) as (app, pilot):
        provider = FlashCommands(app.screen)
        shown = {hit.text: str(hit.prompt) async for hit in provider.discover()}
        for action in ACTIONS:
            assert shown[action.name].endswith(f"  {DISPLAY_KEYS.get(action.key, action.key)}")

        async def found(query: str) -> dict[str, object]:
            return {hit.text: hit.command async for hit in provider.search(query)}

        deploy = (await found("deploy gateway"))["Deploy gateway"]
        assert deploy.func.__name__ == "deploy_endpoint" and deploy.args == ("gateway",)  # type: ignore[attr-defined]
        undeploy = (await found("undeploy cpu_worker"))["Undeploy cpu_worker"]
        assert undeploy.args == ("cpu_worker",)  # type: ignore[attr-defined]
        # Not deployed: nothing to undeploy is offered.
        assert "Undeploy gateway" not in await found("undeploy gateway")

        # End to end: ctrl+p, "logs cpu_worker", enter.
        await run_palette_command(pilot, "logs cpu_worker", "Logs cpu_worker")
        await until(pilot, lambda: isinstance(app.screen, LogsScreen), what="logs screen")
        assert logs_source(app) == "cpu_worker"


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
async def test_help_fits_or_scrolls_with_a_visible_bar(
    quickstart: Path, size: tuple[int, int]
) -> None:
    from textual.containers import VerticalScroll

    from flash_tui.screens.help import HelpScreen

    async with offline_app(quickstart, size) as (app, pilot):
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        await pilot.pause()
        dialog = app.screen.query_one("#dialog")
        body = app.screen.query_one("#help-body", VerticalScroll)
        # The whole dialog is on the screen, its closing hint included.
        assert app.screen.region.contains_region(dialog.region)
        assert "escape closes" in app.export_screenshot().replace("&#160;", " ")
        if body.max_scroll_y > 0:
            assert body.show_vertical_scrollbar and body.scrollbar_size_vertical >= 1
            await pilot.press("j")
            await until(pilot, lambda: body.scroll_y == 1, what="j scrolls the help")
            await pilot.press("end")
            await until(pilot, lambda: body.scroll_y == body.max_scroll_y, what="the last key")
        assert "f follow · w wrap" in app.export_screenshot().replace("&#160;", " ")
