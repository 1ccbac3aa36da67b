"""`flash-tui undeploy [NAME...|--all] [--yes] [--json] [--project PATH]`.

Lists what will be destroyed and asks (unless `--yes`; without a terminal it refuses).
"""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.plan import (
    PlanConfirmation,
    add_project_option,
    err_console,
    json_out,
    print_outcome,
    progress_printer,
    run_engine,
)
from engine.operations import Engine


def register(subparsers: Any) -> None:
    """Add the `undeploy` subcommand."""
    parser = subparsers.add_parser(
        "undeploy",
        help="stop and remove deployed endpoints",
        description="Stop and remove the NAMEd endpoints, or every endpoint of the project "
        "with --all.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="endpoints to remove")
    parser.add_argument("--all", action="store_true", help="remove every endpoint of the project")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    add_project_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Undeploy."""
    console = err_console()
    if bool(args.names) == bool(args.all):
        message = "name the endpoints to undeploy, or pass --all (not both)"
        if args.json:
            json_out({"ok": False, "error": message})
        else:
            console.print(f"[bold red]error[/]: {message}")
        return 2
    confirm = PlanConfirmation(
        args,
        console,
        title="Will be destroyed",
        question="Destroy these endpoints?",
        verb="undeploy",
    )

    async def work(engine: Engine) -> int:
        report = await engine.undeploy(
            None if args.all else args.names,
            confirm=confirm,
            on_event=progress_printer(console, args.json),
        )
        if confirm.refused:
            return confirm.report_refusal(report)
        if args.json:
            json_out({"app": engine.app, **report.to_dict()})
        elif report.cancelled:
            console.print("[yellow]Cancelled.[/] Nothing was changed.")
        elif not report.plan.items:
            console.print("Nothing is deployed.")
        else:
            print_outcome(console, report, "Undeployed", "Undeploy failed")
        return 0 if report.ok else 1

    return run_engine(args, work)
