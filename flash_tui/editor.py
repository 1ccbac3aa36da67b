"""`e`: the selected function, endpoint or diagnostic opened in the person's `$EDITOR` at its
line. Terminal editors get the terminal (the app is suspended until they exit)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.app import App, SuspendNotSupported

from flash_tui.widgets.dashboard.manifest_tree import TreeItem

# Editors that take `+LINE FILE`; those that take `FILE:LINE` (after `-g` for VS Code's family).
_PLUS_LINE = frozenset({"vi", "vim", "nvim", "view", "nano", "emacs", "emacsclient", "micro"})
_GOTO = frozenset({"code", "code-insiders", "codium", "cursor"})
_COLON_LINE = frozenset({"subl", "hx", "helix", "zed"})
NO_EDITOR = "$EDITOR is not set: export EDITOR=vim (or nano, code, ...) to open files with e"


class EditorError(Exception):
    """Why the editor cannot be started (one line, for a notification)."""


@dataclass(frozen=True)
class Location:
    """A file of the project and a line in it."""

    path: Path
    line: int | None


def locate(
    item: TreeItem | str | None, manifest: Mapping[str, Any], project: Path
) -> Location | None:
    """Where the selection is written: a function's or endpoint's definition, a diagnostic's
    line; None when nothing with a place in the code is selected."""
    file: object = None
    line: object = None
    if isinstance(item, TreeItem):
        if item.diagnostic is not None:
            file, line = item.diagnostic.file, item.diagnostic.line
        elif item.kind in {"function", "endpoint"}:
            file, line = item.payload.get("file"), item.payload.get("line")
    elif isinstance(item, str):
        resource = (manifest.get("resources") or {}).get(item) or {}
        file, line = resource.get("file"), resource.get("line")
    if not file:
        return None
    return Location(project / str(file), int(line) if isinstance(line, int) and line > 0 else None)


def editor_command(editor: str | None, where: Location) -> list[str]:
    """The command line that opens `where` in `editor` (the value of $EDITOR)."""
    if not editor or not editor.strip():
        raise EditorError(NO_EDITOR)
    try:
        argv = shlex.split(editor)
    except ValueError as exc:
        raise EditorError(f"$EDITOR={editor!r} cannot be read: {exc}") from None
    if shutil.which(argv[0]) is None:
        raise EditorError(f"$EDITOR names {argv[0]!r}, which is not an executable on PATH")
    path, line = str(where.path), where.line
    name = Path(argv[0]).name
    if line is None:
        return [*argv, path]
    if name in _PLUS_LINE:
        return [*argv, f"+{line}", path]
    if name in _GOTO:
        return [*argv, "-g", f"{path}:{line}"]
    if name in _COLON_LINE:
        return [*argv, f"{path}:{line}"]
    return [*argv, path]


def open_in_editor(app: App[Any], argv: list[str]) -> None:
    """Run the editor with the terminal handed over; where the app cannot give it up (served
    in a browser, headless) it runs without one, which suits window editors (`code -g`)."""
    try:
        with app.suspend():
            result = subprocess.run(argv, check=False)
    except SuspendNotSupported:
        app.run_worker(lambda: _run_detached(app, argv), thread=True, group="editor")
        return
    except OSError as exc:
        app.notify(f"cannot start {argv[0]}: {exc.strerror or exc}", severity="error")
        return
    _report(app, argv, result.returncode)


def _run_detached(app: App[Any], argv: list[str]) -> None:
    try:
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        app.call_from_thread(app.notify, f"cannot run {argv[0]}: {exc}", severity="error")
        return
    app.call_from_thread(_report, app, argv, result.returncode)


def _report(app: App[Any], argv: list[str], returncode: int) -> None:
    if returncode:
        app.notify(f"{Path(argv[0]).name} exited with status {returncode}", severity="warning")
