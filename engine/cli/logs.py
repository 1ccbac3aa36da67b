"""`flash-tui logs [NAME...] [--follow] [--lines N] [--json] [--project PATH]`.

Without NAME: every deployed endpoint of the project, their lines merged in the order the
workers wrote them, each with the time it was written. `--lines N`: the last N lines shown
(hidden health probes do not count); with `--follow`, those first, then new lines as they come.
A NAME not deployed (undeployed, or its deploy failed) shows the lines it wrote before it
stopped, kept until it is deployed again, under "(not deployed; last lines before it stopped)".
`--json` prints `{"lines": [...], "not_deployed": [NAME...]}` (each line with `endpoint`,
`text`, `at` (epoch seconds), `time` (ISO 8601 UTC), `stream`, `source`); with `--follow` one
such line object per line (NDJSON), until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.markup import escape

from engine.cli.arguments import add_command
from engine.cli.plan import add_project_option, json_out, run_engine
from engine.logs import LogLine
from engine.operations import Engine


def register(subparsers: Any) -> None:
    """Add the `logs` subcommand."""
    parser = add_command(
        subparsers,
        "logs",
        run=run,
        help="show (or follow) endpoint logs",
        description="The last lines of an endpoint's log (all deployed endpoints without "
        "NAME); --follow keeps printing new lines.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="endpoints (default: all)")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    parser.add_argument(
        "--lines", "-n", type=int, default=100, help="lines of history (the last N shown)"
    )
    parser.add_argument(
        "--probes", action="store_true", help="also show health-probe requests (GET /ping)"
    )
    add_project_option(parser)
    # On the local cloud `--env` names an environment: its endpoints are its own.
    parser.set_defaults(local_env=True)


def _stamp(at: float | None) -> str:
    # Milliseconds: lines of one second are told apart, and their order is visible.
    if at is None:
        return " " * 13  # an unstamped line (an old log file): no time rather than a wrong one
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d} "


def _print(console: Console, line: LogLine, width: int, many: bool) -> None:
    stamp = _stamp(line.at)
    who = f"[cyan]{escape(line.endpoint.ljust(width))}[/] " if many else ""
    style = {"flash": "dim", "error": "red"}.get(line.source, "")
    text = escape(line.text)
    console.print(f"[dim]{stamp}[/]{who}" + (f"[{style}]{text}[/]" if style else text))


def _say_stopped(console: Console, names: list[str]) -> None:
    for name in names:
        console.print(f"[dim]{escape(name)} (not deployed; last lines before it stopped)[/]")


def run(args: argparse.Namespace) -> int:
    """Print or follow logs."""

    async def work(engine: Engine) -> int:
        names = args.names or None
        console = Console(highlight=False, soft_wrap=True)
        stopped = await engine.not_deployed(names or [])
        if not args.follow:
            lines = await engine.logs(names, max(0, args.lines), probes=args.probes)
            if args.json:
                json_out(
                    {
                        "app": engine.app,
                        "lines": [ln.to_dict() for ln in lines],
                        "not_deployed": stopped,
                    }
                )
                return 0
            _say_stopped(console, stopped)
            width = max((len(ln.endpoint) for ln in lines), default=0)
            many = len({ln.endpoint for ln in lines}) > 1
            for line in lines:
                _print(console, line, width, many)
            return 0
        width = max((len(n) for n in names or []), default=10)
        many = names is None or len(names) > 1
        if not args.json:
            _say_stopped(console, stopped)
        async for line in engine.follow(names, max(0, args.lines), probes=args.probes):
            if args.json:
                sys.stdout.write(json.dumps(line.to_dict()) + "\n")
                sys.stdout.flush()
            else:
                _print(console, line, width, many)
        return 0

    return run_engine(args, work)
