"""The app's single doorway to the engine: every engine call the TUI makes goes through here.

Each method is a thin call into an engine module; results are handed back as the engine's own
values (the widgets format them via `flash_tui.present`). When an engine part is missing or the
target is unreachable the method raises `BackendError` with a reason a person can act on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class BackendError(Exception):
    """An engine operation could not be done; the message says why."""


@dataclass
class ScanOutcome:
    """Manifest dict and diagnostics of one (re)scan."""

    manifest: dict[str, Any]
    diagnostics: list[Any] = field(default_factory=list)
    elapsed_ms: float = 0.0


def _import(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(
            f"{module} is not available in this build of the engine ({exc})"
        ) from exc


class Backend:
    """Engine access for one project and one target."""

    def __init__(self, project: Path, target: str = "local") -> None:
        self.project = Path(project).expanduser().resolve()
        self.target = target
        self._scan_lock = threading.Lock()
        self._scanner: Any = None

    @property
    def project_name(self) -> str:
        """The project's name as the manifest and the cloud know it (its directory name)."""
        return self.project.name

    # -- scanning -------------------------------------------------------------------------

    def scan(self) -> ScanOutcome:
        """Scan (incrementally after the first call); thread-safe, runs off the UI thread."""
        if not self.project.is_dir():
            raise BackendError(f"{self.project} is not a readable directory")
        scan = _import("engine.scan")
        started = time.perf_counter()
        with self._scan_lock:
            if self._scanner is None and hasattr(scan, "Scanner"):
                self._scanner = scan.Scanner(self.project)
            result = (
                self._scanner.scan()
                if self._scanner is not None
                else scan.scan_project(self.project)
            )
        elapsed = (time.perf_counter() - started) * 1000
        return ScanOutcome(dict(result.manifest), list(result.diagnostics), elapsed)

    # -- build ----------------------------------------------------------------------------

    def build(self, on_progress: Callable[[Any], None]) -> Any:
        """Build the project; `on_progress` receives the engine's progress events."""
        build = _import("engine.build")
        try:
            return build.build_project(self.project, on_progress=on_progress)
        except build.BuildError as exc:
            raise BackendError(str(exc)) from exc

    # -- target ---------------------------------------------------------------------------

    async def connect(self) -> str:
        """Reach the target (starting the local cloud if needed); returns a short description."""
        raise BackendError("engine.ops is not available yet")

    async def status(self) -> list[Any]:
        """Status of every endpoint of the project (deployed or in code)."""
        raise BackendError("engine.ops is not available yet")

    async def plan(self, names: Sequence[str] | None = None) -> list[Any]:
        """The deploy plan for `names` (all when None)."""
        raise BackendError("engine.ops is not available yet")

    async def deploy(self, names: Sequence[str] | None, on_event: Callable[[Any], None]) -> Any:
        """Deploy `names` (all when None)."""
        raise BackendError("engine.ops is not available yet")

    async def undeploy(self, names: Sequence[str] | None, on_event: Callable[[Any], None]) -> Any:
        """Undeploy `names` (all when None)."""
        raise BackendError("engine.ops is not available yet")

    async def probe(self) -> list[Any]:
        """Probe every deployed endpoint's health now; one sample per endpoint."""
        raise BackendError("engine.health is not available yet")

    async def invoke(
        self, endpoint: str, function: str, method: str | None, path: str | None, body: Any
    ) -> Any:
        """Call an LB route (method+path) or a QB function of a deployed endpoint."""
        raise BackendError("engine.invoke is not available yet")

    def curl(
        self,
        endpoint: str,
        function: str,
        method: str | None,
        path: str | None,
        body: Any,
        reveal: bool,
    ) -> str:
        """The same request as a curl command line (key redacted unless `reveal`)."""
        raise BackendError("engine.invoke is not available yet")
