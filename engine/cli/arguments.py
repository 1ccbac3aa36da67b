"""What the subcommands' arguments share: the `[PATH]` and `--json` options, and argument types
(bad values end in argparse's usage message, exit 2)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

__all__ = ["add_command", "positive_seconds"]

_JSON_HELP = "print one JSON object"


def add_command(
    subparsers: Any,
    name: str,
    *,
    run: Callable[[argparse.Namespace], int],
    path: bool = False,
    json: bool | str = False,
    **parser_options: Any,
) -> argparse.ArgumentParser:
    """Add the subcommand `name` running `run`; with `path` its `[PATH]` project directory, with
    `json` its `--json` flag (`json` a string: the flag's own help). Returns its parser."""
    parser = subparsers.add_parser(name, **parser_options)
    if path:
        parser.add_argument("path", nargs="?", default=".", help="project directory (default: .)")
    if json:
        flag_help = _JSON_HELP if json is True else json
        parser.add_argument("--json", action="store_true", help=flag_help)
    parser.set_defaults(func=run)
    return parser


def positive_seconds(text: str) -> float:
    """argparse `type=` for a duration: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value
