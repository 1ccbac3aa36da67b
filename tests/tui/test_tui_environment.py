"""The environment dialog (`E`) with the deploy mode beside it: on the real local cloud after a
mothership deploy to `staging` (it lists `staging` with its mothership; picking it reconnects,
the header names it and the table shows its endpoints), against the RunPod contract fake (the
Flash app's environments), a bad name that says why, and esc that changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes.runpod import FakeRunPod
from projectfiles import MOTHERSHIP_CHILDREN, MOTHERSHIP_PROJECT, write_files
from textual.widgets import Input, OptionList, Static
from waiting import until

from engine.app_environments import picked_session
from engine.operations import Engine
from engine.plan import Plan
from engine.runpod.provider import RunPodProvider
from engine.status import EndpointStatus
from flash_tui.app import FlashApp
from flash_tui.backend import Backend
from flash_tui.reports import still_running
from flash_tui.screens.dashboard_state import DashboardState
from flash_tui.screens.environment import EnvironmentScreen
from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable


@pytest.fixture
def tui_home(cloud_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own home (`cloud_home`), with room for a mothership on a loaded machine."""
    monkeypatch.setenv("FLASH_MOTHERSHIP_WAIT", "90")
    return cloud_home


async def _yes(_: Plan) -> bool:
    return True


def _options(screen: EnvironmentScreen) -> list[str]:
    listing = screen.query_one("#env-list", OptionList)
    return [str(listing.get_option_at_index(i).prompt) for i in range(listing.option_count)]


async def test_pick_staging_after_a_mothership_deploy_shows_its_endpoints(
    tmp_path: Path, tui_home: Path
) -> None:
    project = write_files(tmp_path / "envapp", MOTHERSHIP_PROJECT)
    async with Engine(project, env="staging") as engine:
        report = await engine.deploy(None, confirm=_yes, mothership=True)
        assert report.ok, report
    async with Engine(project) as engine:  # direct mode, beside staging: its own worker
        report = await engine.deploy(["worker"], confirm=_yes)
        assert report.ok, report
        direct = (await engine.deployed())["worker"]
    backend = Backend(project, "local")
    app = FlashApp(project, "local", watch=False, backend=backend)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1 and app.connected, 60, "scan and cloud")
        header = app.state.header()[0]
        assert "env:" not in header and "via mothership" not in header  # direct, local

        def deployed() -> dict[str, int | None]:
            return {n: s.pid for n, s in app.state.statuses.items() if s.deployed}

        # Direct mode's endpoints only: none of staging's.
        await until(pilot, lambda: deployed() == {"worker": direct.pid}, 30, "direct's worker")
        await pilot.press("E")
        await until(pilot, lambda: isinstance(app.screen, EnvironmentScreen), 30, "the dialog")
        screen = app.screen
        assert isinstance(screen, EnvironmentScreen)
        options = _options(screen)
        assert any(o.startswith("  staging") and "⌂ mothership" in o for o in options), options
        # Direct mode is the local cloud's `local` environment: that one is current.
        current = [o for o in options if "(current)" in o]
        assert len(current) == 1 and "local" in current[0], options
        # On the local cloud the environment decides the mode: no switch, a line says so.
        assert not screen.query("#deploy-mode")
        decided = str(screen.query_one("#mode-decided", Static).render())
        assert "the environment decides" in decided and "through its mothership" in decided
        # Pick staging: its mothership's mode follows from the name (enter confirms).
        screen.query_one("#env-list", OptionList).highlighted = [
            e.name for e in screen.environments
        ].index("staging")
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is not screen, 10, "the dialog to close")

        assert backend.env == "staging" and backend.mothership
        assert backend.engine.provider.environment_name(True) == "staging"
        table = app.dashboard.query_one(EndpointsTable)
        expected = {"mothership", *MOTHERSHIP_CHILDREN}

        def shows_staging() -> bool:
            rows = {str(k.value) for k in table.rows}
            statuses = app.state.statuses
            return (
                app.connected
                and expected <= rows
                and all(statuses[c].provisioning == "deployed" for c in MOTHERSHIP_CHILDREN)
            )

        await until(pilot, shows_staging, 60, "staging's endpoints, provisioned")
        # Staging's own: its mothership and children, none of direct mode's workers.
        assert set(deployed()) == expected and direct.pid not in deployed().values()
        assert all(app.state.statuses[c].role == "child" for c in MOTHERSHIP_CHILDREN)
        assert app.state.statuses["mothership"].role == "mothership"
        full, compact = app.state.header()
        assert "env: staging · via mothership" in full
        assert "env: staging · via mothership" in compact
        assert any("environment: staging" in r.text for r in app.logs)


async def test_from_the_palette_a_bad_name_says_why_and_esc_changes_nothing(
    tmp_path: Path, tui_home: Path
) -> None:
    project = write_files(tmp_path / "badenv", MOTHERSHIP_PROJECT)
    backend = Backend(project, "local")
    app = FlashApp(project, "local", watch=False, backend=backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1 and app.connected, 60, "scan and cloud")
        await pilot.press("ctrl+p", *"environment and deploy mode")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, EnvironmentScreen), 30, "the dialog")
        screen = app.screen
        assert isinstance(screen, EnvironmentScreen)
        keys = str(screen.query_one(".dialog-keys", Static).render())
        assert "enter" in keys and "esc cancel" in keys
        screen.set_focus(screen.query_one("#env-name", Input))
        await pilot.press(*"bad name!", "enter")
        problem = screen.query_one("#env-problem", Static)
        await until(pilot, lambda: "' '" in str(problem.render()), 10, "the reason")
        assert "'bad name!'" in str(problem.render())
        assert app.screen is screen  # still open: the name is kept to fix
        assert screen.query_one("#env-name", Input).value == "bad name!"

        # A name that fits alone but not with the app's key: refused here, not by the cloud.
        too_long = "e" * (128 - len(backend.app))
        screen.query_one("#env-name", Input).value = too_long
        await pilot.press("enter")
        await until(pilot, lambda: "too long" in str(problem.render()), 10, "the length reason")
        assert repr(backend.app) in str(problem.render())
        assert app.screen is screen

        await pilot.press("escape")
        await until(pilot, lambda: app.screen is not screen, 10, "the dialog to close")
        assert backend.env is None and not backend.mothership
        assert not app.state.mothership and app.state.environment is None
        assert "env:" not in app.state.header()[0]


async def test_the_dialog_lists_the_flash_apps_environments_on_runpod(
    tmp_path: Path, fake_runpod: FakeRunPod
) -> None:
    project = write_files(tmp_path / "rpenv", MOTHERSHIP_PROJECT)
    backend = Backend(project, "runpod", "staging")
    provider = RunPodProvider()
    try:
        flash_app = await provider.api.create_app(backend.engine.app)
        for env in ("production", "staging", "dev"):
            await provider.api.create_environment(flash_app.id, env)
    finally:
        await provider.close()
    app = FlashApp(project, "runpod", watch=False, backend=backend)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.connected, 60, "connected to the fake")
        assert "env: staging" in app.state.header()[0]
        await pilot.press("E")
        await until(pilot, lambda: isinstance(app.screen, EnvironmentScreen), 30, "the dialog")
        screen = app.screen
        assert isinstance(screen, EnvironmentScreen)
        assert [e.name for e in screen.environments] == ["dev", "production", "staging"]
        assert any("staging" in o and "(current)" in o for o in _options(screen))
        calls = [c.operation for c in fake_runpod.graphql_calls]
        assert "flashAppByName" in calls
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is not screen, 10, "the dialog to close")
        assert backend.env == "staging"


def test_the_header_names_the_environment_once() -> None:
    state = DashboardState(
        project="p", target="runpod staging (acct)", environment="staging", mothership=True
    )
    assert state.header() == (
        "p · target: runpod (acct) · env: staging · via mothership · 0 endpoints",
        "p · runpod · env: staging · via mothership · 0 endpoints",
    )
    local = DashboardState(project="p", target="local (127.0.0.1:5)")
    assert local.header()[0] == "p · target: local (127.0.0.1:5) · 0 endpoints"
    # Names ending in '-' or '.' are names too (a word boundary did not end them).
    for env in ("staging-", "v1."):
        odd = DashboardState(project="p", target=f"runpod {env} (acct)", environment=env)
        assert odd.header()[0] == f"p · target: runpod (acct) · env: {env} · 0 endpoints"


def test_picking_an_environment_on_the_local_cloud_decides_the_mode() -> None:
    assert picked_session("local", "local", True) == (None, False)
    assert picked_session("local", "staging", False) == ("staging", True)
    assert picked_session("runpod", "staging", False) == ("staging", False)


async def test_m_carries_the_env_given_at_start_into_mothership_mode(
    tmp_path: Path, tui_home: Path
) -> None:
    project = write_files(tmp_path / "menv", MOTHERSHIP_PROJECT)
    backend = Backend(project, "local", "staging")
    app = FlashApp(project, "local", watch=False, backend=backend)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1 and app.connected, 60, "scan and cloud")
        assert "env:" not in app.state.header()[0]  # direct deploys on the local cloud

        def connections() -> int:
            return sum(1 for r in app.logs if r.text.startswith("connected to"))

        before = connections()
        await pilot.press("M")
        await until(pilot, lambda: connections() > before, 30, "a new session on staging")
        assert app.state.mothership
        assert backend.engine.provider.environment_name(True) == "staging"
        assert "env: staging · via mothership" in app.state.header()[0]


def test_the_quit_message_names_the_environment_that_keeps_running() -> None:
    """An environment's endpoints are undeployed with its `--env`: the line says it."""
    running = [EndpointStatus("api", "LiveServerless", "healthy", "in_sync")]
    assert still_running(running, "local", "staging") == (
        "1 endpoint keeps running on the local cloud — `flash-tui undeploy --all --env staging`"
        " stops them"
    )
    assert still_running(running, "local") == (
        "1 endpoint keeps running on the local cloud — `flash-tui undeploy --all` stops them"
    )
