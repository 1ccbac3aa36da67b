"""`flash-tui deploy [NAME...] [--yes] [--force] [--json] [--project PATH]`.

Builds first when the build is stale, prints the plan, asks before changing anything (unless
`--yes`; without a terminal to ask it refuses), deploys, and exits 1 if any endpoint failed.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.markup import escape

from engine.cli.plan import (
    add_project_option,
    ask_confirmation,
    err_console,
    json_out,
    print_plan,
    refuse_message,
    run_engine,
)
from engine.ops import Engine, OpEvent
from engine.plan import Plan


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


def progress_printer(console: Console, quiet: bool) -> Any:
    """An `OpEvent` callback printing one line per meaningful step (on stderr)."""

    def on_event(event: OpEvent) -> None:
        if quiet:
            return
        if event.step == "build" and event.data.get("build_step"):
            return  # per-step build progress is too chatty for a log-style output
        if event.step in ("scan", "plan", "confirm"):
            return
        who = f"[bold]{escape(event.name)}[/] " if event.name else ""
        state = event.data.get("state")
        color = {"healthy": "green", "removed": "green", "error": "red"}.get(str(state), "cyan")
        elapsed = event.data.get("elapsed_ms")
        suffix = f" [dim]({elapsed:.0f} ms)[/]" if isinstance(elapsed, (int, float)) else ""
        console.print(f"[{color}]•[/] {who}{escape(event.message)}{suffix}")

    return on_event


def run(args: argparse.Namespace) -> int:
    """Deploy."""
    console = err_console()
    refused: list[bool] = []

    async def confirm(plan: Plan) -> bool:
        if not args.json:
            print_plan(console, plan, title="Deploy plan")
        answer = ask_confirmation(args, "Deploy these changes?", "deploy")
        if answer is None:
            refused.append(True)
            return False
        return answer

    async def work(engine: Engine) -> int:
        report = await engine.deploy(
            args.names or None,
            force=args.force,
            confirm=confirm,
            on_event=progress_printer(console, args.json),
        )
        if refused:
            if args.json:
                json_out({**report.to_dict(), "ok": False, "error": refuse_message("deploy")})
            else:
                console.print(f"[bold red]error[/]: {refuse_message('deploy')}")
            return 1
        if args.json:
            json_out({"app": engine.app, **report.to_dict()})
        elif report.cancelled:
            console.print("[yellow]Cancelled.[/] Nothing was changed.")
        elif not report.plan.has_changes:
            print_plan(console, report.plan, title="Deploy plan")
            console.print("[green]Everything is up to date.[/]")
        else:
            for result in report.outcome.results if report.outcome else []:
                if not result.get("ok"):
                    console.print(
                        f"[bold red]✗ {escape(result['name'])}[/]: "
                        f"{escape(str(result.get('error') or 'failed'))}"
                    )
            verdict = "[green]Deployed[/]" if report.ok else "[bold red]Deploy failed[/]"
            console.print(f"{verdict} in {report.elapsed_ms / 1000:.2f} s")
        return 0 if report.ok else 1

    return run_engine(args, work)
