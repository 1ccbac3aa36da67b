"""Deploys of the local cloud: create, update (blue/green), restart and remove endpoints.

One deploy holds its app's lock (`Supervisor.app_lock`) and writes every step to the store
before it acts, as the supervisor's rules say. For each endpoint of the request it decides
(`unchanged`, `create`, `update`), then starts `deploy_concurrency` at a time:

- A create writes its record (status `deploying`, port, build copy, hashes), then starts it.
- An update of an endpoint whose worker runs is blue/green (`bluegreen`): the new worker
  starts beside the old one and takes over once it answers; one that does not come up leaves
  the old one serving, its record as before the deploy plus the failure in `last_error`.
- An update of an endpoint with no live worker (crashed, failed, stopped) starts like a create.
- Cancelled (`cancel`), a deploy starts no more: those not started get their previous record
  back (a create's is removed), those started finish, so every record explains its process.
  `restart` stops and starts one endpoint's worker from its record (same build copy, config
  and key).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.localcloud import logfiles, roles
from engine.localcloud.bluegreen import failure_with_log, replace, restore_record
from engine.localcloud.ports import pick_port
from engine.localcloud.sandboxing import worker_state_dir
from engine.localcloud.store import bound_text
from engine.localcloud.wire import DeployEvent, DeployRequest, EndpointSpec, ResultRecord
from engine.provider import NOT_STARTED

if TYPE_CHECKING:
    from engine.localcloud.supervisor import Supervisor

__all__ = ["Deploys", "Emit"]

Emit = Callable[[DeployEvent], None]

# The event a worker started by a deploy or a restart logs, by action: its kind and verb.
_EVENT_KINDS = {
    "create": ("deployed", "created"),
    "update": ("updated", "updated"),
    "restart": ("restarted", "restarted"),
}


class Deploys:
    """The deploy operations of one supervisor (see the module docstring)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._sup = supervisor
        # The cancel flags of the deploys of each app (running, or waiting for its lock).
        self._cancels: dict[str, dict[asyncio.Event, Emit]] = {}

    def cancel(self, app: str) -> bool:
        """Ask the deploys of `app` to start no more endpoints; False when none is running."""
        flags = self._cancels.get(app) or {}
        for flag, emit in flags.items():
            if not flag.is_set():
                flag.set()
                emit(DeployEvent(type="cancelling", app=app))
        return bool(flags)

    def _unchanged(
        self, spec: EndpointSpec, record: dict[str, Any] | None, build_id: str, environment: str
    ) -> bool:
        if record is None or record["status"] == "failed":
            return False
        worker = self._sup.workers.get((record["app"], spec.name))
        if worker is None or not worker.alive():
            return False
        if spec.config_hash is None or spec.config_hash != record.get("config_hash"):
            return False
        if spec.resource_type != record.get("resource_type"):
            return False
        if spec.python != record.get("python") or spec.setup_error:
            return False
        if spec.role != (record.get("role") or roles.ENDPOINT):
            return False
        # A mothership and its children serve one environment: another one is a redeploy.
        if spec.role != roles.ENDPOINT and record.get("environment") != environment:
            return False
        if spec.code_hash is not None:
            return spec.code_hash == record.get("code_hash")
        return build_id == record.get("build_id")

    async def deploy(self, app: str, request: DeployRequest, emit: Emit) -> dict[str, Any]:
        """Create/update `request.endpoints`, remove `request.remove`; returns a summary."""
        cancel = asyncio.Event()
        self._cancels.setdefault(app, {})[cancel] = emit
        try:
            return await self._deploy(app, request, emit, cancel)
        finally:
            self._cancels[app].pop(cancel, None)

    async def _deploy(
        self, app: str, request: DeployRequest, emit: Emit, cancel: asyncio.Event
    ) -> dict[str, Any]:
        started = time.monotonic()
        async with self._sup.app_lock(app):
            emit(DeployEvent(type="locked", app=app))
            self._sup.store.upsert_app(app, request.project_path)
            results: list[dict[str, Any]] = []
            timeout = float(request.ready_timeout or self._sup.settings.ready_timeout)

            # removals first, so a rename frees its resources before the new name starts
            removals = [n for n in request.remove if self._sup.store.get_endpoint(app, n)]
            if removals:
                results.extend(await self._remove(app, removals, emit))

            todo: list[tuple[EndpointSpec, str, dict[str, Any] | None]] = []
            build_path: Path | None = None
            for spec in request.endpoints:
                orphan = self._orphan_child(app, spec)
                if orphan:
                    results.append(
                        {"name": spec.name, "action": "create", "ok": False, "error": orphan}
                    )
                    emit(DeployEvent(type="endpoint", name=spec.name, state="error", error=orphan))
                    continue
                record = self._sup.store.get_endpoint(app, spec.name)
                if not request.force and self._unchanged(
                    spec, record, request.build.build_id or "", request.environment
                ):
                    url = record.get("url") if record else None
                    results.append(
                        {"name": spec.name, "action": "unchanged", "ok": True, "url": url}
                    )
                    emit(DeployEvent(type="endpoint", name=spec.name, action="unchanged", url=url))
                    continue
                todo.append((spec, "update" if record else "create", record))
            if todo and cancel.is_set():
                results.extend(self._not_started(app, s, a, r, emit) for s, a, r in todo)
                todo = []
            if todo:
                emit(DeployEvent(type="build", build_id=request.build.build_id, state="copying"))
                build_path = await asyncio.to_thread(self._sup.ensure_build, app, request.build)
                emit(DeployEvent(type="build", build_id=request.build.build_id, state="ready"))
                # Records first (status deploying, port chosen), then the endpoint table, so
                # every worker starts with the URLs of all the app's endpoints. An endpoint
                # replaced blue/green keeps describing its old worker until the switch.
                replacing: dict[str, dict[str, Any]] = {}
                for spec, action, record in todo:
                    self._sup.restarts.cancel(app, spec.name)
                    if action == "create":
                        # The logs an undeploy left to read end with the next deploy.
                        logfiles.remove_logs(self._sup.processes.log_path(app, spec.name))
                    fields = {
                        "resource_type": spec.resource_type,
                        "is_load_balanced": spec.is_load_balanced,
                        "config": spec.config,
                        "config_hash": spec.config_hash,
                        "code_hash": spec.code_hash,
                        "build_id": request.build.build_id,
                        "build_path": str(build_path),
                        "python": spec.python,
                        # A deploy starts a fresh run: status counts restarts and crashes
                        # since the last deploy, so old crashes don't hide the new code's
                        # health (or count towards failing it).
                        "restarts": 0,
                        "crash_times": [],
                        "last_error": None,
                        "role": spec.role,
                        "mothership": spec.mothership,
                        "environment": request.environment,
                    }
                    if action == "update" and self._live(app, spec.name):
                        replacing[spec.name] = fields
                        self._sup.store.upsert_endpoint(app, spec.name, status="deploying")
                    else:
                        port = (record.get("port") if record else None) or pick_port(
                            self._sup.ports_in_use()
                        )
                        self._sup.store.upsert_endpoint(
                            app,
                            spec.name,
                            **fields,
                            status="deploying",
                            port=port,
                            url=f"http://127.0.0.1:{port}",
                        )
                    if self._sup.store.endpoint_key(app, spec.name) is None:
                        self._sup.store.set_endpoint_key(app, spec.name, secrets.token_urlsafe(32))
                self._sup.write_endpoints_file(app)
                gate = asyncio.Semaphore(max(1, int(self._sup.settings.deploy_concurrency)))

                async def start(
                    spec: EndpointSpec, action: str, previous: dict[str, Any] | None
                ) -> dict[str, Any]:
                    async with gate:
                        if cancel.is_set():
                            return self._not_started(app, spec, action, previous, emit)
                        if spec.name in replacing:
                            assert previous is not None  # an update has a record
                            return await replace(
                                self._sup, spec, replacing[spec.name], previous, timeout, emit
                            )
                        return await self._deploy_one(app, spec, action, timeout, emit)

                outcomes = await asyncio.gather(*(start(s, a, r) for s, a, r in todo))
                results.extend(outcomes)
                if cancel.is_set():
                    self._sup.write_endpoints_file(app)  # without the endpoints not started
            # In mothership mode the mothership writes the environment's state itself.
            if all(spec.role == roles.ENDPOINT for spec in request.endpoints):
                self._persist_manifest(app, request)
            self._sup.prune_copies(app)
        ok = all(r.get("ok") for r in results)
        summary = {
            "app": app,
            "ok": ok,
            "results": results,
            "build_id": request.build.build_id,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        }
        if cancel.is_set():
            summary["cancelled"] = True  # on the wire only when it happened
        emit(DeployEvent(type="result", **summary))
        return summary

    def _live(self, app: str, name: str) -> bool:
        """Whether `name` has a running worker (an update then replaces it blue/green)."""
        worker = self._sup.workers.get((app, name))
        return worker is not None and worker.alive()

    def _orphan_child(self, app: str, spec: EndpointSpec) -> str | None:
        """Why a mothership's child cannot be deployed (its mothership is gone), or None.

        An undeploy that removed the mothership while its provisioning waited for the app's
        lock must not be followed by children nobody manages.
        """
        if spec.role != roles.CHILD:
            return None
        mothership = self._sup.store.get_endpoint(app, spec.mothership or "")
        if mothership is None or mothership.get("role") != roles.MOTHERSHIP:
            return f"mothership {spec.mothership!r} is not deployed"
        return None

    def _not_started(
        self,
        app: str,
        spec: EndpointSpec,
        action: str,
        previous: dict[str, Any] | None,
        emit: Emit,
    ) -> dict[str, Any]:
        """A cancelled deploy's endpoint it did not start: its record as it was before (none
        for a create; an update's old worker never stopped)."""
        if previous is None:
            self._sup.store.delete_endpoint(app, spec.name)
        else:
            restore_record(self._sup.store, app, spec.name, previous)
        self._sup.store.add_event("deploy_cancelled", NOT_STARTED, app=app, endpoint=spec.name)
        emit(DeployEvent(type="endpoint", name=spec.name, action=action, state="cancelled"))
        return {"name": spec.name, "action": action, "ok": False, "error": NOT_STARTED}

    async def restart(self, app: str, name: str, emit: Emit) -> dict[str, Any]:
        """Stop and start an endpoint's worker from its record (same build, config, key): a
        new pid, one more restart, a fresh crash window; returns its result."""
        async with self._sup.app_lock(app):
            record = self._sup.store.get_endpoint(app, name)
            if record is None:
                raise KeyError(name)
            self._sup.restarts.cancel(app, name)
            self._sup.store.upsert_endpoint(
                app,
                name,
                status="deploying",
                restarts=int(record.get("restarts") or 0) + 1,
                crash_times=[],
                last_error=None,
            )
            spec = EndpointSpec(name=name, config_hash=record.get("config_hash"))
            timeout = float(self._sup.settings.ready_timeout)
            result = await self._deploy_one(app, spec, "restart", timeout, emit)
        emit(DeployEvent(type="result", app=app, ok=result["ok"], results=[result]))
        return result

    async def _deploy_one(
        self, app: str, spec: EndpointSpec, action: str, timeout: float, emit: Emit
    ) -> dict[str, Any]:
        started = time.monotonic()
        name = spec.name
        old = self._sup.workers.get((app, name))
        if old is not None:
            emit(DeployEvent(type="endpoint", name=name, action=action, state="stopping"))
            await self._sup.stop_worker(old)
        if spec.setup_error:
            return self._setup_failed(app, spec, action, started, emit)
        record = self._sup.store.get_endpoint(app, name)
        assert record is not None
        emit(DeployEvent(type="endpoint", name=name, action=action, state="starting"))
        if not record.get("build_path") or not Path(record["build_path"]).is_dir():
            error = "its build copy is missing: deploy it again"
            self._sup.store.upsert_endpoint(app, name, status="failed", last_error=error, pid=None)
            return ResultRecord(name=name, action=action, ok=False, error=error).said(emit)
        worker = await self._sup.respawn(record)
        ok, error = await self._sup.processes.wait_ready(worker, self._sup.client(), timeout)
        elapsed = round((time.monotonic() - started) * 1000, 1)
        record = self._sup.store.get_endpoint(app, name) or record
        if ok:
            self._sup.store.upsert_endpoint(app, name, status="healthy")
            kind, done = _EVENT_KINDS.get(action, ("updated", f"{action}d"))
            self._sup.store.add_event(
                kind,
                f"{done}, pid {worker.pid}, {record['url']}",
                app=app,
                endpoint=name,
                data={"config_hash": spec.config_hash, "elapsed_ms": elapsed},
            )
        else:
            if not worker.alive():  # its last words are still in the pipe, maybe
                await self._sup.processes.drain_log(worker, 2.0)
            error = failure_with_log(self._sup, app, name, error)
            self._sup.store.add_event(
                "deploy_failed", error.splitlines()[0], app=app, endpoint=name
            )
            if worker.alive():
                self._sup.store.upsert_endpoint(app, name, status="unhealthy", last_error=error)
        return ResultRecord(
            name=name,
            action=action,
            ok=ok,
            elapsed_ms=elapsed,
            url=record.get("url"),
            error=None if ok else error,
        ).said(emit)

    def _setup_failed(
        self, app: str, spec: EndpointSpec, action: str, started: float, emit: Emit
    ) -> dict[str, Any]:
        """Record an endpoint whose environment could not be made `failed`; start nothing."""
        error = bound_text(f"environment not ready: {spec.setup_error}")
        elapsed = round((time.monotonic() - started) * 1000, 1)
        self._sup.store.upsert_endpoint(
            app, spec.name, status="failed", last_error=error, pid=None, pid_started=None
        )
        self._sup.store.add_event(
            "deploy_failed", error.splitlines()[0], app=app, endpoint=spec.name
        )
        return ResultRecord(
            name=spec.name, action=action, ok=False, elapsed_ms=elapsed, error=error
        ).said(emit)

    async def _remove(self, app: str, names: list[str], emit: Emit) -> list[dict[str, Any]]:
        # The log stays readable until the endpoint is deployed again (a post-mortem), with the
        # app's keys redacted now: once the record goes, nothing knows them any more.
        keys = list(self._sup.store.app_keys(app).values())

        async def one(name: str) -> dict[str, Any]:
            started = time.monotonic()
            emit(DeployEvent(type="endpoint", name=name, action="delete", state="stopping"))
            self._sup.restarts.cancel(app, name)
            worker = self._sup.workers.get((app, name))
            if worker is not None:
                await self._sup.stop_worker(worker)
            await self._sup.stop_draining(app, name)
            await asyncio.to_thread(
                logfiles.redact_files, self._sup.processes.log_path(app, name), keys
            )
            self._sup.store.delete_endpoint(app, name)
            shutil.rmtree(worker_state_dir(self._sup.home, app, name), ignore_errors=True)
            self._sup.store.add_event("undeployed", "undeployed", app=app, endpoint=name)
            elapsed = round((time.monotonic() - started) * 1000, 1)
            emit(DeployEvent(type="endpoint", name=name, action="delete", state="removed"))
            return {"name": name, "action": "delete", "ok": True, "elapsed_ms": elapsed}

        results = list(await asyncio.gather(*(one(n) for n in names)))
        self._sup.write_endpoints_file(app)
        return results

    async def undeploy(self, app: str, names: list[str] | None, emit: Emit) -> dict[str, Any]:
        """Stop and remove endpoints of `app` (all when `names` is None)."""
        started = time.monotonic()
        async with self._sup.app_lock(app):
            known = [r["name"] for r in self._sup.store.list_endpoints(app)]
            targets = known if names is None else [n for n in names if n in known]
            missing = [] if names is None else [n for n in names if n not in known]
            results = await self._remove(app, targets, emit) if targets else []
            for name in missing:
                results.append(
                    {"name": name, "action": "delete", "ok": False, "error": "not deployed"}
                )
            for name in targets:
                with contextlib.suppress(Exception):
                    for env in self._sup.store.environments(app):
                        self._sup.store.patch_manifest_resource(app, env, name, None)
            self._sup.prune_copies(app)
        summary = {
            "app": app,
            "ok": not missing,
            "results": results,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        }
        emit(DeployEvent(type="result", **summary))
        return summary

    def _persist_manifest(self, app: str, request: DeployRequest) -> None:
        """Record what is deployed, as the state manager (and a mothership) sees it.

        The persisted manifest is the build's manifest restricted to the deployed endpoints,
        each entry with its `config_hash`, `endpoint_url` and `status` (upstream's persisted
        form); endpoints a partial deploy did not touch keep their entries.
        """
        if not request.build.manifest:
            return
        previous = self._sup.store.get_manifest(app, request.environment) or {}
        old_entries = previous.get("resources") or {}
        new_entries = request.build.manifest.get("resources") or {}
        resources: dict[str, Any] = {}
        for record in self._sup.store.list_endpoints(app):
            name = record["name"]
            entry = new_entries.get(name) if name in new_entries else old_entries.get(name)
            item = dict(entry or {"resource_type": record["resource_type"]})
            item.update(
                {
                    "config_hash": record.get("config_hash"),
                    "endpoint_url": record.get("url"),
                    "status": "deployed" if record["status"] == "healthy" else "failed",
                }
            )
            resources[name] = item
        manifest = {k: v for k, v in request.build.manifest.items() if k != "resources"}
        manifest["resources"] = resources
        self._sup.store.put_manifest(app, request.environment, manifest)
