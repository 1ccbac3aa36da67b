"""What an operation needs of the session it runs in: one project on one target.

`engine.operations.Engine` is the session; the operations that live in their own modules
(`deploy_operation`, `status_operation`) take it as a `Session`, so they reach only what is
listed here and never import `Engine`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from engine.callgraph import CallGraph
from engine.operation_results import Emit
from engine.plan import Plan
from engine.provider import DeployedEndpoint, Provider

if TYPE_CHECKING:
    from engine.build.checks import ImportChecker
    from engine.envs import EnvCache
    from engine.scan import ScanResult

__all__ = ["Session"]

_T = TypeVar("_T")


class Session(Protocol):
    """One project (`root`, its app key `app`) on one target (`provider`)."""

    root: Path
    app: str
    provider: Provider

    async def scan(self) -> ScanResult:
        """The project scanned now (incrementally)."""
        ...

    async def checked_scan(self, emit: Emit) -> ScanResult:
        """A scan without errors (else OpError listing them)."""
        ...

    async def deployed(self) -> dict[str, DeployedEndpoint]:
        """The app's deployed endpoints by name."""
        ...

    def import_checker(self) -> ImportChecker:
        """The builds' import checker, kept across builds."""
        ...

    def env_cache(self) -> EnvCache:
        """Where endpoint environments are cached."""
        ...

    async def while_connecting(self, work: Callable[[], Awaitable[_T]]) -> _T:
        """`work()` while the target is reached (or started) alongside."""
        ...

    async def plan(
        self,
        names: Sequence[str] | None,
        *,
        force: bool,
        manifest: dict[str, Any] | None,
        calls: CallGraph | None,
    ) -> Plan:
        """What a deploy of `names` would do now with the code of `manifest` (no change)."""
        ...
