"""Project file watcher: batches of changed paths, debounced, with the project's ignore rules.

Built on `watchfiles` (a Rust notify backend), so watching costs no Python work between changes.
Any front end can consume it: it is a plain async iterator and imports no UI toolkit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from watchfiles import awatch

# Files whose change alters what the scanner sees even though they are not Python sources.
_RULE_FILES = frozenset({".gitignore", ".flashignore"})

IgnoreFn = Callable[[Path], bool]


def default_ignore(root: Path) -> IgnoreFn:
    """The project's ignore predicate (absolute path -> True when the scanner skips it)."""
    from engine.project import ignore_predicate

    return ignore_predicate(root)


def _relevant(path: Path, ignored: IgnoreFn) -> bool:
    # Rule files are always reported: editing .gitignore changes which sources exist.
    if path.name in _RULE_FILES:
        return True
    if path.suffix != ".py":
        return False
    return not ignored(path)


async def watch_project(
    root: Path | str,
    *,
    debounce_ms: int = 100,
    step_ms: int = 20,
    stop_event: asyncio.Event | None = None,
    ignore: IgnoreFn | None = None,
    force_polling: bool | None = None,
) -> AsyncIterator[list[Path]]:
    """Yield sorted lists of changed source paths under `root` until `stop_event` is set.

    A batch is emitted once no further change arrived for `step_ms`, and at the latest
    `debounce_ms` after its first change, so a save shows up within ~100 ms while an editor's
    write-rename-chmod burst still arrives as one batch. Ignored paths never reach the caller.
    """
    root = Path(root).resolve()
    rules: list[IgnoreFn] = [ignore if ignore is not None else default_ignore(root)]

    def watch_filter(_change: object, raw: str) -> bool:
        return _relevant(Path(raw), rules[0])

    async for changes in awatch(
        root,
        watch_filter=watch_filter,
        debounce=debounce_ms,
        step=step_ms,
        stop_event=stop_event,
        force_polling=force_polling,
        # Wake periodically so a set stop_event is noticed promptly even when nothing changes.
        rust_timeout=500,
        yield_on_timeout=False,
    ):
        paths = sorted({Path(raw) for _change, raw in changes})
        if ignore is None and any(p.name in _RULE_FILES for p in paths):
            # The ignore rules themselves changed: later batches must use the new ones.
            rules[0] = default_ignore(root)
        if paths:
            yield paths
