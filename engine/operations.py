"""Engine operations shared by the CLI and the TUI: plan, deploy, undeploy, status, logs, invoke.

`Engine(project, provider)` is one session on one project and one target. Every operation is
async, reports progress as typed `OpEvent`s through an optional callback, and returns plain
dataclasses with `to_dict()` for `--json` (`OpEvent`, `OpError` and `DeployReport` live in
`engine.operation_results` and are re-exported here). Confirmation is the caller's business:
deploy and undeploy accept an async `confirm(plan) -> bool` that runs after the plan is known
and before anything changes (the CLI prompts, the TUI shows a dialog). No Textual here.

Deploy: scan, build when the build is stale (sources newer than the archive, files added or
removed, or a different manifest), plan against the provider's endpoints (config hash, code
hash, running state), confirm, then one provider deploy of every create/update plus the deletes.

`Engine` is the single entry point the CLI and the TUI share, and each operation is a short
method over the same session state (project, provider, scanner, app key); the work itself lives
in the modules they call (scan, build_step, plan, drift, health, logs, invoke, the providers).
The two longest, deploy and status, live in `engine.deploy_operation` and
`engine.status_operation` and run on `Engine` as their `engine.session.Session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from engine import deploy_operation
from engine.build_step import build_step
from engine.callgraph import CallGraph
from engine.deploy_operation import ms_since, plan_summary, with_costs, with_environments
from engine.drift import Drift
from engine.health import DEFAULT_INTERVAL, HealthSample, probe_all
from engine.identity import app_slug, canonical_path, legacy_app_name
from engine.operation_results import (
    Confirm,
    DeployReport,
    Emit,
    OnEvent,
    OpError,
    OpEvent,
    emitter,
)
from engine.plan import Plan, PlanItem, local_resources, make_plan, undeploy_warnings
from engine.provider import (
    AppEnvironment,
    AppSummary,
    BuildRef,
    DeployedEndpoint,
    DeploymentEvent,
    EndpointResult,
    EndpointTarget,
    Provider,
    ProviderError,
    ProviderEvent,
    get_provider,
)
from engine.status import EndpointStatus
from engine.wording import plural

# engine.scan is imported on first scan (`logs` never needs it); engine.logs and
# engine.status_operation by the operations that use them (a deploy needs neither).
if TYPE_CHECKING:
    from engine.build.checks import ImportChecker
    from engine.envs import EnvCache, ProjectRequirements
    from engine.invoke import CallSpec, InvokeResult
    from engine.logs import LogLine
    from engine.scan import Scanner, ScanResult

__all__ = [
    "DeployReport",
    "Engine",
    "EndpointStatus",
    "OpError",
    "OpEvent",
    "app_name",
]

_T = TypeVar("_T")


def app_name(root: Path) -> str:
    """The app key of a project: readable name + hash of its canonical path (engine.identity)."""
    return app_slug(canonical_path(root))


class Engine:
    """One project on one target. Use as `async with Engine(path) as engine`."""

    def __init__(
        self,
        project: str | os.PathLike[str],
        provider: Provider | None = None,
        *,
        target: str = "local",
        env: str | None = None,
        scanner: Scanner | None = None,
        env_cache: EnvCache | None = None,
    ) -> None:
        self.root = canonical_path(project)
        if not self.root.is_dir():
            raise OpError(f"{self.root} is not a directory")
        self.app = app_name(self.root)
        if provider is None:
            try:
                provider = get_provider(target, env=env)
            except ProviderError as exc:
                raise OpError(str(exc)) from exc
        self.provider: Provider = provider
        # A long-lived session (the TUI) passes its incremental scanner: a rescan after an edit
        # then parses one file, not the project.
        self._scanner = scanner
        # Where endpoints' environments are cached (None: `engine.envs.env_cache_dir`).
        self._env_cache = env_cache
        # The builds' import checker: its check servers outlive one build (a dev session's
        # every save), so it is made on the first build and stopped by close().
        self._checker: ImportChecker | None = None

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the provider's connections and stop the import checker's servers (the local
        cloud keeps running)."""
        checker, self._checker = self._checker, None
        if checker is not None:
            await asyncio.to_thread(checker.close)
        await self.provider.close()

    def import_checker(self) -> ImportChecker:
        """The builds' import checker, made on first use and kept until close()."""
        if self._checker is None:
            from engine.build.checks import ImportChecker

            self._checker = ImportChecker()
        return self._checker

    async def connect(self) -> str:
        """Reach the target (starting the local cloud when needed)."""
        try:
            return await self.provider.connect()
        except ProviderError as exc:
            raise OpError(str(exc)) from exc

    async def while_connecting(self, work: Callable[[], Awaitable[_T]]) -> _T:
        """`work()` while the target is reached (or started) alongside."""
        # When `work` fails, its error is the one to report, not a connect still under way.
        connecting = asyncio.ensure_future(self.connect())
        try:
            result = await work()
        except BaseException:
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
            raise
        await connecting
        return result

    # -- project --------------------------------------------------------------------------

    @property
    def scanner(self) -> Scanner:
        """The project's incremental scanner (the one given, or one made on first use)."""
        if self._scanner is None:
            from engine.scan import Scanner
            from engine.scan.confighashes import config_hash_store

            self._scanner = Scanner(self.root, hash_store=config_hash_store(self.root))
        return self._scanner

    async def scan(self) -> ScanResult:
        """Scan the project (incrementally after the first time) in a thread."""
        return await asyncio.to_thread(self.scanner.scan)

    async def checked_scan(self, emit: Emit) -> ScanResult:
        """A scan without errors (else OpError listing them)."""
        emit("scan", "scanning")
        result = await self.scan()
        errors = [d for d in result.diagnostics if d.severity == "error"]
        if errors:
            lines = [f"  {d.file}:{d.line}: {d.message}" for d in errors[:10]]
            raise OpError(f"the project has {plural(len(errors), 'error')}:\n" + "\n".join(lines))
        resources = result.manifest.get("resources") or {}
        emit("scan", f"{plural(len(resources), 'endpoint')} in code", done=1, total=1)
        return result

    async def _calls(self) -> CallGraph:
        """The call graph of the code as it is now; empty when the project cannot be scanned
        (undeploy must not depend on the code being readable)."""
        try:
            return (await self.scan()).calls
        except OSError:  # the warnings are advice; an unreadable project must not stop an undeploy
            return CallGraph()

    async def deployed(self) -> dict[str, DeployedEndpoint]:
        """The app's deployed endpoints by name."""
        try:
            endpoints = await self.provider.list_endpoints(self.app)
        except ProviderError as exc:
            raise OpError(str(exc)) from exc
        return {e.name: e for e in endpoints}

    # -- plan -----------------------------------------------------------------------------

    async def plan(
        self,
        names: Sequence[str] | None = None,
        *,
        force: bool = False,
        on_event: OnEvent | None = None,
        manifest: dict[str, Any] | None = None,
        calls: CallGraph | None = None,
        requirements: ProjectRequirements | None = None,
    ) -> Plan:
        """What `deploy(names)` would do now (no build, no change).

        `manifest` and `calls` come from one scan (deploy passes its build's); without a
        manifest, the project is scanned for both. `requirements`: the project's, when the
        caller has read them (a deploy reads them once for its plan and its environments).
        """
        emit = emitter("plan", on_event)
        if manifest is None:
            scanned = await self.checked_scan(emit)
            manifest, calls = dict(scanned.manifest), scanned.calls
        local = local_resources(manifest, self.root)
        deployed = await self.deployed()
        self._check_names(names, local, deployed)
        plan = make_plan(
            local,
            {n: e.as_entry() for n, e in deployed.items()},
            names=names,
            force=force,
            calls=calls,
        )
        plan = await with_costs(self.provider, plan, local)
        plan = await with_environments(self, plan, manifest, deployed, requirements)
        emit("plan", plan_summary(plan))
        return plan

    def env_cache(self) -> EnvCache:
        """Where this session's endpoint environments are cached (given, or the default)."""
        from engine.envs import EnvCache, env_cache_dir

        if self._env_cache is None:
            self._env_cache = EnvCache(env_cache_dir(os.environ))
        return self._env_cache

    @staticmethod
    def _check_names(
        names: Sequence[str] | None, local: dict[str, Any], deployed: dict[str, Any]
    ) -> None:
        unknown = [n for n in names or () if n not in local and n not in deployed]
        if unknown:
            known = ", ".join(sorted(set(local) | set(deployed))) or "none"
            raise OpError(f"unknown endpoint(s): {', '.join(unknown)} (known: {known})")

    # -- deploy ---------------------------------------------------------------------------

    async def build(self, manifest: dict[str, Any], on_event: OnEvent | None = None) -> BuildRef:
        """The current build, rebuilding first when it is stale."""
        ref, _built = await build_step(
            self.root, manifest, emitter("deploy", on_event), self.import_checker()
        )
        return ref

    async def deploy(
        self,
        names: Sequence[str] | None = None,
        *,
        force: bool = False,
        confirm: Confirm | None = None,
        on_event: OnEvent | None = None,
        mothership: bool = False,
        cancel: asyncio.Event | None = None,
    ) -> DeployReport:
        """Build if stale, plan, confirm, deploy. `names`: only those endpoints (no deletes).

        `mothership`: deploy only the environment's mothership, which provisions the rest
        (see `engine.mothership`), and wait until it has.
        `cancel`, once set: before the deploy starts, nothing changes (`cancelled`; a build
        under way stops at its next step, see `engine.build_step`); during the deploy,
        endpoints not started are left as they were and the report says which (`interrupted`).
        The work is `engine.deploy_operation`'s.
        """
        if mothership:
            if names:
                raise OpError("--mothership deploys the whole build: name no endpoint")
            return await deploy_operation.deploy_mothership(
                self, force=force, confirm=confirm, on_event=on_event
            )
        return await deploy_operation.deploy(
            self, names, force=force, confirm=confirm, on_event=on_event, cancel=cancel
        )

    # -- restart --------------------------------------------------------------------------

    async def restart(self, name: str, *, on_event: OnEvent | None = None) -> EndpointResult:
        """Stop and start a deployed endpoint's worker (same build and config); OpError when
        it is not deployed or the target cannot restart it."""
        emit = emitter("restart", on_event)
        deployed = await self.deployed()
        if name not in deployed:
            known = ", ".join(sorted(deployed)) or "none"
            raise OpError(f"not deployed: {name} (deployed: {known})")

        def forward(event: ProviderEvent) -> None:
            if event.kind == "endpoint" and event.state:
                message = f"restart {event.state}"
                if event.message:
                    message += f": {event.message.splitlines()[0]}"
                emit("endpoint", message, name=event.name, action="restart", state=event.state)

        try:
            result = await self.provider.restart(self.app, name, on_event=forward)
        except ProviderError as exc:
            raise OpError(str(exc)) from exc
        emit("done", "restarted" if result.ok else f"restart failed: {result.error}", ok=result.ok)
        return result

    # -- undeploy -------------------------------------------------------------------------

    async def undeploy(
        self,
        names: Sequence[str] | None = None,
        *,
        confirm: Confirm | None = None,
        on_event: OnEvent | None = None,
    ) -> DeployReport:
        """Stop and remove deployed endpoints (all of the app when `names` is None)."""
        started = time.perf_counter()
        emit = emitter("undeploy", on_event)
        deployed = await self.deployed()
        if names is not None:
            unknown = [n for n in names if n not in deployed]
            if unknown:
                known = ", ".join(sorted(deployed)) or "none"
                raise OpError(f"not deployed: {', '.join(unknown)} (deployed: {known})")
        targets = sorted(deployed) if names is None else list(dict.fromkeys(names))
        plan = Plan(
            tuple(
                PlanItem(
                    n,
                    "delete",
                    deployed[n].resource_type,
                    Drift(n, "orphaned", deployed[n].resource_type),
                    ("undeploy",),
                )
                for n in targets
            ),
            undeploy_warnings(await self._calls(), targets, deployed),
        )
        report = DeployReport(plan)
        if not targets:
            emit("done", "nothing is deployed")
            return report
        if confirm is not None and not await confirm(plan):
            report.cancelled = True
            emit("done", "cancelled; nothing was changed")
            return report
        done = 0

        def forward(event: ProviderEvent) -> None:
            nonlocal done
            if event.state == "removed":
                done += 1
            emit(
                "endpoint",
                f"{event.action} {event.state}",
                name=event.name,
                done=done,
                total=len(targets),
            )

        try:
            report.outcome = await self.provider.delete(
                self.app, None if names is None else targets, on_event=forward
            )
        except ProviderError as exc:
            raise OpError(str(exc)) from exc
        report.elapsed_ms = ms_since(started)
        emit("done", "undeployed", ok=report.outcome.ok)
        return report

    # -- status ---------------------------------------------------------------------------

    async def status(
        self,
        *,
        probe: bool = True,
        scan: bool = True,
        manifest: dict[str, Any] | None = None,
        diagnostics: Sequence[Any] = (),
        health: Mapping[str, HealthSample] | None = None,
    ) -> list[EndpointStatus]:
        """Every endpoint in code or deployed: status, drift and (with `probe`) live health.

        `manifest` (and its scan's `diagnostics`): use these (e.g. the TUI's latest scan)
        instead of scanning; `scan=False` without a manifest reports deployed endpoints only
        (drift `orphaned`). `health`: the latest samples of a running `HealthMonitor`, used
        instead of probing (one source of probes); a sample of another URL than the endpoint's
        is another worker's and is left out.
        The work is `engine.status_operation`'s.
        """
        from engine import status_operation

        return await status_operation.endpoint_statuses(
            self,
            probe=probe,
            scan=scan,
            manifest=manifest,
            diagnostics=diagnostics,
            health=health,
        )

    async def kept_apps(self) -> list[AppSummary]:
        """Apps of older versions keyed by this project's folder name and kept as they were.

        The store migration re-keys an old app only when it can prove which project it came
        from; the others keep running under the old key, which no project computes any more.
        They may hold this project's endpoints, so `status` points them out.
        """
        legacy = legacy_app_name(self.root)
        try:
            apps = await self.provider.apps()
        except ProviderError as exc:
            raise OpError(str(exc)) from exc
        return [a for a in apps if a.name == legacy and a.endpoints]

    async def isolation(self) -> str | None:
        """What keeps the target's workers from other apps' secrets (None: the target's own)."""
        try:
            return await self.provider.isolation()
        except ProviderError as exc:
            raise OpError(str(exc)) from exc

    async def probe(self, every: float = DEFAULT_INTERVAL) -> list[HealthSample]:
        """Probe every running deployed endpoint now (the samples fresh for `every` s)."""
        return await probe_all(await self.health_targets(), every=every)

    async def health_targets(self) -> list[EndpointTarget]:
        """Targets for a `HealthMonitor` (the running deployed endpoints)."""
        from engine import status_operation

        return await status_operation.health_targets(self, await self.deployed())

    # -- logs -----------------------------------------------------------------------------

    async def _log_names(
        self, names: Sequence[str] | None
    ) -> tuple[list[str], dict[str, bool], list[str]]:
        """The endpoints to read, LB or not, and those of them not deployed (whose logs are
        what they wrote before they stopped, kept until their next deploy)."""
        deployed = await self.deployed()
        kinds = {n: e.is_load_balanced for n, e in deployed.items()}
        if names is None:
            return sorted(deployed), kinds, []
        unknown = [n for n in names if n not in deployed]
        return list(names), kinds, unknown

    async def _no_logs(self, unknown: Sequence[str]) -> OpError:
        known = ", ".join(sorted(await self.deployed())) or "none"
        return OpError(f"not deployed: {', '.join(unknown)} (deployed: {known})")

    async def not_deployed(self, names: Sequence[str]) -> list[str]:
        """Those of `names` not deployed now (their logs, if any, are post-mortem)."""
        deployed = await self.deployed()
        return [n for n in names if n not in deployed]

    async def logs(
        self, names: Sequence[str] | None = None, lines: int = 200, *, probes: bool = False
    ) -> list[LogLine]:
        """The last log lines of the given (default: all deployed) endpoints.

        Health-probe request lines are hidden unless `probes`."""
        from engine.logs import AppLogs

        selected, kinds, unknown = await self._log_names(names)
        try:
            found = await AppLogs(self.provider, self.app, kinds).read(
                selected, lines, probes=probes
            )
            # A name that is not deployed is fine while its last lines are kept.
            if unknown and not await self._kept(unknown):
                raise await self._no_logs(unknown)
            return found
        except ProviderError as exc:
            if unknown:
                raise await self._no_logs(unknown) from exc
            raise OpError(str(exc)) from exc

    async def _kept(self, names: Sequence[str]) -> bool:
        """Whether every one of `names` left log lines (hidden probes count)."""
        from engine.logs import AppLogs

        for name in names:
            try:
                kept = await AppLogs(self.provider, self.app).read([name], 1, probes=True)
            except ProviderError:
                return False
            if not kept:
                return False
        return True

    async def follow(
        self,
        names: Sequence[str] | None = None,
        lines: int = 20,
        *,
        probes: bool = False,
        count_probes: bool | None = None,
    ) -> AsyncIterator[LogLine]:
        """Follow the logs of the given (default: all deployed) endpoints (see
        `engine.logs.AppLogs.follow`)."""
        from engine.logs import AppLogs

        selected, kinds, unknown = await self._log_names(names)
        if not selected:
            raise OpError(f"nothing of {self.app} is deployed: no logs to follow")
        if unknown and not await self._kept(unknown):
            raise await self._no_logs(unknown)
        logs = AppLogs(self.provider, self.app, kinds)
        async for line in logs.follow(selected, lines, probes=probes, count_probes=count_probes):
            yield line

    async def environments(self) -> list[AppEnvironment]:
        """The app's environments on this target, each with its mothership (if any)."""
        try:
            return await self.provider.environments(self.app)
        except ProviderError as exc:
            raise OpError(str(exc)) from exc

    async def events(self, since: int = 0) -> list[DeploymentEvent]:
        """The app's deployment event log."""
        try:
            return await self.provider.events(self.app, since)
        except ProviderError as exc:
            raise OpError(str(exc)) from exc

    # -- invoke ---------------------------------------------------------------------------

    async def resolve(self, target: str, manifest: dict[str, Any] | None = None) -> CallSpec:
        """Resolve `NAME|ROUTE` against the project's manifest."""
        from engine.invoke import InvokeError, resolve_call

        if manifest is None:
            manifest = (await self.scan()).manifest
        try:
            return resolve_call(manifest, target)
        except InvokeError as exc:
            raise OpError(str(exc)) from exc

    async def invoke(
        self,
        target: str | CallSpec,
        data: Any = None,
        *,
        timeout: float = 120.0,
        headers: Mapping[str, str] | None = None,
    ) -> InvokeResult:
        """Call an LB route or a QB function of a deployed endpoint (`headers`: extra ones)."""
        from engine.invoke import CallSpec, InvokeError, invoke

        call = target if isinstance(target, CallSpec) else await self.resolve(target)
        try:
            endpoint = await self.provider.target(self.app, call.endpoint)
        except ProviderError as exc:
            raise OpError(f"{call.endpoint} is not reachable: {exc}") from exc
        try:
            return await invoke(endpoint, call, data, timeout=timeout, headers=headers)
        except InvokeError as exc:
            raise OpError(str(exc)) from exc
