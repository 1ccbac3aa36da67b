"""Pilot tests of the confirmation dialogs and the help screen: confirm and every cancel path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hosts import ScreenHost, running_tester, shown_response
from rich.console import Console
from textual.screen import Screen
from textual.widgets import Button, Input
from waiting import until

from engine.drift import Drift, FieldDiff
from engine.plan import PlanItem

# The module, not its names: pytest would try to collect a class named Test*.
from flash_tui.screens.confirm import (
    PlanScreen,
    UndeployAllScreen,
    UndeployScreen,
    plan_counts,
    render_plan,
)
from flash_tui.screens.help import HelpScreen

PLAN = [
    PlanItem(
        "cpu_worker",
        "create",
        "CpuServerlessEndpoint",
        Drift("cpu_worker", "new", "CpuServerlessEndpoint"),
    ),
    PlanItem(
        "gpu_worker",
        "update",
        "LiveServerless",
        Drift("gpu_worker", "drifted", "LiveServerless", (FieldDiff("workersMax", 3, 5),)),
    ),
    PlanItem(
        "gateway",
        "unchanged",
        "CpuLoadBalancerSlsResource",
        Drift("gateway", "in_sync", "CpuLoadBalancerSlsResource"),
    ),
]
PLAN_WITH_DELETE = PLAN + [
    PlanItem("old", "delete", "LiveServerless", Drift("old", "orphaned", "LiveServerless"))
]


# (dialog, the button focused first, the keys pressed, the answer): the focus starts on the safe
# choice when something would be destroyed, and Escape always cancels.
ANSWERS = {
    "plan: enter deploys": (lambda: PlanScreen(PLAN), "confirm", ["enter"], True),
    "plan: escape cancels": (lambda: PlanScreen(PLAN), "confirm", ["escape"], False),
    "plan with a delete: enter cancels": (
        lambda: PlanScreen(PLAN_WITH_DELETE),
        "cancel",
        ["enter"],
        False,
    ),
    "undeploy: enter cancels": (
        lambda: UndeployScreen(["gateway"], {"gateway": "http://127.0.0.1:1"}),
        "cancel",
        ["enter"],
        False,
    ),
    "undeploy: escape cancels": (lambda: UndeployScreen(["gateway"]), "cancel", ["escape"], False),
    # Cancel -> Undeploy: a deliberate second key.
    "undeploy: tab, enter confirms": (
        lambda: UndeployScreen(["gateway"]),
        "cancel",
        ["tab", "enter"],
        True,
    ),
}


@pytest.mark.parametrize(("dialog", "focused", "keys", "answer"), ANSWERS.values(), ids=ANSWERS)
async def test_dialog_answers(
    dialog: Callable[[], Screen[Any]], focused: str, keys: list[str], answer: bool
) -> None:
    app = ScreenHost(dialog())
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.focused is not None, 5, "the dialog's focus")
        assert app.focused is not None and app.focused.id == focused
        await pilot.press(*keys)
        await until(pilot, lambda: app.results, 5, "the answer")
    assert app.results == [answer]


async def test_plan_dialog_cancel_button() -> None:
    app = ScreenHost(PlanScreen(PLAN))
    async with app.run_test() as pilot:
        await pilot.click("#cancel")
        await until(pilot, lambda: app.results, 5, "the answer")
    assert app.results == [False]


async def test_plan_with_nothing_to_do_cannot_deploy() -> None:
    app = ScreenHost(PlanScreen([PLAN[2]]))
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.screen.query_one("#confirm", Button).disabled
        await pilot.press("escape")
        await pilot.pause()
    assert app.results == [False]


def test_plan_rendering_marks_and_diffs() -> None:
    console = Console(width=80, record=True)
    console.print(render_plan(PLAN_WITH_DELETE))
    text = console.export_text()
    assert "- old" in text
    assert "~ gpu_worker" in text and "workersMax: 3 → 5" in text
    assert "+ cpu_worker" in text and "= gateway" in text
    # Destructive lines come first so they cannot scroll out of sight.
    assert text.index("- old") < text.index("~ gpu_worker") < text.index("+ cpu_worker")
    assert plan_counts(PLAN_WITH_DELETE) == "1 to create, 1 to update, 1 to delete, 1 unchanged"


async def test_undeploy_all_requires_the_project_name() -> None:
    app = ScreenHost(UndeployAllScreen("quickstart", ["a", "b"]))
    async with app.run_test() as pilot:
        await pilot.pause()
        confirm = app.screen.query_one("#confirm", Button)
        assert confirm.disabled
        await pilot.press(*"quick")
        await pilot.press("enter")  # a wrong name submits nothing
        await pilot.pause()
        assert app.results == [] and confirm.disabled
        await pilot.press(*"start")
        await pilot.pause()
        assert app.screen.query_one(Input).value == "quickstart"
        assert not confirm.disabled
        await pilot.press("enter")
        await pilot.pause()
    assert app.results == [True]


async def test_undeploy_all_escape_cancels_even_when_typed() -> None:
    app = ScreenHost(UndeployAllScreen("quickstart", ["a"]))
    async with app.run_test() as pilot:
        await pilot.press(*"quickstart")
        await pilot.press("escape")
        await pilot.pause()
    assert app.results == [False]


async def test_help_screen_lists_every_key_and_closes() -> None:
    from flash_tui.commands import ACTIONS

    app = ScreenHost(HelpScreen())
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        shown = app.export_screenshot().replace("&#160;", " ")
        for action in ACTIONS:
            assert action.help.split("(")[0].strip()[:20] in shown
        await pilot.press("escape")
        await pilot.pause()
    assert app.results == [None]


async def test_copy_as_curl_also_shows_the_command() -> None:
    async with running_tester(None, size=(80, 24)) as (pilot, screen):

        def shown() -> str:
            return shown_response(screen)

        await pilot.press("ctrl+y")
        await until(pilot, lambda: "$FLASH_ENDPOINT_KEY" in shown(), 5, "the redacted curl")
        assert "key redacted" in shown() and "sk-secret" not in shown()
        await pilot.press("ctrl+k")
        await until(pilot, lambda: "sk-secret" in shown(), 5, "the curl with the key")
        assert not screen.history  # copying sends nothing


# (dialog, keys pressed first, what the keys line says then)
KEY_LINES = {
    "plan": (lambda: PlanScreen(PLAN), [], "enter deploy · tab next · esc cancel"),
    "plan with a delete": (lambda: PlanScreen(PLAN_WITH_DELETE), [], "enter cancel"),
    "undeploy": (lambda: UndeployScreen(["gateway"]), [], "enter cancel · tab next · esc cancel"),
    "undeploy after tab": (lambda: UndeployScreen(["gateway"]), ["tab"], "enter undeploy ·"),
    "undeploy all": (
        lambda: UndeployAllScreen("quickstart", ["api"]),
        [],
        "enter confirm (once typed) · tab next · esc cancel",
    ),
}


@pytest.mark.parametrize(("dialog", "keys", "line"), KEY_LINES.values(), ids=KEY_LINES)
async def test_dialogs_say_their_keys(
    dialog: Callable[[], Screen[Any]], keys: list[str], line: str
) -> None:
    app = ScreenHost(dialog())
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.focused is not None, 5, "the dialog's focus")
        await pilot.press(*keys)

        def said() -> str:
            return " ".join(str(s.render()) for s in app.screen.query(".dialog-keys"))

        await until(pilot, lambda: line in said(), 5, f"{line!r} in the keys line")
        # The line is on the screen, not cut off below the dialog.
        assert line in app.export_screenshot().replace("&#160;", " ")
