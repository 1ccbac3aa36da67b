"""The `flash-tui` console entry point: a headless subcommand, or the TUI."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

# Exit code for a bad command line, the same one argparse uses.
USAGE_ERROR = 2
TUI_USAGE = "flash-tui [PATH] [--target local|runpod] [--env NAME] [--mothership]"
USAGE = f"{TUI_USAGE}\n       flash-tui COMMAND [--json] ...\n       flash-tui --version"
TUI_HELP = """\
Without a COMMAND, opens the TUI on the project at PATH (default: the current directory):
  PATH                    the project directory
  --target local|runpod   where to deploy (default: local, the embedded local cloud)
  --env NAME              the app's environment on RunPod (default: production)
  --mothership            D deploys the environment's mothership, which provisions the rest
"""


def version() -> str:
    """The installed flash-tui version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("flash-tui")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _print_help() -> None:
    """The TUI's form and options, then every subcommand (one help for both)."""
    from engine import cli

    parser = cli.build_parser()
    parser.usage = USAGE
    print(parser.format_help().rstrip("\n"))
    print()
    print(TUI_HELP, end="")


def _usage_error(message: str) -> NoReturn:
    """Print `message` in argparse's style and exit with the usage error code."""
    print(f"usage: {TUI_USAGE}\n       flash-tui COMMAND ...", file=sys.stderr)
    print(f"flash-tui: error: {message}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def _tui_has_a_screen() -> bool:
    """Whether the TUI has somewhere to draw.

    A terminal on stdout, or `textual serve`, which pipes stdout to the browser but tells the
    app to use its web driver through TEXTUAL_DRIVER. Without either, the full-screen app has
    no one to talk to (and once spun at full CPU with no terminal).
    """
    return sys.stdout.isatty() or bool(os.environ.get("TEXTUAL_DRIVER"))


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch to the headless CLI for a known subcommand, otherwise open the TUI."""
    from engine import cli

    args = list(sys.argv[1:] if argv is None else argv)
    commands = sorted(cli.subcommand_names())
    if args and args[0] in commands:
        raise SystemExit(cli.main(args, whole_process=argv is None))
    if "--version" in args:
        print(f"flash-tui {version()}")
        raise SystemExit(0)
    if "-h" in args or "--help" in args:
        _print_help()
        raise SystemExit(0)

    # A first word that is neither a command nor a directory is most likely a mistyped
    # command (`flash-tui events`): say so instead of opening the TUI on a missing project.
    if args and not args[0].startswith("-") and not Path(args[0]).exists():
        choices = ", ".join(repr(name) for name in commands)
        _usage_error(
            f"{args[0]!r} is neither a command nor an existing project path (choose from {choices})"
        )
    if not _tui_has_a_screen():
        _usage_error(
            "the TUI needs a terminal (stdout is not one); use a subcommand such as "
            '`flash-tui status`, or serve it in a browser with `textual serve -c "flash-tui PATH"`'
        )

    from flash_tui.app import run

    raise SystemExit(run(args))
