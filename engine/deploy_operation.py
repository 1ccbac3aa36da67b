"""The deploy operation: scan, build when stale, plan, confirm, then one provider deploy.

Direct: the plan against the provider's endpoints (config hash, code hash, running state; on
the local cloud also each endpoint's environment), then every create/update deployed and the
deletes removed in one provider deploy, its progress as `OpEvent`s. Cancelled before the
deploy starts, nothing changes; during it, endpoints not started are left as they were.

Through a mothership (`deploy --mothership`): only the environment's mothership is deployed,
and the operation waits until it has provisioned the rest (see `engine.mothership`).

It runs on a `Session` (`engine.session`; `Engine.deploy` is the entry point): the project,
the provider and the session's scanner, build checker and environment cache.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.build_step import BuildCancelled, build_step
from engine.drift import is_unresolved
from engine.env_step import env_step, expected_interpreters
from engine.envs import ProjectRequirements, project_requirements
from engine.mothership import (
    ChildState,
    EnvironmentState,
    MothershipError,
    await_children,
    mothership_entry,
)
from engine.operation_results import Confirm, DeployReport, Emit, OnEvent, OpError, emitter
from engine.plan import Plan, local_resources, make_plan
from engine.provider import (
    BuildRef,
    DeployedEndpoint,
    DeployOrder,
    EndpointSpec,
    Provider,
    ProviderError,
    ProviderEvent,
)
from engine.session import Session
from engine.status import Status
from engine.wording import plural

if TYPE_CHECKING:
    from engine.scan import ScanResult

__all__ = [
    "deploy",
    "deploy_mothership",
    "ms_since",
    "plan_summary",
    "with_costs",
    "with_environments",
]

# The plan's reason for updating an endpoint whose environment is not the one it runs on.
_ENV_CHANGED = "its environment changed (requirements or dependencies)"


async def deploy(
    session: Session,
    names: Sequence[str] | None = None,
    *,
    force: bool = False,
    confirm: Confirm | None = None,
    on_event: OnEvent | None = None,
    cancel: asyncio.Event | None = None,
) -> DeployReport:
    """Build if stale, plan, confirm, deploy (see `Engine.deploy`)."""
    started = time.perf_counter()
    cancel = cancel or asyncio.Event()
    emit = emitter("deploy", on_event)
    root, provider = session.root, session.provider

    async def scan_and_build() -> tuple[ScanResult, BuildRef, bool]:
        scanned = await session.checked_scan(emit)
        build, built = await build_step(
            root,
            dict(scanned.manifest),
            emit,
            cancelled=cancel.is_set,
            checker=session.import_checker(),
        )
        return scanned, build, built

    # Reaching (or starting) the local cloud overlaps with the scan and the build check.
    try:
        scanned, build, built = await session.while_connecting(scan_and_build)
    except BuildCancelled:
        return _cancelled(DeployReport(Plan(())), emit, started)
    if cancel.is_set():
        return _cancelled(DeployReport(Plan(()), built=built), emit, started)
    # Read once: the plan (a changed environment is an update) and the environments step.
    requirements = (
        await asyncio.to_thread(project_requirements, root, dict(os.environ))
        if provider.builds_environments
        else None
    )
    plan = await session.plan(
        names,
        force=force,
        manifest=build.manifest,
        calls=scanned.calls,
        requirements=requirements,
    )
    emit("plan", plan_summary(plan))
    report = DeployReport(plan, built=built, build_id=build.build_id)
    if not plan.has_changes:
        emit("done", "nothing to do: everything is up to date")
        report.elapsed_ms = ms_since(started)
        return report
    if confirm is not None:
        emit("confirm", "waiting for confirmation")
        if not await confirm(plan):
            return _cancelled(report, emit, started)
    if cancel.is_set():
        return _cancelled(report, emit, started)
    local = local_resources(build.manifest, root)
    specs = [_spec(i.name, local[i.name]) for i in plan.items if i.action in ("create", "update")]
    if provider.builds_environments and specs:
        prepared = await env_step(
            root,
            build.manifest,
            specs,
            emit,
            cache=session.env_cache(),
            build_dir=build.build_dir,
            project=requirements,
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
        report.outcome = await provider.deploy(
            DeployOrder(
                session.app,
                specs,
                build,
                remove=removes,
                force=force,
                project_path=root,
                on_event=forward,
                cancel=cancel,
            )
        )
    except ProviderError as exc:
        raise OpError(str(exc)) from exc
    report.elapsed_ms = ms_since(started)
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


async def deploy_mothership(
    session: Session,
    *,
    force: bool = False,
    confirm: Confirm | None = None,
    on_event: OnEvent | None = None,
) -> DeployReport:
    """Deploy only the environment's mothership and wait until it has provisioned the rest."""
    provider = session.provider
    if not isinstance(provider, EnvironmentState):
        raise OpError(
            f"--mothership is not available on the {provider.name} target yet "
            "(the local cloud has it); deploy without it"
        )
    started, since = time.perf_counter(), time.time()
    emit = emitter("deploy", on_event)

    async def scan_and_build() -> tuple[BuildRef, bool]:
        scanned = await session.checked_scan(emit)
        return await build_step(
            session.root, dict(scanned.manifest), emit, checker=session.import_checker()
        )

    build, built = await session.while_connecting(scan_and_build)
    try:
        name, entry = mothership_entry(build.manifest, build.build_id)
    except MothershipError as exc:
        raise OpError(str(exc)) from exc
    deployed = await session.deployed()
    there = {name: deployed[name].as_entry()} if name in deployed else {}
    # Serving another environment, it is redeployed for this one.
    moved = name in deployed and deployed[name].environment != (provider.environment_name(True))
    plan = make_plan({name: entry}, there, names=[name], force=force or moved)
    emit("plan", plan_summary(plan))
    report = DeployReport(plan, built=built, build_id=build.build_id)
    if plan.has_changes:
        if confirm is not None:
            emit("confirm", "waiting for confirmation")
            if not await confirm(plan):
                return _cancelled(report, emit, started)
        spec = _spec(name, entry).model_copy(update={"role": "mothership"})

        def forward(event: ProviderEvent) -> None:
            if event.kind == "endpoint" and event.state:
                emit("endpoint", event.state, name=event.name, state=event.state)

        try:
            report.outcome = await session.provider.deploy(
                DeployOrder(
                    session.app,
                    [spec],
                    build,
                    force=force or moved,
                    project_path=session.root,
                    on_event=forward,
                )
            )
        except ProviderError as exc:
            raise OpError(str(exc)) from exc
    if report.ok:
        # Unchanged, it reconciled this build at its last boot: nothing to wait for.
        report.children = await _children_converged(
            session, name, build.build_id, since if plan.has_changes else 0.0, emit
        )
    failed = [c for c in (report.children or {}).values() if c.status == "failed"]
    report.elapsed_ms = ms_since(started)
    emit(
        "done",
        f"{plural(len(failed), 'endpoint')} failed" if failed else "deployed through mothership",
        ok=report.ok and not failed,
    )
    return report


async def _children_converged(
    session: Session, mothership: str, build_id: str, since: float, emit: Emit
) -> dict[str, ChildState] | None:
    """The children's state once the mothership has reconciled `build_id` (None when the
    target keeps none); OpError when it has not in time (see `engine.mothership`)."""
    provider = session.provider
    if not isinstance(provider, EnvironmentState):
        return None
    record = (await session.deployed()).get(mothership)
    environment = record.environment if record is not None else None
    try:
        return await await_children(
            provider, session.app, environment, mothership, build_id, since, emit
        )
    except (MothershipError, ProviderError) as exc:
        raise OpError(str(exc)) from exc


async def with_costs(provider: Provider, plan: Plan, local: Mapping[str, Any]) -> Plan:
    """The plan with a cost note on endpoints that never scale to zero, when the target
    prices them (RunPod); the local cloud has none."""
    try:
        notes: Mapping[str, str] = await provider.costs(local)
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


async def with_environments(
    session: Session,
    plan: Plan,
    manifest: Mapping[str, Any],
    deployed: Mapping[str, DeployedEndpoint],
    requirements: ProjectRequirements | None = None,
) -> Plan:
    """The plan with an update of each running local endpoint whose environment changed
    (requirements, `dependencies`, the torch setting): its code and config alone don't say.
    """
    if not session.provider.builds_environments:
        return plan
    wanted = await asyncio.to_thread(
        expected_interpreters, session.root, manifest, session.env_cache(), None, requirements
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


def plan_summary(plan: Plan) -> str:
    """The plan's counts in one line: `1 create, 0 update, 0 delete, 2 unchanged`."""
    counts = plan.counts()
    return ", ".join(f"{counts[a]} {a}" for a in ("create", "update", "delete", "unchanged"))


def ms_since(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()`), to a tenth."""
    return round((time.perf_counter() - started) * 1000, 1)


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


def _cancelled(report: DeployReport, emit: Emit, started: float) -> DeployReport:
    report.cancelled = True
    emit("done", "cancelled; nothing was changed")
    report.elapsed_ms = ms_since(started)
    return report
