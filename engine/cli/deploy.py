"""`flash-tui deploy [NAME...] [--yes] [--force] [--mothership] [--env NAME] [--json]
[--project PATH]`.

Builds first when the build is stale, prints the plan, asks before changing anything (unless
`--yes`; without a terminal to ask it refuses), deploys, and exits 1 if any endpoint failed.
With `--mothership`, only the environment's mothership is deployed; it provisions the others,
and deploy waits until it has.
Ctrl+C while it deploys cancels: no more endpoints start, those starting finish, and it says
which were deployed and which were not started (exit 130); the next deploy does the rest.
"""

from __future__ import annotations

import argparse
from typing import Any

from engine.app_environments import DEFAULT_ENVIRONMENT
from engine.cli.plan import (
    PlanConfirmation,
    add_deployment_command,
    cancel_on_interrupt,
    err_console,
    print_plan,
    progress_printer,
    run_engine,
)
from engine.operations import Engine


def register(subparsers: Any) -> None:
    """Add the `deploy` subcommand."""
    parser = add_deployment_command(
        subparsers,
        "deploy",
        help="build if needed, show the plan, deploy",
        description="Deploy the project's endpoints (all, or the NAMEs given) to the target. "
        "Endpoints removed from the code are deleted only by a full deploy.",
        names_help="only these endpoints",
        run=run,
    )
    parser.add_argument("--force", action="store_true", help="also redeploy unchanged endpoints")
    parser.add_argument(
        "--mothership",
        action="store_true",
        help="deploy only the environment's mothership, which provisions the other endpoints "
        "itself (--env NAME, default production)",
    )


def run(args: argparse.Namespace) -> int:
    """Deploy."""
    console = err_console()
    confirm = PlanConfirmation(
        args, console, title="Deploy plan", question="Deploy these changes?", verb="deploy"
    )

    if args.mothership:
        args.local_env = True  # the environment the mothership provisions
        if getattr(args, "target_name", "local") == "local":
            # On the local cloud an environment is its own set of endpoints: name it for
            # the whole session (plan, deploy, waiting for the children).
            args.env = args.env or DEFAULT_ENVIRONMENT

    async def work(engine: Engine) -> int:
        with cancel_on_interrupt(console, confirm.interrupted):
            report = await engine.deploy(
                args.names or None,
                force=args.force,
                confirm=confirm,
                on_event=progress_printer(console, args.json),
                cancel=confirm.interrupted,
                mothership=args.mothership,
            )

        def up_to_date() -> None:
            print_plan(console, report.plan, title="Deploy plan")
            console.print("[green]Everything is up to date.[/]")

        return confirm.conclude(
            engine.app,
            report,
            idle=not report.plan.has_changes,
            say_idle=up_to_date,
            done="Deployed",
            failed="Deploy failed",
        )

    return run_engine(args, work)
