"""`flash-tui restart NAME [--yes] [--json] [--project PATH]`: stop and start one endpoint's
worker (same build and config; a new process). Asks first unless `--yes`; without a terminal to
ask it refuses. On RunPod it says it is not available there."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.markup import escape

from engine.cli.arguments import add_command
from engine.cli.plan import add_project_option, ask, err_console, json_out, run_engine
from engine.operations import Engine, OpEvent


def register(subparsers: Any) -> None:
    """Add the `restart` subcommand."""
    parser = add_command(
        subparsers,
        "restart",
        run=run,
        help="restart a deployed endpoint's worker",
        description="Stop and start the worker of a deployed endpoint (same build and config, "
        "a new process). Only the local cloud can; RunPod starts and stops its workers itself.",
    )
    parser.add_argument("name", metavar="NAME", help="the deployed endpoint")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    add_project_option(parser)
    # On the local cloud `--env` names an environment: its endpoints are its own.
    parser.set_defaults(local_env=True)


def run(args: argparse.Namespace) -> int:
    """Restart one endpoint."""
    console = err_console()
    if not args.yes:
        if not sys.stdin.isatty():
            message = (
                "refusing to restart without confirmation: stdin is not a terminal. "
                "Pass --yes to confirm non-interactively."
            )
            if args.json:
                json_out({"ok": False, "error": message})
            else:
                console.print(f"[bold red]error[/]: {message}")
            return 1
        answer = ask(console, f"Restart {escape(args.name)}?")
        if answer != "yes":
            console.print("[yellow]Cancelled.[/] Nothing was changed.")
            return 130 if answer == "interrupt" else 1

    def progress(event: OpEvent) -> None:
        if not args.json and event.step == "endpoint":
            console.print(f"[cyan]•[/] [bold]{escape(args.name)}[/] {escape(event.message)}")

    async def work(engine: Engine) -> int:
        result = await engine.restart(args.name, on_event=progress)
        if args.json:
            json_out({"app": engine.app, **result.to_dict()})
        elif result.ok:
            console.print(f"[green]Restarted[/] {escape(args.name)}")
        else:
            console.print(f"[bold red]Restart failed[/]: {escape(result.error or 'failed')}")
        return 0 if result.ok else 1

    return run_engine(args, work)
