"""`flash-tui undeploy [NAME...|--all] [--yes] [--json] [--project PATH]`.

Lists what will be destroyed and asks (unless `--yes`; without a terminal it refuses).
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape

from engine.cli.deploy import progress_printer
from engine.cli.plan import (
    add_project_option,
    ask_confirmation,
    err_console,
    json_out,
    print_plan,
    refuse_message,
    run_engine,
)
from engine.ops import Engine
from engine.plan import Plan


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
    refused: list[bool] = []

    async def confirm(plan: Plan) -> bool:
        if not args.json:
            print_plan(console, plan, title="Will be destroyed")
        answer = ask_confirmation(args, "Destroy these endpoints?", "undeploy")
        if answer is None:
            refused.append(True)
            return False
        return answer

    async def work(engine: Engine) -> int:
        report = await engine.undeploy(
            None if args.all else args.names,
            confirm=confirm,
            on_event=progress_printer(console, args.json),
        )
        if refused:
            if args.json:
                json_out({**report.to_dict(), "ok": False, "error": refuse_message("undeploy")})
            else:
                console.print(f"[bold red]error[/]: {refuse_message('undeploy')}")
            return 1
        if args.json:
            json_out({"app": engine.app, **report.to_dict()})
        elif report.cancelled:
            console.print("[yellow]Cancelled.[/] Nothing was changed.")
        elif not report.plan.items:
            console.print("Nothing is deployed.")
        else:
            for result in report.outcome.results if report.outcome else []:
                if not result.get("ok"):
                    console.print(
                        f"[bold red]✗ {escape(result['name'])}[/]: "
                        f"{escape(str(result.get('error')))}"
                    )
            verdict = "[green]Undeployed[/]" if report.ok else "[bold red]Undeploy failed[/]"
            console.print(f"{verdict} in {report.elapsed_ms / 1000:.2f} s")
        return 0 if report.ok else 1

    return run_engine(args, work)
