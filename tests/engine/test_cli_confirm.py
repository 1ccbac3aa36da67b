"""The deploy/undeploy confirmation prompt of the headless CLI."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pty
from collections.abc import Iterator
from types import SimpleNamespace
from typing import TextIO

import pytest
from rich.console import Console

from engine.cli.plan import PlanConfirmation
from engine.plan import Plan


@contextlib.contextmanager
def terminal(typed: bytes) -> Iterator[TextIO]:
    """A real terminal (a pseudo-terminal's end) on which `typed` waits to be read."""
    master, slave = pty.openpty()
    try:
        os.write(master, typed)  # the terminal's line discipline holds it until it is read
        with open(slave, encoding="utf-8") as stdin:
            yield stdin
    finally:
        os.close(master)


def confirmation(json_out: bool = False, yes: bool = False) -> tuple[PlanConfirmation, io.StringIO]:
    out = io.StringIO()
    args = argparse.Namespace(json=json_out, yes=yes)
    console = Console(file=out, width=100, highlight=False)
    return PlanConfirmation(
        args, console, title="Deploy plan", question="Deploy these changes?", verb="deploy"
    ), out


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        (b"y\n", True),
        (b"YES\n", True),
        (b"n\n", False),
        (b"\n", False),
        (b"y\x04\x04", True),  # typed, then Ctrl+D twice: the end of input ends the line
    ],
)
async def test_answer_typed_at_the_prompt(
    monkeypatch: pytest.MonkeyPatch, typed: bytes, expected: bool
) -> None:
    confirm, out = confirmation()
    with terminal(typed) as stdin:
        monkeypatch.setattr("sys.stdin", stdin)
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
    confirm, _ = confirmation()
    with terminal(b"\x04") as stdin:  # Ctrl+D
        monkeypatch.setattr("sys.stdin", stdin)
        assert await confirm(Plan()) is False and confirm.refused
