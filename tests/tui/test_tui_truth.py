"""The TUI tells the truth (issue 9): a restarted local cloud, the visible selection, the route
tester's badge and body, deploy durations and cancels. Real local cloud, real workers, Pilot."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hosts import local_app
from textual.pilot import Pilot
from textual.widgets import OptionList, TextArea
from waiting import until

from engine.home import Home
from engine.localcloud.discovery import ensure_cloud, kill_home_workers, read_state, stop_cloud
from engine.operations import Engine
from flash_tui.app import FlashApp
from flash_tui.screens.confirm import PlanScreen
from flash_tui.screens.route_tester import RouteTesterScreen, render_response
from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable
from flash_tui.widgets.dashboard.header_line import HeaderLine
from flash_tui.widgets.dashboard.manifest_tree import ManifestTree
from flash_tui.widgets.logs.log_view import LogView

PROJECT = '''\
from tetra_rp import CpuLiveLoadBalancer, CpuLiveServerless, remote

web = CpuLiveLoadBalancer(name="web")
jobs = CpuLiveServerless(name="jobs")


@remote(web, method="POST", path="/echo")
async def echo(value: object = None, note: str = "") -> dict:
    """Sends back what it was given."""
    return {"value": value, "note": note}


@remote(jobs)
async def explode(reason: str = "boom") -> dict:
    """Always fails: the job ends FAILED."""
    raise ValueError(reason)
'''


def write_project(root: Path) -> Path:
    """A two-endpoint project (an LB echo route, a QB function that fails)."""
    root.mkdir(parents=True)
    (root / "main.py").write_text(PROJECT)
    return root


def status_of(app: FlashApp, name: str) -> str | None:
    status = app.state.statuses.get(name)
    return status.status if status is not None else None


def notes(app: FlashApp) -> list[str]:
    return [n.message for n in app._notifications]


@pytest.fixture
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    """A private flash-tui home whose local cloud and workers are stopped afterwards."""
    home = Home(tmp_path / "home")
    monkeypatch.setenv("FLASH_TUI_HOME", str(home.root))
    yield home
    stop_cloud(home, timeout=10.0)
    kill_home_workers(home)


@pytest.fixture(scope="module")
def deployed(localcloud_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project, deployed once to the module's local cloud (both endpoints healthy)."""
    project = write_project(tmp_path_factory.mktemp("truth") / "truth")

    async def deploy() -> None:
        async with Engine(project) as engine:
            report = await engine.deploy()
            assert report.ok, report.to_dict()

    asyncio.run(deploy())
    return project


# -- a restarted local cloud ------------------------------------------------------------------


async def test_a_restarted_cloud_shows_its_new_address_and_fresh_health(
    tmp_path: Path, own_home: Home
) -> None:
    project = write_project(tmp_path / "restart")
    async with Engine(project) as engine:
        assert (await engine.deploy()).ok
    old = read_state(own_home)
    assert old is not None
    async with local_app(project, (140, 34)) as (app, pilot):
        header = app.dashboard.query_one(HeaderLine)
        table = app.dashboard.query_one(EndpointsTable)
        await until(pilot, lambda: f":{old.port})" in header.summary, 60, "the first address")
        await until(pilot, lambda: len(app.state.samples.get("web", ())) >= 2, 30, "a sparkline")
        old_pid = app.state.statuses["web"].pid

        # Another shell stops the cloud (and its workers) and starts it again.
        await asyncio.to_thread(stop_cloud, own_home)
        new = await asyncio.to_thread(ensure_cloud, own_home)
        assert new.port != old.port
        await until(pilot, lambda: f":{new.port})" in header.summary, 30, "the new address")
        await until(pilot, lambda: status_of(app, "web") == "stopped", 30, "web stopped")
        # The stopped workers' history is gone: no sparkline, no p50.
        await until(
            pilot, lambda: not app.state.samples.get("web"), 10, "the stale sparkline to go"
        )
        assert table.get_cell("web", "health").plain == "—"
        assert table.get_cell("web", "latency").plain == "—"

        # Redeployed from another shell: `h` probes the new worker.
        async with Engine(project) as other:
            assert (await other.deploy()).ok
        await until(pilot, lambda: status_of(app, "web") == "healthy", 30, "web healthy again")
        web = app.state.statuses["web"]
        assert web.pid != old_pid
        await pilot.press("h")
        await until(pilot, lambda: any("probed" in n for n in notes(app)), 15, "the probe")
        await until(pilot, lambda: bool(app.state.samples.get("web")), 10, "a fresh sample")
        assert app.state.sampled_at["web"] == (web.url, web.pid)

        # `r` reconnects: the log says where to.
        await pilot.press("r")
        await until(
            pilot,
            lambda: any(f"connected to local (127.0.0.1:{new.port})" in r.text for r in app.logs),
            15,
            "the reconnect",
        )


async def test_a_killed_cloud_is_found_again_at_its_new_address(
    tmp_path: Path, own_home: Home
) -> None:
    import os
    import signal

    project = write_project(tmp_path / "killed")
    async with local_app(project, (140, 34)) as (app, pilot):
        header = app.dashboard.query_one(HeaderLine)
        old = read_state(own_home)
        assert old is not None and f":{old.port})" in header.summary
        os.kill(old.pid, signal.SIGKILL)
        # Whoever starts it again (this app's next refresh, or another shell), the header
        # follows the state file.
        await until(
            pilot,
            lambda: (
                (info := read_state(own_home)) is not None
                and info.pid != old.pid
                and f":{info.port})" in header.summary
            ),
            40,
            "the new address in the header",
        )


# -- the visible selection --------------------------------------------------------------------


async def test_keys_act_only_on_the_visible_selection(tmp_path: Path, own_home: Home) -> None:
    project = write_project(tmp_path / "selection")
    async with local_app(project, (120, 34)) as (app, pilot):
        await until(pilot, lambda: status_of(app, "web") == "not_deployed", 30, "the status")
        tree = app.dashboard.query_one(ManifestTree)
        table = app.dashboard.query_one(EndpointsTable)
        # The tree has the focus and no node is highlighted; the table's cursor sits on its
        # first row, but nobody chose it.
        assert app.dashboard.focused is tree and tree.cursor_node is None
        assert table.selected_name == "jobs"
        for key in ("d", "u"):
            said = len(notes(app))
            await pilot.press(key)
            await until(pilot, lambda n=said: len(notes(app)) > n, 5, f"what {key} says")
            assert app.screen is app.dashboard, key
            assert "select an endpoint first" in notes(app)[-1].lower(), notes(app)
        # Focus on the log pane, nothing picked: still nothing selected.
        app.dashboard.query_one(LogView).focus()
        said = len(notes(app))
        await pilot.press("d")
        await until(pilot, lambda: len(notes(app)) > said, 5, "what d says")
        assert app.screen is app.dashboard
        assert "select an endpoint first" in notes(app)[-1].lower()

        # `t` with nothing selected opens the tester on its picker.
        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, RouteTesterScreen), 10, "the tester")
        assert app.screen.focused is app.screen.query_one("#targets", OptionList)
        await pilot.press("escape")

        # A highlighted function node: `t` opens on that function, `d` deploys its endpoint.
        tree.focus()
        echo = tree.move_to(("function", "web", "echo"))
        await until(pilot, lambda: echo is not None and tree.cursor_node is echo, 5, "echo")
        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, RouteTesterScreen), 10, "the tester")
        tester = app.screen
        assert isinstance(tester, RouteTesterScreen)
        assert tester._current is not None and tester._current.title == "POST /echo"
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.dashboard, 5, "the dashboard")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, PlanScreen), 60, "the plan dialog")
        assert {i.name for i in app.screen.items} == {"web"}
        await pilot.press("escape")
        await until(pilot, lambda: app.state.busy is None, 10, "the cancel")

        # The table row the person moved to (and sees highlighted) is the selection, also
        # once the focus moves on to the log pane.
        table.focus()
        await pilot.press("down")
        await until(pilot, lambda: table.selected_name == "web", 5, "the row of web")
        log_view = app.dashboard.query_one(LogView)
        log_view.focus()
        await until(pilot, lambda: app.dashboard.focused is log_view, 5, "the log pane focused")
        assert app.selected_endpoint() == "web"


# -- the route tester -------------------------------------------------------------------------


async def open_tester_on(app: FlashApp, pilot: Pilot, title: str) -> RouteTesterScreen:
    """Open the route tester and highlight the target called `title`."""
    await pilot.press("t")
    await until(pilot, lambda: isinstance(app.screen, RouteTesterScreen), 10, "the tester")
    tester = app.screen
    assert isinstance(tester, RouteTesterScreen)
    titles = [t.title for t in tester._targets]
    tester.query_one("#targets", OptionList).highlighted = titles.index(title)
    await until(
        pilot, lambda: tester._current is not None and tester._current.title == title, 5, title
    )
    return tester


async def test_a_failed_job_shows_a_red_failed_badge(deployed: Path) -> None:
    async with local_app(deployed, (120, 34)) as (app, pilot):
        await until(pilot, lambda: status_of(app, "jobs") == "healthy", 60, "jobs healthy")
        tester = await open_tester_on(app, pilot, "jobs:explode")
        tester.query_one("#body", TextArea).text = '{"reason": "on purpose"}'
        before = len(tester.history)  # kept in .flash/ across runs
        await pilot.press("ctrl+s")
        await until(pilot, lambda: len(tester.history) > before, 30, "the answer")
        response = tester.history[-1].response
        assert response.status == "FAILED" and not response.ok
        badge = render_response(response).renderables[0]
        assert badge.plain.strip().startswith("FAILED"), badge.plain
        assert "red" in str(badge.spans[0].style) and "green" not in str(badge.spans[0].style)
        assert "on purpose" in json.dumps(response.body)


async def test_ctrl_s_sends_exactly_the_editor_text(deployed: Path) -> None:
    async with local_app(deployed, (120, 34)) as (app, pilot):
        await until(pilot, lambda: status_of(app, "web") == "healthy", 60, "web healthy")
        tester = await open_tester_on(app, pilot, "POST /echo")
        editor = tester.query_one("#body", TextArea)
        text = '{"value": [1, 2.50, 1e2],   "note": "caf\\u00e9"}'
        editor.text = text
        # The history is kept in the project's .flash/: earlier tests' requests are in it.
        before = len(tester.history)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: len(tester.history) > before, 30, "the answer")
        entry = tester.history[-1]
        assert entry.body == text
        assert entry.response.ok and entry.response.body == {
            "value": [1, 2.5, 100.0],
            "note": "café",
        }
        # The curl command carries the same text.
        await pilot.press("ctrl+y")
        await until(pilot, lambda: tester.last_curl is not None, 15, "the curl command")
        assert text in str(tester.last_curl)
        # Not JSON the way a server reads it: refused, with the reason, nothing sent.
        for bad, reason in [('{"value": NaN}', "NaN"), ('{"note": "a", "note": "b"}', "note")]:
            editor.text = bad
            said = len(notes(app))
            await pilot.press("ctrl+s")
            await until(pilot, lambda n=said: len(notes(app)) > n, 5, f"the refusal of {bad}")
            assert len(tester.history) == before + 1, bad
            assert "not valid JSON" in notes(app)[-1] and reason in notes(app)[-1], notes(app)


# -- deploy: duration and cancel --------------------------------------------------------------


async def test_deploy_time_excludes_the_dialog_and_a_cancel_is_one_line(
    tmp_path: Path, own_home: Home
) -> None:
    project = write_project(tmp_path / "timing")
    async with local_app(project, (120, 34)) as (app, pilot):
        before = len(app.logs)
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, PlanScreen), 60, "the plan dialog")
        await pilot.press("escape")
        await until(pilot, lambda: app.state.busy is None, 10, "the cancel")
        # busy clears in the handler that also logs and notifies the outcome.
        lines = [r.text for r in list(app.logs)[before:]]
        said = [line for line in lines if "cancel" in line]
        assert said == ["deploy cancelled — nothing changed"], lines
        assert [n for n in notes(app) if "cancel" in n] == ["deploy cancelled — nothing changed"]

        # A person reads the plan for a while; the figure is the deploy's, not the reading's.
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, PlanScreen), 60, "the plan dialog")
        shown = time.monotonic()
        await until(pilot, lambda: time.monotonic() - shown > 3.0, 5, "three seconds of reading")
        confirmed = time.monotonic()
        await pilot.press("enter")
        await until(
            pilot,
            lambda: any("Deploy finished" == n.title for n in app._notifications),
            90,
            "the deploy",
        )
        finished = time.monotonic()
        summary = next(n.message for n in app._notifications if n.title == "Deploy finished")
        seconds = float(summary.rsplit(" in ", 1)[1].rstrip("s"))
        # Measured between the confirmation and the end, so within what this test saw.
        assert seconds <= finished - confirmed + 0.05, (summary, finished - confirmed)
