"""`flash-tui envs [--json]` and `flash-tui envs prune [--older-than DAYS] [--json]`: the shared
cache of endpoint environments (engine.envs), and removing the ones no deployed endpoint uses.

"Deployed" means: an endpoint of this flash-tui home's local cloud ($FLASH_TUI_HOME) whose worker
runs on that environment's interpreter. The cache is per user, so environments used only by
another home's endpoints count as unused here.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.cli.arguments import add_command
from engine.cli.plan import err_console, json_out
from engine.home import Home
from engine.wording import plural

if TYPE_CHECKING:
    from engine.envs.cache import CachedEnv

_DAY = 86400.0


def register(subparsers: Any) -> None:
    """Add the `envs` subcommand."""
    parser = add_command(
        subparsers,
        "envs",
        run=run,
        json=True,
        help="list or prune the cached endpoint environments",
        description="List the cached endpoint environments (key, size, what they hold, last "
        "used, the deployed endpoints on each), or `prune` the ones no deployed endpoint of "
        "this home's local cloud uses.",
    )
    parser.add_argument("action", nargs="?", choices=("list", "prune"), default="list")
    parser.add_argument(
        "--older-than",
        type=float,
        default=0.0,
        metavar="DAYS",
        help="prune: only environments last used more than DAYS days ago",
    )


def deployed_interpreters(home: Home) -> dict[str, list[str]]:
    """Interpreter -> the `app/endpoint`s of this home's local cloud that run on it."""
    if not home.db_path.is_file():
        return {}
    from engine.localcloud.store import Store

    store = Store(home.db_path)
    try:
        rows = store.list_endpoints()
    finally:
        store.close()
    out: dict[str, list[str]] = {}
    for row in rows:
        python = row.get("python")
        if python:
            out.setdefault(os.path.abspath(str(python)), []).append(f"{row['app']}/{row['name']}")
    return out


def _users(env: CachedEnv, deployed: dict[str, list[str]]) -> list[str]:
    return sorted(deployed.get(os.path.abspath(env.python), []))


def _holds(env: CachedEnv) -> str:
    return ", ".join(env.requirements) or "nothing"


def _ago(stamp: float, now: float) -> str:
    seconds = max(0.0, now - stamp)
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < _DAY:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / _DAY:.0f} days ago"


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def _as_dict(env: CachedEnv, users: list[str]) -> dict[str, Any]:
    return {
        "key": env.key,
        "path": str(env.path),
        "size_bytes": env.size_bytes,
        "requirements": list(env.requirements),
        "torch": env.torch,
        "built_at": env.built_at,
        "last_used": env.last_used,
        "used_by": users,
    }


def run(args: argparse.Namespace) -> int:
    """List the cache, or prune it."""
    # Imported here: every other subcommand's start-up would pay for them.
    from engine.envs.cache import EnvCache, env_cache_dir

    cache = EnvCache(env_cache_dir(os.environ))
    home = Home()
    deployed = deployed_interpreters(home)
    envs = cache.environments()
    now = time.time()
    if args.action == "prune":
        if args.older_than < 0:
            err_console().print(f"--older-than must be 0 or more days, not {args.older_than:g}")
            return 2
        cutoff = now - args.older_than * _DAY
        gone = [e for e in envs if not _users(e, deployed) and e.last_used <= cutoff]
        for env in gone:
            cache.remove(env.key)
        freed = sum(e.size_bytes for e in gone)
        if args.json:
            json_out(
                {
                    "ok": True,
                    "cache": str(cache.root),
                    "removed": [_as_dict(e, []) for e in gone],
                    "freed_bytes": freed,
                    "kept": len(envs) - len(gone),
                }
            )
        else:
            console = Console(highlight=False)
            for env in gone:
                console.print(f"removed {env.key} ({_mb(env.size_bytes)}): {escape(_holds(env))}")
            console.print(
                f"{plural(len(gone), 'environment')} removed ({_mb(freed)} freed), "
                f"{len(envs) - len(gone)} kept, in {escape(str(cache.root))}"
            )
        return 0
    if args.json:
        json_out(
            {
                "ok": True,
                "cache": str(cache.root),
                "environments": [_as_dict(e, _users(e, deployed)) for e in envs],
            }
        )
        return 0
    console = Console(highlight=False)
    if not envs:
        console.print(f"no environments in {escape(str(cache.root))}")
        return 0
    table = Table(title=f"Environments in {escape(str(cache.root))}")
    for column in ("key", "size", "holds", "last used", "deployed endpoints"):
        table.add_column(column)
    for env in envs:
        users = _users(env, deployed)
        table.add_row(
            env.key[:12],
            _mb(env.size_bytes),
            escape(_holds(env)),
            _ago(env.last_used, now),
            escape(", ".join(users)) if users else "[dim]none[/]",
        )
    console.print(table)
    total = sum(e.size_bytes for e in envs)
    console.print(f"{plural(len(envs), 'environment')}, {_mb(total)}")
    return 0
