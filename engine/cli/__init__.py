"""Headless command line: one module per subcommand, calling the engine functions the TUI uses."""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import sys
from collections.abc import Sequence

# Each name is a module `engine.cli.<name>` exposing `register(subparsers)`.
COMMANDS: list[str] = [
    "scan",
    "build",
    "plan",
    "deploy",
    "undeploy",
    "restart",
    "status",
    "logs",
    "invoke",
    "cloud",
    "dev",
    "envs",
]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `flash-tui` argument parser with every registered subcommand (or just `only`)."""
    parser = argparse.ArgumentParser(
        prog="flash-tui",
        description="Build, deploy and operate Flash apps. Without a subcommand, opens the TUI.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS if only is None else [only]:
        importlib.import_module(f"engine.cli.{name}").register(subparsers)
    return parser


def subcommand_names() -> set[str]:
    """Names of the headless subcommands (hyphenated names included)."""
    return {name.replace("_", "-") for name in COMMANDS}


def main(argv: Sequence[str] | None = None, *, whole_process: bool | None = None) -> int:
    """Run one headless subcommand and return its exit code.

    `whole_process` (default: `argv is None`): the command is what this process runs, so the
    engine it imports may be set aside from the garbage collector for good; an in-process
    caller (a test, a host program) keeps its heap as it was."""
    if whole_process is None:
        whole_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    # httpx's __init__ imports httpx's own command line (click, pygments, rich.syntax: a tenth
    # of a warm deploy's start-up) whenever those are installed; no command here uses it. A
    # None entry makes that import fail, and httpx then defines the fallback it has for
    # installs without its `cli` extra. Already imported (an in-process caller), it stays.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    # Each command module imports what it runs on: registering only the one asked for keeps
    # a headless command from importing every other command's engine (most of its start-up).
    # Importing a command's engine creates objects that live as long as the command; the
    # collector's passes over them while they are being made find nothing to free and cost
    # a tenth of a warm deploy. Off while importing; then, in a process of its own, they are
    # set aside for good.
    collecting = gc.isenabled()
    gc.disable()
    try:
        parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    finally:
        if whole_process:
            gc.freeze()
        if collecting:
            gc.enable()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # The commands report what they expect; this is the last resort, so that nothing a user
    # meets is a traceback.
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except OSError as exc:
        return _fail(args, f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except Exception as exc:
        if os.environ.get("FLASH_TUI_DEBUG"):
            raise
        return _fail(
            args,
            f"internal error: {type(exc).__name__}: {exc} "
            "(run with FLASH_TUI_DEBUG=1 for the traceback)",
        )


def _fail(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps({"ok": False, "error": message}) + "\n")
    else:
        sys.stderr.write(f"error: {message}\n")
    return 1
