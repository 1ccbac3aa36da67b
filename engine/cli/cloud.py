"""`flash-tui cloud start|stop|status [--json]`: the local cloud service of the flash-tui home
($FLASH_TUI_HOME or the platform's user data directory)."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from rich.console import Console
from rich.markup import escape

from engine.cli.arguments import add_command
from engine.cli.plan import err_console, json_out
from engine.home import Home
from engine.localcloud.client import CloudClient
from engine.localcloud.discovery import (
    CloudError,
    CloudStateLost,
    ensure_cloud,
    lock_holder,
    read_state,
    state_problem,
    stop_cloud,
)
from engine.localcloud.isolation import describe_isolation
from engine.wording import plural

# `cloud start`: distinct statuses so scripts can tell "nothing to do" from "broken".
EXIT_ALREADY_RUNNING = 3
EXIT_FAILED_AT_START = 4


def register(subparsers: Any) -> None:
    """Add the `cloud` subcommand."""
    parser = add_command(
        subparsers,
        "cloud",
        run=run,
        json=True,
        help="start, stop or inspect the local cloud",
        description="The embedded local cloud runs deployed endpoints on this machine. It "
        "starts on demand; `stop` stops it and its workers.",
        epilog=f"exit status of `start`: 0 started, {EXIT_ALREADY_RUNNING} already running, "
        f"{EXIT_FAILED_AT_START} failed at start (the reason is printed). Other actions: 0 "
        "done, 1 failed.",
    )
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument(
        "--keep-workers", action="store_true", help="stop: leave the workers running"
    )


async def _describe(home: Home) -> dict[str, Any]:
    info = read_state(home)
    if info is None:
        holder = lock_holder(home)
        if holder is None:
            return {"running": False, "home": str(home.root)}
        # Running, but not reachable through its state file: say which file and why.
        return {
            "running": True,
            "home": str(home.root),
            "pid": holder.pid,
            "error": f"the local cloud (pid {holder.pid}) is running but {state_problem(home)};"
            " `flash-tui cloud stop` stops it and its workers",
        }
    out: dict[str, Any] = {
        "running": True,
        "home": str(home.root),
        "pid": info.pid,
        "url": info.url,
        "started_at": info.started_at,
        "uptime_s": round(time.time() - info.started_at, 1),
    }
    try:
        async with CloudClient(info, timeout=5.0) as client:
            apps = await client.apps()
            out["apps"] = [{"name": a.name, "endpoints": a.endpoints} for a in apps]
            health = await client.health()
            out["workers"] = health.workers
            # What the workers applied, each in its own word: not the service's environment.
            report = await client.worker_isolation()
            out["isolation"] = describe_isolation(report)
            out["worker_isolation"] = [w.model_dump() for w in report.workers]
    except CloudError as exc:
        out["error"] = str(exc)
    return out


def _start(home: Home, as_json: bool, console: Console) -> int:
    """`cloud start`: 0 started, 3 already running, 4 failed at start."""
    already = read_state(home) is not None
    try:
        info = ensure_cloud(home)
    except CloudStateLost as exc:
        _report(as_json, {"ok": False, "already_running": True, "pid": exc.pid}, str(exc))
        return EXIT_ALREADY_RUNNING
    except CloudError as exc:
        _report(as_json, {"ok": False, "already_running": False}, str(exc))
        return EXIT_FAILED_AT_START
    data = {"ok": True, "already_running": already, "pid": info.pid, "url": info.url}
    if as_json:
        json_out(data)
    else:
        verb = "already running" if already else "started"
        console.print(f"local cloud {verb}: pid {info.pid}, {info.url}")
    return EXIT_ALREADY_RUNNING if already else 0


def _report(as_json: bool, data: dict[str, Any], error: str) -> None:
    if as_json:
        json_out({**data, "error": error})
    else:
        err_console().print(f"[bold red]error[/]: {escape(error)}")


def run(args: argparse.Namespace) -> int:
    """Start, stop or describe the service."""
    console = Console(highlight=False)
    home = Home()
    try:
        if args.action == "start":
            return _start(home, args.json, console)
        if args.action == "stop":
            result = stop_cloud(home, stop_workers=not args.keep_workers)
            if args.json:
                json_out({"ok": True, **result.to_dict()})
            elif result.was_running:
                extra = " (forced)" if result.forced else ""
                if result.problem:
                    err_console().print(
                        f"[yellow]warning[/]: the local cloud (pid {result.pid}) was running "
                        f"but {escape(result.problem)}"
                    )
                console.print(f"local cloud stopped{extra}")
            else:
                console.print("local cloud was not running")
            return 0
        data = asyncio.run(_describe(home))
        if args.json:
            json_out(data)
        elif not data["running"]:
            console.print(f"local cloud: not running (home {escape(data['home'])})")
        elif "url" not in data:
            err_console().print(f"[bold red]error[/]: {escape(data['error'])}")
        else:
            console.print(
                f"local cloud: running, pid {data['pid']}, {data['url']}, "
                f"up {data['uptime_s']:.0f} s, home {escape(data['home'])}"
            )
            if "isolation" in data:
                console.print(f"  worker isolation: {escape(data['isolation'])}")
            for app in data.get("apps", []):
                console.print(f"  {escape(app['name'])}: {plural(app['endpoints'], 'endpoint')}")
        return 1 if "error" in data else 0
    except CloudError as exc:
        if args.json:
            json_out({"ok": False, "error": str(exc)})
        else:
            err_console().print(f"[bold red]error[/]: {escape(str(exc))}")
        return 1
