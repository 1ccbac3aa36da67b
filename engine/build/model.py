"""What a build is made of: where it lives in a project, its steps, its progress events, its
result and its error. Shared by the build's steps (`project`, `files`, `deps`) and `current`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.diagnostics import Diagnostic

__all__ = [
    "ARCHIVE_NAME",
    "BUILD_DIR",
    "DEPS_DIR",
    "FLASH_DIR",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "STEPS",
    "BuildError",
    "BuildProgress",
    "BuildResult",
]

FLASH_DIR = ".flash"
BUILD_DIR = ".flash/.build"
DEPS_DIR = ".flash/.deps"
ARCHIVE_NAME = "archive.tar.gz"
MANIFEST_NAME = "flash_manifest.json"
LOCK_NAME = ".build.lock"

STEPS: tuple[str, ...] = ("scan", "deps", "copy", "manifest", "handlers", "check", "archive")


@dataclass(frozen=True)
class BuildProgress:
    """One progress event: `step` is one of `STEPS`; `done` of `total` units finished."""

    step: str
    done: int
    total: int
    message: str = ""


@dataclass
class BuildResult:
    """What a successful build produced."""

    project_dir: Path
    build_dir: Path
    archive: Path
    manifest: dict[str, Any]
    build_id: str
    handlers: list[str]
    files_copied: int
    files_unchanged: int
    files_removed: int
    archive_bytes: int
    duration: float
    warnings: list[Diagnostic] = field(default_factory=list)
    # The handlers this build imported to check them (the others' recorded inputs were unchanged)
    handlers_checked: list[str] = field(default_factory=list)

    @property
    def resources(self) -> list[str]:
        """Resource names of the manifest, sorted."""
        return sorted(self.manifest.get("resources") or {})

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (the `flash-tui build --json` object)."""
        return {
            "project_dir": str(self.project_dir),
            "build_id": self.build_id,
            "archive": str(self.archive),
            "archive_bytes": self.archive_bytes,
            "build_dir": str(self.build_dir),
            "resources": self.resources,
            "handlers": self.handlers,
            "counts": {
                "copied": self.files_copied,
                "unchanged": self.files_unchanged,
                "removed": self.files_removed,
            },
            "duration_ms": round(self.duration * 1000, 1),
            "warnings": [d.to_json() for d in self.warnings],
        }


class BuildError(Exception):
    """The build was refused or failed; `diagnostics` says why (errors first)."""

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None, step: str = ""):
        super().__init__(message)
        self.diagnostics = list(diagnostics or [])
        self.step = step

    def __str__(self) -> str:
        lines = [super().__str__()]
        for d in self.diagnostics:
            if d.severity == "error":
                where = f"{d.file}:{d.line}" if d.line else str(d.file or "")
                lines.append(f"  {where}: {d.message}" if where else f"  {d.message}")
        return "\n".join(lines)
