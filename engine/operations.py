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

At about 900 lines the module is one class on purpose: `Engine` is the single entry point
the CLI and the TUI share, and each operation is a short method over the same session state
(project, provider, scanner, app key); the work itself lives in the modules they call (scan,
build_step, plan, drift, health, logs, invoke, the providers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from engine.build_step import BuildCancelled, build_step
from engine.callgraph import CallGraph
from engine.drift import Drift, compute_drift, is_unresolved
from engine.env_step import env_step, expected_interpreters
from engine.health import DEFAULT_INTERVAL, HealthSample, probe_all
from engine.identity import app_slug, canonical_path, legacy_app_name
from engine.logs import LogLine, follow_logs, read_logs
from engine.mothership import (
    ChildState,
    EnvironmentState,
    MothershipError,
    await_children,
    child_states,
    mothership_entry,
)
from engine.operation_results import DeployReport, OpError, OpEvent
from engine.plan import Plan, PlanItem, local_resources, make_plan, undeploy_warnings
from engine.provider import (
    AppSummary,
    BuildRef,
    DeployedEndpoint,
    DeploymentEvent,
    EndpointResult,
    EndpointSpec,
    EndpointTarget,
    Provider,
    ProviderError,
    ProviderEvent,
    get_provider,
)
from engine.status import RUNNING, EndpointStatus, Status, endpoint_status
from engine.wording import plural

if TYPE_CHECKING:  # engine.scan is imported on first scan: `logs` never needs it
    from engine.build.checks import ImportChecker
    from engine.envs import EnvCache
    from engine.invoke import CallSpec, InvokeResult
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
# The plan's reason for updating an endpoint whose environment is not the one it runs on.
_ENV_CHANGED = "its environment changed (requirements or dependencies)"

Confirm = Callable[[Plan], Awaitable[bool]]
OnEvent = Callable[[OpEvent], None]


def app_name(root: Path) -> str:
    """The app key of a project: readable name + hash of its canonical path (engine.identity)."""
    return app_slug(canonical_path(root))


def _parse_errors(diagnostics: Sequence[Any]) -> dict[str, int]:
    """Source files the scanner could not parse (or read), each with its first error line."""
    from engine.diagnostics import SYNTAX_ERROR, UNDECODABLE

    out: dict[str, int] = {}
    for d in diagnostics:
        if d.code in (SYNTAX_ERROR, UNDECODABLE) and d.file and d.file not in out:
            out[d.file] = int(d.line or 0)
    return out


def _built_files(root: Path) -> dict[str, str]:
    """The file that defined each endpoint in the project's last build (empty if none)."""
    from engine.build import BUILD_DIR, MANIFEST_NAME

    try:
        built = json.loads((root / BUILD_DIR / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    resources = built.get("resources") if isinstance(built, dict) else None
    return {
        str(name): str(entry["file"])
        for name, entry in (resources if isinstance(resources, dict) else {}).items()
        if isinstance(entry, dict) and isinstance(entry.get("file"), str)
    }


def _spec(name: str, entry: dict[str, Any]) -> EndpointSpec:
    config = {k: v for k, v in (entry.get("config") or {}).items() if not is_unresolved(v)}
    return EndpointSpec(
        name=name,
        resource_type=str(entry.get("resource_type") or ""),
        is_load_balanced=bool(entry.get("is_load_balanced")),
        config=config,
        config_hash=entry.get("config_hash"),
        code_hash=entry.get("code_hash"),
    )


def _generated_motherships(
    local: Mapping[str, Any], deployed: Mapping[str, DeployedEndpoint]
) -> dict[str, Any]:
    """A deployed generated mothership as the code makes it, for its drift: not in the code,
    yet not orphaned. Its code is the build it reconciles: compared by config only."""
    if not local:
        return {}
    out: dict[str, Any] = {}
    for name, endpoint in deployed.items():
        if endpoint.role != "mothership" or name in local:
            continue
        with contextlib.suppress(MothershipError):
            wanted, entry = mothership_entry({"resources": local}, endpoint.code_hash or "")
            if wanted == name:
                out[name] = entry
    return out


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

    def _import_checker(self) -> ImportChecker:
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

    async def _while_connecting(self, work: Callable[[], Awaitable[_T]]) -> _T:
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

            self._scanner = Scanner(self.root)
        return self._scanner

    async def scan(self) -> ScanResult:
        """Scan the project (incrementally after the first time) in a thread."""
        return await asyncio.to_thread(self.scanner.scan)

    async def _scanned(self, emit: Callable[..., None]) -> ScanResult:
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

    async def _deployed(self) -> dict[str, DeployedEndpoint]:
        try:
            endpoints = await self.provider.list_endpoints(self.app)
        except ProviderError as exc:
            raise OpError(str(exc)) from exc
        return {e.name: e for e in endpoints}

    def _emitter(self, op: str, on_event: OnEvent | None) -> Callable[..., None]:
        def emit(step: str, message: str = "", **kwargs: Any) -> None:
            if on_event is not None:
                on_event(OpEvent(op, step, message, **kwargs))

        return emit

    # -- plan -----------------------------------------------------------------------------

    async def plan(
        self,
        names: Sequence[str] | None = None,
        *,
        force: bool = False,
        on_event: OnEvent | None = None,
        manifest: dict[str, Any] | None = None,
        calls: CallGraph | None = None,
    ) -> Plan:
        """What `deploy(names)` would do now (no build, no change).

        `manifest` and `calls` come from one scan (deploy passes its build's); without a
        manifest, the project is scanned for both.
        """
        emit = self._emitter("plan", on_event)
        if manifest is None:
            scanned = await self._scanned(emit)
            manifest, calls = dict(scanned.manifest), scanned.calls
        local = local_resources(manifest, self.root)
        deployed = await self._deployed()
        self._check_names(names, local, deployed)
        plan = make_plan(
            local,
            {n: e.as_entry() for n, e in deployed.items()},
            names=names,
            force=force,
            calls=calls,
        )
        plan = await self._with_costs(plan, local)
        plan = await self._with_environments(plan, manifest, deployed)
        emit("plan", _plan_summary(plan))
        return plan

    async def _with_costs(self, plan: Plan, local: Mapping[str, Any]) -> Plan:
        """The plan with a cost note on endpoints that never scale to zero, when the target
        prices them (RunPod); the local cloud has none."""
        try:
            notes: Mapping[str, str] = await self.provider.costs(local)
        except ProviderError as exc:
            raise OpError(str(exc)) from exc
        return replace(
            plan,
            items=tuple(
                replace(i, reasons=(*i.reasons, notes[i.name]))
                if i.name in notes and i.action != "delete"
                else i
                for i in plan.items
            ),
        )

    def env_cache(self) -> EnvCache:
        """Where this session's endpoint environments are cached (given, or the default)."""
        from engine.envs import EnvCache, env_cache_dir

        if self._env_cache is None:
            self._env_cache = EnvCache(env_cache_dir(os.environ))
        return self._env_cache

    async def _with_environments(
        self, plan: Plan, manifest: Mapping[str, Any], deployed: Mapping[str, DeployedEndpoint]
    ) -> Plan:
        """The plan with an update of each running local endpoint whose environment changed
        (requirements, `dependencies`, the torch setting): its code and config alone don't say.
        """
        if self.provider.name != "local":
            return plan
        wanted = await asyncio.to_thread(
            expected_interpreters, self.root, manifest, self.env_cache()
        )
        items = []
        for item in plan.items:
            endpoint = deployed.get(item.name)
            if (
                item.action == "unchanged"
                and endpoint is not None
                and item.name in wanted
                and wanted[item.name] != endpoint.python
            ):
                item = replace(item, action="update", reasons=(*item.reasons, _ENV_CHANGED))
            items.append(item)
        return replace(plan, items=tuple(items))

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
            self.root, manifest, self._emitter("deploy", on_event), self._import_checker()
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
        """
        if mothership:
            if names:
                raise OpError("--mothership deploys the whole build: name no endpoint")
            return await self._deploy_mothership(force=force, confirm=confirm, on_event=on_event)
        started = time.perf_counter()
        cancel = cancel or asyncio.Event()
        emit = self._emitter("deploy", on_event)

        async def scan_and_build() -> tuple[ScanResult, BuildRef, bool]:
            scanned = await self._scanned(emit)
            build, built = await build_step(
                self.root,
                dict(scanned.manifest),
                emit,
                cancelled=cancel.is_set,
                checker=self._import_checker(),
            )
            return scanned, build, built

        # Reaching (or starting) the local cloud overlaps with the scan and the build check.
        try:
            scanned, build, built = await self._while_connecting(scan_and_build)
        except BuildCancelled:
            return self._cancelled(DeployReport(Plan(())), emit, started)
        if cancel.is_set():
            return self._cancelled(DeployReport(Plan(()), built=built), emit, started)
        plan = await self.plan(names, force=force, manifest=build.manifest, calls=scanned.calls)
        emit("plan", _plan_summary(plan))
        report = DeployReport(plan, built=built, build_id=build.build_id)
        if not plan.has_changes:
            emit("done", "nothing to do: everything is up to date")
            report.elapsed_ms = _ms(started)
            return report
        if confirm is not None:
            emit("confirm", "waiting for confirmation")
            if not await confirm(plan):
                return self._cancelled(report, emit, started)
        if cancel.is_set():
            return self._cancelled(report, emit, started)
        local = local_resources(build.manifest, self.root)
        specs = [
            _spec(i.name, local[i.name]) for i in plan.items if i.action in ("create", "update")
        ]
        if self.provider.name == "local" and specs:
            # RunPod's workers run upstream's images; local ones run on their own environment.
            prepared = await env_step(
                self.root,
                build.manifest,
                specs,
                emit,
                cache=self.env_cache(),
                build_dir=build.build_dir,
            )
            specs = list(prepared.specs)
            report.warnings = tuple(d.message for d in prepared.diagnostics)
        removes = plan.names("delete")
        total = len(specs) + len(removes)
        done = 0

        def forward(event: ProviderEvent) -> None:
            nonlocal done
            if event.kind == "build" and event.state == "ready":
                emit("upload", f"build {build.build_id[:12]} ready on the target")
                return
            if event.kind == "cancelling":
                emit("cancelling", "cancelling: no more endpoints start; those starting finish")
                return
            if event.kind != "endpoint":
                return
            if event.state in (Status.HEALTHY, "error", "removed", "cancelled"):
                done += 1
            message = " ".join(p for p in (event.action, event.state) if p)
            if event.message:
                message += f": {event.message.splitlines()[0]}"
            emit(
                "endpoint",
                message,
                name=event.name,
                done=done,
                total=total,
                action=event.action,
                state=event.state,
                elapsed_ms=event.elapsed_ms,
            )

        try:
            report.outcome = await self.provider.deploy(
                self.app,
                specs,
                build,
                remove=removes,
                force=force,
                project_path=self.root,
                on_event=forward,
                cancel=cancel,
            )
        except ProviderError as exc:
            raise OpError(str(exc)) from exc
        report.elapsed_ms = _ms(started)
        failed = report.outcome.failed()
        if report.interrupted:
            left = report.not_started()
            emit(
                "done",
                f"cancelled: {plural(len(left), 'endpoint')} not started",
                ok=report.outcome.ok,
            )
            return report
        emit(
            "done",
            "deployed" if not failed else f"{plural(len(failed), 'endpoint')} failed",
            ok=report.outcome.ok,
        )
        return report

    async def _deploy_mothership(
        self, *, force: bool, confirm: Confirm | None, on_event: OnEvent | None
    ) -> DeployReport:
        if not isinstance(self.provider, EnvironmentState):
            raise OpError(
                f"--mothership is not available on the {self.provider.name} target yet "
                "(the local cloud has it); deploy without it"
            )
        started, since = time.perf_counter(), time.time()
        emit = self._emitter("deploy", on_event)

        async def scan_and_build() -> tuple[BuildRef, bool]:
            scanned = await self._scanned(emit)
            return await build_step(
                self.root, dict(scanned.manifest), emit, checker=self._import_checker()
            )

        build, built = await self._while_connecting(scan_and_build)
        try:
            name, entry = mothership_entry(build.manifest, build.build_id)
        except MothershipError as exc:
            raise OpError(str(exc)) from exc
        deployed = await self._deployed()
        there = {name: deployed[name].as_entry()} if name in deployed else {}
        # Serving another environment, it is redeployed for this one.
        moved = name in deployed and deployed[name].environment != (
            self.provider.environment_name(True)
        )
        plan = make_plan({name: entry}, there, names=[name], force=force or moved)
        emit("plan", _plan_summary(plan))
        report = DeployReport(plan, built=built, build_id=build.build_id)
        if plan.has_changes:
            if confirm is not None:
                emit("confirm", "waiting for confirmation")
                if not await confirm(plan):
                    return self._cancelled(report, emit, started)
            spec = _spec(name, entry).model_copy(update={"role": "mothership"})

            def forward(event: ProviderEvent) -> None:
                if event.kind == "endpoint" and event.state:
                    emit("endpoint", event.state, name=event.name, state=event.state)

            try:
                report.outcome = await self.provider.deploy(
                    self.app,
                    [spec],
                    build,
                    force=force or moved,
                    project_path=self.root,
                    on_event=forward,
                )
            except ProviderError as exc:
                raise OpError(str(exc)) from exc
        if report.ok:
            # Unchanged, it reconciled this build at its last boot: nothing to wait for.
            report.children = await self._children_converged(
                name, build.build_id, since if plan.has_changes else 0.0, emit
            )
        failed = [c for c in (report.children or {}).values() if c.status == "failed"]
        report.elapsed_ms = _ms(started)
        emit(
            "done",
            f"{plural(len(failed), 'endpoint')} failed"
            if failed
            else "deployed through mothership",
            ok=report.ok and not failed,
        )
        return report

    async def _children_converged(
        self, mothership: str, build_id: str, since: float, emit: Callable[..., None]
    ) -> dict[str, ChildState] | None:
        """The children's state once the mothership has reconciled `build_id` (None when the
        target keeps none); OpError when it has not in time (see `engine.mothership`)."""
        if not isinstance(self.provider, EnvironmentState):
            return None
        record = (await self._deployed()).get(mothership)
        environment = record.environment if record is not None else None
        try:
            return await await_children(
                self.provider, self.app, environment, mothership, build_id, since, emit
            )
        except (MothershipError, ProviderError) as exc:
            raise OpError(str(exc)) from exc

    @staticmethod
    def _cancelled(report: DeployReport, emit: Callable[..., None], started: float) -> DeployReport:
        report.cancelled = True
        emit("done", "cancelled; nothing was changed")
        report.elapsed_ms = _ms(started)
        return report

    # -- restart --------------------------------------------------------------------------

    async def restart(self, name: str, *, on_event: OnEvent | None = None) -> EndpointResult:
        """Stop and start a deployed endpoint's worker (same build and config); OpError when
        it is not deployed or the target cannot restart it."""
        emit = self._emitter("restart", on_event)
        deployed = await self._deployed()
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
        emit = self._emitter("undeploy", on_event)
        deployed = await self._deployed()
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
        report.elapsed_ms = _ms(started)
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
        """

        async def code() -> tuple[dict[str, Any], dict[str, int]]:
            if manifest is not None:
                return local_resources(manifest, self.root), _parse_errors(diagnostics)
            if not scan:
                return {}, {}
            result = await self.scan()
            return local_resources(result.manifest, self.root), _parse_errors(result.diagnostics)

        local, errors = await self._while_connecting(code)  # reaching overlaps with the scan
        deployed = await self._deployed()
        samples: dict[str, HealthSample] = {}
        if health is not None:
            samples = {
                n: s for n, s in health.items() if n in deployed and s.url == deployed[n].url
            }
        elif probe:
            samples = {s.endpoint: s for s in await probe_all(await self._targets(deployed))}
        drifts = compute_drift(
            {**_generated_motherships(local, deployed), **local},
            {n: e.as_entry() for n, e in deployed.items()},
            parse_errors=errors,
            deployed_files=await asyncio.to_thread(_built_files, self.root) if errors else None,
        )
        statuses = [
            endpoint_status(name, local.get(name), deployed.get(name), drift, samples.get(name))
            for name, drift in drifts.items()
        ]
        children = await self._provisioning(deployed)
        for status in statuses:
            child = children.get(status.name)
            if child is not None and status.role == "child":
                status.provisioning, status.provisioning_error = child.status, child.error
        return statuses

    async def _provisioning(
        self, deployed: Mapping[str, DeployedEndpoint]
    ) -> dict[str, ChildState]:
        """Each child's provisioning as its mothership recorded it, from the state manager of
        every environment a mothership serves ({} in direct mode)."""
        environments = {
            e.environment for e in deployed.values() if e.role != "endpoint" and e.environment
        }
        if not environments or not isinstance(self.provider, EnvironmentState):
            return {}
        out: dict[str, ChildState] = {}
        for environment in sorted(environments):
            try:
                state = await self.provider.environment_state(self.app, environment)
            except ProviderError as exc:
                raise OpError(str(exc)) from exc
            out.update(child_states(state))
        return out

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
        return await self._targets(await self._deployed())

    async def _targets(self, deployed: Mapping[str, DeployedEndpoint]) -> list[EndpointTarget]:
        out: list[EndpointTarget] = []
        for name, endpoint in deployed.items():
            if endpoint.url and endpoint.status in RUNNING:
                try:
                    out.append(await self.provider.target(self.app, name))
                except ProviderError:
                    continue
        return out

    # -- logs -----------------------------------------------------------------------------

    async def _log_names(
        self, names: Sequence[str] | None
    ) -> tuple[list[str], dict[str, bool], list[str]]:
        """The endpoints to read, LB or not, and those of them not deployed (whose logs are
        what they wrote before they stopped, kept until their next deploy)."""
        deployed = await self._deployed()
        kinds = {n: e.is_load_balanced for n, e in deployed.items()}
        if names is None:
            return sorted(deployed), kinds, []
        unknown = [n for n in names if n not in deployed]
        return list(names), kinds, unknown

    async def _no_logs(self, unknown: Sequence[str]) -> OpError:
        known = ", ".join(sorted(await self._deployed())) or "none"
        return OpError(f"not deployed: {', '.join(unknown)} (deployed: {known})")

    async def not_deployed(self, names: Sequence[str]) -> list[str]:
        """Those of `names` not deployed now (their logs, if any, are post-mortem)."""
        deployed = await self._deployed()
        return [n for n in names if n not in deployed]

    async def logs(
        self, names: Sequence[str] | None = None, lines: int = 200, *, probes: bool = False
    ) -> list[LogLine]:
        """The last log lines of the given (default: all deployed) endpoints.

        Health-probe request lines are hidden unless `probes`."""
        selected, kinds, unknown = await self._log_names(names)
        try:
            found = await read_logs(
                self.provider, self.app, selected, lines, probes=probes, load_balanced=kinds
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
        for name in names:
            try:
                kept = await read_logs(self.provider, self.app, [name], 1, probes=True)
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
        `engine.logs.follow_logs`)."""
        selected, kinds, unknown = await self._log_names(names)
        if not selected:
            raise OpError(f"nothing of {self.app} is deployed: no logs to follow")
        if unknown and not await self._kept(unknown):
            raise await self._no_logs(unknown)
        async for line in follow_logs(
            self.provider,
            self.app,
            selected,
            lines,
            probes=probes,
            load_balanced=kinds,
            count_probes=count_probes,
        ):
            yield line

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


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _plan_summary(plan: Plan) -> str:
    counts = plan.counts()
    return ", ".join(f"{counts[a]} {a}" for a in ("create", "update", "delete", "unchanged"))
