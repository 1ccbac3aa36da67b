"""Counts in messages: "1 error", "2 errors", never "1 error(s)"."""

from __future__ import annotations

__all__ = ["plural"]


def plural(count: int, word: str, words: str | None = None) -> str:
    """`1 error`, `2 errors`, `0 endpoints` (`words` for irregular plurals)."""
    return f"{count} {word if count == 1 else (words or word + 's')}"
