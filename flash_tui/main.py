"""The `flash-tui` console entry point: a headless subcommand, or the TUI."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch to the headless CLI for a known subcommand, otherwise open the TUI."""
    from engine import cli

    args = list(sys.argv[1:] if argv is None else argv)
    if args and (args[0] in cli.subcommand_names() or args[0] in {"-h", "--help"}):
        raise SystemExit(cli.main(args))
    from flash_tui.app import run

    raise SystemExit(run(args))
