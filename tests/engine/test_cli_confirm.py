"""The deploy/undeploy confirmation prompt of the headless CLI."""

from __future__ import annotations

import argparse
import io
import json
from types import SimpleNamespace

import pytest
from rich.console import Console

from engine.cli.plan import PlanConfirmation
from engine.plan import Plan


class FakeTty(io.StringIO):
    """A stdin that claims to be a terminal, holding the user's typed answer."""

    def isatty(self) -> bool:
        return True


def confirmation(json_out: bool = False, yes: bool = False) -> tuple[PlanConfirmation, io.StringIO]:
    out = io.StringIO()
    args = argparse.Namespace(json=json_out, yes=yes)
    console = Console(file=out, width=100, highlight=False)
    return PlanConfirmation(
        args, console, title="Deploy plan", question="Deploy these changes?", verb="deploy"
    ), out


@pytest.mark.parametrize(
    ("typed", "expected"), [("y\n", True), ("YES\n", True), ("n\n", False), ("\n", False)]
)
async def test_answer_typed_at_the_prompt(
    monkeypatch: pytest.MonkeyPatch, typed: str, expected: bool
) -> None:
    monkeypatch.setattr("sys.stdin", FakeTty(typed))
    confirm, out = confirmation()
    assert await confirm(Plan()) is expected
    assert not confirm.refused
    assert "Deploy plan" in out.getvalue() and "[y/N]" in out.getvalue()


async def test_yes_flag_answers_without_asking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: --yes must not need one
    confirm, out = confirmation(yes=True)
    assert await confirm(Plan()) is True
    assert "[y/N]" not in out.getvalue()


async def test_no_terminal_refuses_and_says_how_to_confirm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # piped input is not an answer
    confirm, _ = confirmation(json_out=True)
    assert await confirm(Plan()) is False and confirm.refused
    report = SimpleNamespace(to_dict=lambda: {"plan": {"items": []}})
    assert confirm.report_refusal(report) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] is False and "--yes" in printed["error"]


async def test_end_of_input_at_the_prompt_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", FakeTty(""))
    confirm, _ = confirmation()
    assert await confirm(Plan()) is False and confirm.refused
