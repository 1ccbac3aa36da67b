"""The app's single doorway to the engine: every engine call the TUI makes goes through here.

Each method is a thin call into `engine.operations.Engine` (or `engine.build`, `engine.scan`);
results are the engine's own values (the widgets format them via `flash_tui.present`). Failures
become `BackendError` with the engine's message, which is written for a person.

The engine session and the watcher share one long-lived incremental `engine.scan.Scanner`, so
status, plan and deploy after an edit cost one file parse, not a full project scan. Status
refreshes take the manifest the app already holds (never a rescan) and the health monitor's
latest samples (never a second round of probes).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from engine.app_environments import DEFAULT_ENVIRONMENT, DIRECT_ENVIRONMENT, AppEnvironment
from engine.callgraph import CallGraph
from engine.dev.loop import Reload, WatchDeploy
from engine.diagnostics import Diagnostic
from engine.health import HealthMonitor, HealthSample
from engine.invoke import CallSpec, InvokeResult, JSONText
from engine.logs import LogLine
from engine.operations import DeployReport, Engine, OpError, OpEvent, app_name
from engine.plan import Plan
from engine.provider import DeploymentEvent, EndpointResult
from engine.scan import Scanner
from engine.status import EndpointStatus

if TYPE_CHECKING:
    from engine.build import BuildProgress, BuildResult
    from engine.localcloud.discovery import CloudStopped

T = TypeVar("T")
# A decoded JSON object: the manifest (upstream's JSON format). Its values are read where they
# are shown, by key.
JSONObject = dict[str, object]


class BackendError(Exception):
    """An engine operation could not be done; the message says why."""


@dataclass
class ScanOutcome:
    """Manifest dict, diagnostics and call graph of one (re)scan."""

    manifest: JSONObject
    diagnostics: list[Diagnostic] = field(default_factory=list)
    elapsed_ms: float = 0.0
    calls: CallGraph = field(default_factory=CallGraph)


Confirm = Callable[[Plan], Awaitable[bool]]


def request_body(text: str) -> JSONText:
    """The route tester's editor text as the body to send, unchanged (`engine.invoke.JSONText`);
    BackendError saying why when a server would not read it as JSON."""
    body = JSONText(text)
    try:
        body.value  # noqa: B018 - parsed only to refuse what is not JSON before sending
    except ValueError as exc:
        raise BackendError(str(exc)) from exc
    return body


class Backend:
    """Engine access for one project and one target."""

    def __init__(
        self,
        project: Path,
        target: str = "local",
        env: str | None = None,
        *,
        mothership: bool = False,
    ) -> None:
        self.project = Path(project).expanduser().resolve()
        self.target = target
        self.env = env  # the target's environment (RunPod's `--env`); None: its default
        # Deploy-all through the environment's mothership (engine.mothership), not directly.
        self.mothership = mothership
        self._scanner: Scanner | None = None
        self._scanner_lock = threading.Lock()
        self._engine: Engine | None = None

    @property
    def project_name(self) -> str:
        """The project's name (its directory name, as the engine names the app)."""
        return self.project.name

    @property
    def app(self) -> str:
        """The app key the engine gives the project (readable name + path hash)."""
        return app_name(self.project)

    @property
    def environment(self) -> str | None:
        """The environment the engine works on: `env` on RunPod, and on the local cloud in
        mothership mode (default `production`); None for direct local deploys."""
        if self.target == "runpod":
            return self.env
        return (self.env or DEFAULT_ENVIRONMENT) if self.mothership else None

    @property
    def environment_name(self) -> str:
        """The environment as the picker names it: `env`, else the default `production`; on the
        local cloud direct mode is an environment of its own, `local`."""
        if self.target != "runpod" and not self.mothership:
            return DIRECT_ENVIRONMENT
        return self.env or DEFAULT_ENVIRONMENT

    @property
    def environment_shown(self) -> str | None:
        """The environment the header names where it matters (RunPod, a mothership), else None."""
        return self.environment_name if self.target == "runpod" or self.mothership else None

    @property
    def engine(self) -> Engine:
        """The engine session (created on first use; raises BackendError when impossible)."""
        if self._engine is None:
            try:
                env = self.environment
                self._engine = Engine(
                    self.project, target=self.target, env=env, scanner=self.scanner
                )
            except OpError as exc:
                raise BackendError(str(exc)) from exc
            except Exception as exc:  # e.g. an unknown target: say which
                raise BackendError(f"{type(exc).__name__}: {exc}") from exc
        return self._engine

    # -- scanning -------------------------------------------------------------------------

    @property
    def scanner(self) -> Scanner:
        """The project's incremental scanner (raises BackendError when it cannot be read)."""
        with self._scanner_lock:  # the UI thread and a scan thread may both ask first
            if self._scanner is None:
                if not self.project.is_dir():
                    raise BackendError(f"{self.project} is not a readable directory")
                self._scanner = Scanner(self.project)
            return self._scanner

    def scan(self, changed: Sequence[Path] | None = None) -> ScanOutcome:
        """Scan off the UI thread (incremental after the first call); thread-safe.

        `changed`: the watcher's batch, so the scanner stats only those paths, not the tree.
        """
        started = time.perf_counter()
        try:
            result = self.scanner.scan(changed_paths=changed or None)
        except OSError as exc:
            raise BackendError(f"cannot read {self.project}: {exc}") from exc
        elapsed = (time.perf_counter() - started) * 1000
        return ScanOutcome(dict(result.manifest), list(result.diagnostics), elapsed, result.calls)

    # -- build ----------------------------------------------------------------------------

    def build(
        self,
        on_progress: Callable[[BuildProgress], None],
        cancelled: threading.Event | None = None,
    ) -> BuildResult | None:
        """Build the project (engine.build); `on_progress` receives BuildProgress events.
        None when `cancelled` was set while it built (it stopped at its next step)."""
        from engine.build import BuildError, current_build
        from engine.build_step import BuildCancelled, stop_when

        if cancelled is not None:
            on_progress = stop_when(cancelled.is_set, on_progress)
        try:
            result = current_build(self.project, on_progress=on_progress).result
        except BuildCancelled:
            return None
        except BuildError as exc:
            raise BackendError(str(exc)) from exc
        assert result is not None  # without a manifest, current_build always builds
        return result

    # -- target ---------------------------------------------------------------------------

    async def _op(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except OpError as exc:
            raise BackendError(str(exc)) from exc

    async def connect(self) -> str:
        """Reach the target (starting the local cloud if needed); returns a short description."""
        return await self._op(self.engine.connect())

    def target_now(self) -> str | None:
        """The target as the last engine call reached it (a restarted local cloud has a new
        address); None before the first connection."""
        return self._engine.provider.describe() if self._engine is not None else None

    async def status(
        self,
        manifest: JSONObject,
        diagnostics: Sequence[Diagnostic] = (),
        health: Mapping[str, HealthSample] | None = None,
    ) -> list[EndpointStatus]:
        """EndpointStatus of every endpoint in `manifest` (the app's latest scan) or deployed.

        `health`: the health monitor's latest samples, which decide healthy/unhealthy; without
        them the running endpoints are probed once now.
        """
        return await self._op(
            self.engine.status(
                manifest=dict(manifest), diagnostics=diagnostics, health=health, probe=True
            )
        )

    async def deploy(
        self,
        names: Sequence[str] | None,
        confirm: Confirm,
        on_event: Callable[[OpEvent], None],
        cancel: asyncio.Event | None = None,
    ) -> DeployReport:
        """Build if stale, plan, `confirm(plan)`, deploy; returns the engine's DeployReport.
        In mothership mode, deploying everything deploys the mothership, which provisions it.
        `cancel`, once set, stops it in a consistent state (see `Engine.deploy`)."""
        mothership = self.mothership and not names
        return await self._op(
            self.engine.deploy(
                names, confirm=confirm, on_event=on_event, mothership=mothership, cancel=cancel
            )
        )

    def watch_deploy(self, on_reload: Callable[[Reload], Awaitable[None]]) -> WatchDeploy:
        """The watch-deploy loop of this project (`run(stop)` deploys on every save)."""
        return WatchDeploy(self.engine, on_reload)

    async def restart(self, name: str, on_event: Callable[[OpEvent], None]) -> EndpointResult:
        """Stop and start one deployed endpoint's worker; the provider's result."""
        return await self._op(self.engine.restart(name, on_event=on_event))

    async def undeploy(
        self, names: Sequence[str] | None, confirm: Confirm, on_event: Callable[[OpEvent], None]
    ) -> DeployReport:
        """Undeploy `names` (all when None) after `confirm(plan)`; returns the DeployReport."""
        return await self._op(self.engine.undeploy(names, confirm=confirm, on_event=on_event))

    async def environments(self) -> list[AppEnvironment]:
        """The app's environments on the target, each with its mothership (if any)."""
        return await self._op(self.engine.environments())

    async def events(self, since: int = 0) -> list[DeploymentEvent]:
        """The app's deployment event log after event id `since` (deployed, crashed, ...)."""
        return await self._op(self.engine.events(since))

    async def probe(self, every: float) -> list[HealthSample]:
        """Probe every running endpoint now; HealthSamples fresh for `every` s (the interval
        their next probe comes at)."""
        return await self._op(self.engine.probe(every))

    def health_monitor(self, interval: float) -> HealthMonitor:
        """An engine HealthMonitor over the running endpoints of this project."""
        return HealthMonitor(self.engine.health_targets, interval=interval)

    async def logs(self, name: str, lines: int = 200) -> list[LogLine]:
        """The last lines of one endpoint, deployed or not (what it wrote before it stopped)."""
        return await self._op(self.engine.logs([name], lines, probes=True))

    async def follow_logs(self, lines: int = 20) -> AsyncIterator[LogLine]:
        """LogLines of every deployed endpoint, the last `lines` first, then as they come."""
        try:
            # Probe lines too: the logs screen can show them (the log views hide them by default,
            # so the `lines` of history are counted without them).
            async for line in self.engine.follow(None, lines, probes=True, count_probes=False):
                yield line
        except OpError as exc:
            raise BackendError(str(exc)) from exc

    async def invoke(
        self, call: CallSpec, body: JSONText | None, headers: Mapping[str, str] | None = None
    ) -> InvokeResult:
        """Call a route or function of a deployed endpoint; the engine's InvokeResult."""
        return await self._op(self.engine.invoke(call, body, headers=headers))

    async def curl(
        self,
        call: CallSpec,
        body: JSONText | None,
        reveal: bool,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """The same request as a curl command (key as `$FLASH_ENDPOINT_KEY` unless `reveal`)."""
        from engine.invoke import curl_command
        from engine.provider import ProviderError

        try:
            endpoint = await self.engine.provider.target(self.engine.app, call.endpoint)
        except ProviderError as exc:
            raise BackendError(f"{call.endpoint} is not deployed: {exc}") from exc
        return curl_command(endpoint, call, body, reveal=reveal, headers=headers)

    async def close(self) -> None:
        """Release connections (the local cloud keeps running, as it should)."""
        if self._engine is not None:
            await self._engine.close()

    async def switch(self, target: str) -> None:
        """Work on `target` from now on: the session on the old one is closed (what runs
        there keeps running); the scanner, which knows nothing of targets, is kept."""
        engine, self._engine = self._engine, None
        self.target = target
        if engine is not None:
            await engine.close()

    def choose_environment(self, env: str | None, mothership: bool) -> bool:
        """Work on environment `env` (None: the default) in deploy mode `mothership` from now
        on; True when the engine's environment changed: the session must then be replaced
        (`switch` to the same target), which touches nothing deployed."""
        before = self.environment
        self.env, self.mothership = env, mothership
        if self.target == "runpod":
            # Without an environment RunPod's engine works on the default one: the same session.
            return (self.environment or DEFAULT_ENVIRONMENT) != (before or DEFAULT_ENVIRONMENT)
        # On the local cloud direct mode (None) and each environment are apart.
        return self.environment != before

    @staticmethod
    def stop_cloud() -> CloudStopped:
        """Stop the local cloud of the current FLASH_TUI_HOME and its workers."""
        from engine.localcloud.discovery import stop_cloud

        return stop_cloud()
