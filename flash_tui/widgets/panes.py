"""What the TUI's panes share: vim keys bound to each pane's own actions, and a border title."""

from __future__ import annotations

from typing import TypeVar

from textual.binding import Binding
from textual.widget import Widget

__all__ = ["titled", "vim_keys"]

_W = TypeVar("_W", bound=Widget)


def vim_keys(
    down: str, up: str, first: str, last: str, labels: tuple[str, str] = ("First", "Last")
) -> list[Binding]:
    """j/k/g/G (vim keys, as in k9s and lazydocker) bound to the pane's own actions for down,
    up, first and last, unlisted; `labels` name the first and the last."""
    return [
        Binding("j", down, "Down", show=False),
        Binding("k", up, "Up", show=False),
        Binding("g", first, labels[0], show=False),
        Binding("G", last, labels[1], show=False),
    ]


def titled(widget: _W, title: str) -> _W:
    """`widget` with `title` on its border (Textual's constructors do not take one)."""
    widget.border_title = title
    return widget
