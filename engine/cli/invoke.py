"""`flash-tui invoke NAME|ROUTE [--data JSON] [--json] [--project PATH]`.

Targets: `"POST /compute"`, `/compute`, `api:/compute` (LB routes); `embed`,
`gpu_worker:embed`, `cpu_worker:TextAnalyzer.keywords` (QB functions; `--data` is the JSON
object of keyword arguments). Prints the status, the latency and the result, or the remote
error's type, message and user-code line.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax

from engine.cli.arguments import add_command, positive_seconds
from engine.cli.plan import add_project_option, json_out, run_engine
from engine.operations import Engine, OpError


def register(subparsers: Any) -> None:
    """Add the `invoke` subcommand."""
    parser = add_command(
        subparsers,
        "invoke",
        run=run,
        help="call an LB route or a QB function of a deployed endpoint",
        description="Call a deployed endpoint: an LB route ('POST /compute', 'api:/compute') "
        "or a QB function ('embed', 'gpu_worker:embed') with --data as its JSON arguments.",
    )
    parser.add_argument("target", metavar="NAME|ROUTE", help="route or function to call")
    parser.add_argument("--data", "-d", default=None, help="JSON body / keyword arguments")
    parser.add_argument(
        "--timeout", type=positive_seconds, default=120.0, help="seconds (default 120)"
    )
    add_project_option(parser)
    # On the local cloud `--env` names an environment: its endpoints are its own.
    parser.set_defaults(local_env=True)


def run(args: argparse.Namespace) -> int:
    """Call the endpoint and print the outcome."""

    async def work(engine: Engine) -> int:
        data = None
        if args.data is not None:
            try:
                data = json.loads(args.data)
            except ValueError as exc:
                raise OpError(f"--data is not valid JSON: {exc}") from exc
        result = await engine.invoke(args.target, data, timeout=args.timeout)
        if args.json:
            json_out(result.to_dict())
            return 0 if result.ok else 1
        console = Console(highlight=False)
        verdict = "[green]ok[/]" if result.ok else "[bold red]failed[/]"
        status = result.status_code if result.status_code is not None else "—"
        job = f" · job {result.job_status}" if result.job_status else ""
        console.print(
            f"{verdict} · {escape(result.call.describe())} · HTTP {status}{job} · "
            f"{result.latency_ms:.1f} ms"
        )
        if result.ok:
            try:
                text = json.dumps(result.result, indent=2)
                console.print(Syntax(text, "json", theme="ansi_dark", background_color="default"))
            except (TypeError, ValueError):
                console.print(repr(result.result), markup=False)
        elif result.remote_error is not None:
            # What failed, where in the user's code, then the traceback.
            remote = result.remote_error
            console.print(f"[bold red]{escape(remote.type)}[/]: {escape(remote.message)}")
            if remote.location:
                console.print(f"  at [bold]{escape(remote.location)}[/]")
            if remote.traceback:
                console.print(remote.traceback.rstrip(), markup=False, style="dim")
        else:
            console.print(str(result.error), markup=False)
        return 0 if result.ok else 1

    return run_engine(args, work)
