"""The build step of a deploy: reuse the current build or rebuild it in a thread, as progress.

A build can be cancelled at its next progress report (`stop_when`): it then ends the way a
failed step ends, so its archive is not renewed and a later deploy does not take the half-synced
build directory as current (freshness is judged against the archive).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.archive import BuildRef
from engine.operation_results import OpError

if TYPE_CHECKING:  # engine.build is imported on first build: `logs` and `status` never need it
    from engine.build import BuildProgress
    from engine.build.checks import ImportChecker

__all__ = ["BuildCancelled", "build_step", "stop_when"]


class BuildCancelled(Exception):
    """The build stopped at a step because its operation was cancelled."""


def stop_when(
    cancelled: Callable[[], bool], on_progress: Callable[[BuildProgress], None] | None = None
) -> Callable[[BuildProgress], None]:
    """An `on_progress` for a build that passes each report on, and raises `BuildCancelled`
    at the first report once `cancelled()` is true (called from the build's thread)."""

    def progress(p: BuildProgress) -> None:
        if cancelled():
            raise BuildCancelled("build cancelled")
        if on_progress is not None:
            on_progress(p)

    return progress


async def build_step(
    root: Path,
    manifest: dict[str, Any],
    emit: Callable[..., None],
    cancelled: Callable[[], bool] | None = None,
    checker: ImportChecker | None = None,
) -> tuple[BuildRef, bool]:
    """The current build of `root` (and whether it was built now), its progress as `emit`s;
    `BuildCancelled` when `cancelled()` turns true while it builds. `checker` is the engine's
    import checker, kept across builds."""
    from engine.build import BuildError, current_build

    loop = asyncio.get_running_loop()
    building = False

    def forward(p: BuildProgress) -> None:
        nonlocal building
        if not building:  # the first step of a build (a fresh one is reused silently)
            building = True
            emit("build", "building")
        emit(
            "build",
            f"{p.step}: {p.message}".rstrip(": "),
            done=p.done,
            total=p.total,
            build_step=p.step,
        )

    def progress(p: BuildProgress) -> None:
        loop.call_soon_threadsafe(forward, p)

    try:
        on_progress = stop_when(cancelled, progress) if cancelled is not None else progress
        current = await asyncio.to_thread(
            current_build, root, manifest, on_progress=on_progress, checker=checker
        )
    except BuildError as exc:
        raise OpError(f"build failed: {exc}") from exc
    ref = current.ref
    if current.built:
        emit("build", f"built {ref.build_id[:12]}", done=1, total=1)
    else:
        emit("build", f"build {ref.build_id[:12]} is up to date", done=1, total=1)
    return ref, current.built
