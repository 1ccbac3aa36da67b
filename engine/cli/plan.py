"""`flash-tui plan [NAME...] [--json]`: what a deploy would create, update, delete or keep.

Also home of the small helpers the deployment subcommands share (project option, running an
engine operation, rendering a plan, asking for confirmation), so each of them stays short.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.ops import Engine, OpError
from engine.plan import Plan

__all__ = [
    "add_project_option",
    "ask_confirmation",
    "err_console",
    "json_out",
    "print_plan",
    "register",
    "run",
    "run_engine",
]

T = TypeVar("T")

SYMBOLS = {"create": "+", "update": "~", "delete": "-", "unchanged": "="}
COLORS = {"create": "green", "update": "yellow", "delete": "red", "unchanged": "dim"}


def add_project_option(parser: argparse.ArgumentParser) -> None:
    """`--project PATH` (default: the current directory) and `--json`."""
    parser.add_argument(
        "--project", default=".", metavar="PATH", help="project directory (default: .)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def err_console() -> Console:
    """Rich console on stderr (progress and errors, so stdout stays clean for --json)."""
    return Console(stderr=True, highlight=False)


def json_out(data: Any) -> None:
    """Print one JSON object on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def run_engine(args: argparse.Namespace, work: Callable[[Engine], Awaitable[int]]) -> int:
    """Run `work(engine)` for `--project`; OpError -> message on stderr (or JSON), exit 1."""

    async def main() -> int:
        async with Engine(Path(args.project)) as engine:
            return await work(engine)

    try:
        return asyncio.run(main())
    except OpError as exc:
        if getattr(args, "json", False):
            json_out({"ok": False, "error": str(exc)})
        else:
            err_console().print(f"[bold red]error[/]: {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        err_console().print("[yellow]interrupted[/]")
        return 130


def _value(value: Any) -> str:
    return "—" if value is None else json.dumps(value)


def print_plan(console: Console, plan: Plan, title: str = "Plan") -> None:
    """The plan as a table: + create, ~ update (with field diffs), - delete, = unchanged."""
    table = Table(title=title, show_header=True, header_style="bold", title_justify="left")
    table.add_column("", width=1)
    table.add_column("endpoint")
    table.add_column("type")
    table.add_column("action")
    table.add_column("why / changes (deployed → local)")
    for item in plan.items:
        color = COLORS[item.action]
        details = [escape(r) for r in item.reasons]
        for change in item.changes:
            details.append(
                f"[bold]{escape(change.field)}[/] {escape(_value(change.deployed))} → "
                f"{escape(_value(change.local))}"
            )
        table.add_row(
            f"[{color}]{SYMBOLS[item.action]}[/]",
            escape(item.name),
            escape(item.resource_type or ""),
            f"[{color}]{item.action}[/]",
            "\n".join(details),
        )
    console.print(table)
    counts = plan.counts()
    console.print(
        f"[green]{counts['create']} to create[/], [yellow]{counts['update']} to update[/], "
        f"[red]{counts['delete']} to delete[/], {counts['unchanged']} unchanged"
    )


def ask_confirmation(args: argparse.Namespace, question: str, verb: str) -> bool | None:
    """True/False from the user; None when there is no terminal to ask (the caller refuses).

    `--yes` answers yes without asking.
    """
    if getattr(args, "yes", False):
        return True
    if not sys.stdin.isatty():
        return None
    console = err_console()
    console.print(f"{question} [bold]\\[y/N][/] ", end="")
    try:
        answer = input()
    except EOFError:
        return None
    return answer.strip().lower() in ("y", "yes")


def refuse_message(verb: str) -> str:
    """The message when confirmation is needed but stdin is not a terminal."""
    return (
        f"refusing to {verb} without confirmation: stdin is not a terminal. "
        "Pass --yes to confirm non-interactively."
    )


def register(subparsers: Any) -> None:
    """Add the `plan` subcommand."""
    parser = subparsers.add_parser(
        "plan",
        help="show what deploy would create, update, delete or keep",
        description="Scan the project and compare each endpoint's config (and code) with "
        "what is deployed. Changes nothing.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these endpoints")
    parser.add_argument("--force", action="store_true", help="plan updating unchanged endpoints")
    add_project_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the plan."""

    async def work(engine: Engine) -> int:
        plan = await engine.plan(args.names or None, force=args.force)
        if args.json:
            json_out({"ok": True, "app": engine.app, **plan.to_dict()})
        else:
            console = Console(highlight=False)
            print_plan(console, plan, title=f"Plan for {engine.app}")
        return 0

    return run_engine(args, work)
