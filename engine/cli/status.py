"""`flash-tui status [--json] [--no-probe] [--project PATH]`: every endpoint's status, drift
and live health.

`--json` prints `{"app", "target", "endpoints": [...], "kept_apps": [...]}`, one object per
endpoint in code or deployed with `name`, `resource_type`, `status` (not_deployed|deploying|
healthy|unhealthy|failed|stopped), `drift` (new|in_sync|drifted|orphaned|unparsable|unknown),
`drift_fields` (a change of the code alone is field `code`), `drift_reason` (e.g. `source does
not parse: FILE:LINE`), `url`, `pid`, `restarts` and `health` ({ok, latency_ms, at} or null).
`kept_apps`: apps an older flash-tui keyed by this folder's name that the store migration could
not attach to this project for sure (`name`, `project_path`, `endpoints`). Keys never appear.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.app_environments import DIRECT_ENVIRONMENT, AppEnvironment
from engine.cli.arguments import add_command
from engine.cli.plan import add_project_option, json_out, run_engine
from engine.operations import Engine
from engine.status import EndpointStatus, Status
from engine.styles import DRIFT_STYLES, STATUS_STYLES, style_of


def register(subparsers: Any) -> None:
    """Add the `status` subcommand."""
    parser = add_command(
        subparsers,
        "status",
        run=run,
        help="status, drift and health of every endpoint",
        description="Every endpoint in code or deployed: deployment status, drift (config "
        "in code vs deployed) and a live health probe.",
    )
    parser.add_argument("--no-probe", action="store_true", help="skip the live health probe")
    add_project_option(parser)
    # On the local cloud `--env` names the environment whose provisioning state is shown.
    parser.set_defaults(local_env=True)


def short_type(resource_type: str | None) -> str:
    """`CpuLiveLoadBalancer` -> `LB CPU live`: what the class name says, in a narrow column."""
    if not resource_type:
        return "?"
    kind = "LB" if "LoadBalancer" in resource_type else "QB"
    hardware = "CPU" if resource_type.startswith("Cpu") else "GPU"
    return f"{kind} {hardware}" + (" live" if "Live" in resource_type else "")


def _role(status: EndpointStatus) -> str:
    """`mothership`, or `child` with its provisioning state (`child: deployed`)."""
    if status.role == "child" and status.provisioning:
        style = "red" if status.provisioning == "failed" else "dim"
        return f"child: [{style}]{escape(status.provisioning)}[/]"
    return status.role


def _other_environments(
    console: Console, environments: list[AppEnvironment], env: str | None
) -> None:
    """One line naming the app's other sets of endpoints on the local cloud, where `--env`
    (or none, for direct mode) shows them: each environment is apart."""
    current = env or DIRECT_ENVIRONMENT
    shown = [e for e in environments if e.mothership or e.name == DIRECT_ENVIRONMENT]
    others = [e for e in shown if e.name != current]
    if not others:
        return
    named = ", ".join(
        "direct mode (no --env)" if e.name == DIRECT_ENVIRONMENT else f"--env {e.name}"
        for e in others
    )
    console.print(f"[dim]Also deployed, apart from these: {escape(named)}.[/]")


def run(args: argparse.Namespace) -> int:
    """Print the status."""

    async def work(engine: Engine) -> int:
        target = await engine.connect()
        statuses = await engine.status(probe=not args.no_probe)
        kept = await engine.kept_apps()
        if args.json:
            json_out(
                {
                    "app": engine.app,
                    "target": target,
                    "endpoints": [s.to_dict() for s in statuses],
                    "kept_apps": [a.to_dict() for a in kept],
                    "isolation": await engine.isolation(),
                }
            )
            return 0
        console = Console(highlight=False)
        table = Table(
            title=f"{engine.app} · {target}",
            title_justify="left",
            header_style="bold",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,
        )
        # The role column only when a mothership is involved: direct mode has one role.
        roles = any(s.role != "endpoint" for s in statuses)
        for column in ("endpoint", "type", "status", "drift", "health", "url", "pid"):
            table.add_column(column, no_wrap=True)
        table.add_column("restarts", justify="right")
        if roles:
            table.add_column("role", no_wrap=True)
        for s in statuses:
            health = "—"
            if s.health is not None:
                health = (
                    f"[green]{s.health.latency_ms:.1f}ms[/]"
                    if s.health.ok
                    else f"[red]{escape(s.health.detail or 'failing')}[/]"
                )
            table.add_row(
                escape(s.name),
                short_type(s.resource_type),
                f"[{style_of(s.status, STATUS_STYLES)}]{s.status}[/]",
                f"[{style_of(s.drift, DRIFT_STYLES)}]{s.drift}[/]",
                health,
                escape((s.url or "—").removeprefix("http://")),
                str(s.pid or "—"),
                str(s.restarts),
                *([_role(s)] if roles else []),
            )
        console.print(table)
        for s in statuses:
            for change in s.drift_fields:
                console.print(
                    f"  [yellow]{escape(s.name)}[/] {escape(change.field)}: "
                    f"{escape(json.dumps(change.deployed))} → "
                    f"{escape(json.dumps(change.local))}  [dim](deployed → local)[/]"
                )
            if s.drift == "unparsable":
                console.print(
                    f"  [magenta]{escape(s.name)}[/]: {escape(s.drift_reason)}"
                    " [dim](kept deployed: its code still exists)[/]"
                )
            if s.unresolved:
                console.print(
                    f"  [dim]{escape(s.name)}: not statically resolvable: "
                    f"{escape(', '.join(s.unresolved))}[/]"
                )
            if s.provisioning_error:
                console.print(f"  [red]{escape(s.name)} provisioning failed[/]:")
                console.print(escape(s.provisioning_error), markup=False)
            if s.status == Status.FAILED and s.last_error:
                console.print(f"  [red]{escape(s.name)} failed[/]; last output:")
                console.print(escape(s.last_error), markup=False)
        for app in kept:
            console.print(
                f"[yellow]App {escape(app.name)} ({app.endpoints} endpoint(s)), deployed"
                " by an older flash-tui from a folder of this name, was kept as it was: which"
                " project it belongs to is not known for sure. Its endpoints still run; see"
                " `flash-tui cloud status`.[/]"
            )
        if getattr(args, "target_name", "local") == "local":
            _other_environments(console, await engine.environments(), args.env)
        if any(s.resource_type and "Cpu" not in s.resource_type for s in statuses):
            console.print("[dim]GPU endpoints run on this machine's CPU in the local cloud.[/]")
        return 0

    return run_engine(args, work)
