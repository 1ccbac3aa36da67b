"""Argument types the subcommands share: bad values end in argparse's usage message (exit 2)."""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_seconds"]


def positive_seconds(text: str) -> float:
    """argparse `type=` for a duration: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value
