"""`flash-tui deploy [NAME...] [--yes] [--force] [--json] [--project PATH]`.

Builds first when the build is stale, prints the plan, asks before changing anything (unless
`--yes`; without a terminal to ask it refuses), deploys, and exits 1 if any endpoint failed.
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
    print_plan,
    progress_printer,
    run_engine,
)
from engine.operations import Engine


def register(subparsers: Any) -> None:
    """Add the `deploy` subcommand."""
    parser = subparsers.add_parser(
        "deploy",
        help="build if needed, show the plan, deploy",
        description="Deploy the project's endpoints (all, or the NAMEs given) to the target. "
        "Endpoints removed from the code are deleted only by a full deploy.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these endpoints")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--force", action="store_true", help="also redeploy unchanged endpoints")
    add_project_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Deploy."""
    console = err_console()
    confirm = PlanConfirmation(
        args, console, title="Deploy plan", question="Deploy these changes?", verb="deploy"
    )

    async def work(engine: Engine) -> int:
        report = await engine.deploy(
            args.names or None,
            force=args.force,
            confirm=confirm,
            on_event=progress_printer(console, args.json),
        )
        if confirm.refused:
            return confirm.report_refusal(report)
        if args.json:
            json_out({"app": engine.app, **report.to_dict()})
        elif report.cancelled:
            console.print("[yellow]Cancelled.[/] Nothing was changed.")
        elif not report.plan.has_changes:
            print_plan(console, report.plan, title="Deploy plan")
            console.print("[green]Everything is up to date.[/]")
        else:
            print_outcome(console, report, "Deployed", "Deploy failed")
        return 0 if report.ok else 1

    return run_engine(args, work)
