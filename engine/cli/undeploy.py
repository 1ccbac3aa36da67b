"""`flash-tui undeploy [NAME...|--all] [--yes] [--json] [--project PATH]`.

Lists what will be destroyed and asks (unless `--yes`; without a terminal it refuses).
"""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.plan import (
    PlanConfirmation,
    add_deployment_command,
    err_console,
    json_out,
    progress_printer,
    run_engine,
)
from engine.operations import Engine


def register(subparsers: Any) -> None:
    """Add the `undeploy` subcommand."""
    parser = add_deployment_command(
        subparsers,
        "undeploy",
        help="stop and remove deployed endpoints",
        description="Stop and remove the NAMEd endpoints, or every endpoint of the project "
        "with --all.",
        names_help="endpoints to remove",
        run=run,
    )
    parser.add_argument("--all", action="store_true", help="remove every endpoint of the project")
    # On the local cloud `--env` names a mothership's environment; `--all` removes it and
    # every child it provisioned.
    parser.set_defaults(local_env=True)


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
        return confirm.conclude(
            engine.app,
            report,
            idle=not report.plan.items,
            say_idle=lambda: console.print("Nothing is deployed."),
            done="Undeployed",
            failed="Undeploy failed",
        )

    return run_engine(args, work)
