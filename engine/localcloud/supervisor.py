"""The supervisor: deploys, watches, restarts, re-adopts and stops the endpoints' workers.

It lives inside the local cloud service and orchestrates `workers` (the processes),
`buildcopies` (what they run from) and `ports`, writing every step to the `store`. Its rules:

- The database is written BEFORE a process is acted on (record, then spawn; pid recorded right
  after spawn), so a SIGKILL of the service at any point leaves a record that explains every
  process: on the next start, live workers whose pid, start time and command line match their
  record are re-adopted; a recorded worker that is gone is started again; a worker process of
  this home that no record explains (killed between spawn and pid write) is terminated.
- Workers run from an immutable copy of the build (see `buildcopies`), so rebuilding the
  project does not change a running endpoint until it is redeployed.
- A worker gets its own key, its app's endpoint table and the service's environment minus
  everything that leads to the home (see `workers`): user code runs in it.
- A worker that exits unexpectedly is restarted after an exponential backoff; after
  `crash_limit` crashes within `crash_window` seconds the endpoint is `failed`, with the last
  log lines recorded (the import error of a broken handler, typically). See `crashes`.
- Deploys and undeploys of one app are serialised by a per-app lock (one service per home, so
  an in-process lock is enough; the database's own locking protects against anything else).
- A deploy starts `deploy_concurrency` endpoints at a time. Cancelled (`cancel_deploy`), it
  starts no more: those not started get their previous record back (a create's is removed),
  those started finish, so every record explains its process. `restart` stops and starts one
  endpoint's worker from its record (same build copy, config and key).

What a crash does (the record, the window rule, backoff, the waiting restarts) is `crashes`.

At about 760 lines it is over the project's 700-line mark: every method shares the per-app
locks, the live `workers` map and the write-before-act rule above, and splitting them apart
would pass that state around. The next split, when it grows again, is the deploy operation
(`deploy`, `_deploy_one`, `_not_started`, cancel) into its own module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from engine.home import Home, write_private
from engine.localcloud import buildcopies, logfiles, roles
from engine.localcloud.crashes import CrashHandler, Restarts
from engine.localcloud.isolation import probe_isolation
from engine.localcloud.ports import pick_port, port_is_free
from engine.localcloud.sandboxing import worker_state_dir
from engine.localcloud.settings import SupervisorSettings
from engine.localcloud.store import ENDPOINT_COLUMNS, Store, bound_text
from engine.localcloud.wire import (
    BuildSpec,
    DeployEvent,
    DeployRequest,
    EndpointSpec,
    WorkerIsolation,
)
from engine.localcloud.workers import Worker, WorkerProcesses, terminate
from engine.provider import NOT_STARTED
from engine.status import RUNNING

__all__ = ["Supervisor"]

Emit = Callable[[DeployEvent], None]

# Statuses in which an endpoint is meant to be running (engine.status.RUNNING): a worker found
# dead at service start (machine reboot, SIGKILL) is started again. `stopped` (by `cloud stop`)
# and `failed` stay down until the next deploy.
_WANTED = RUNNING
# What a deploy's endpoint record held before it: put back when the deploy never started it.
# Every column a deploy may write; not the identity, the running process or the timestamps.
_RESTORED = tuple(
    column
    for column in ENDPOINT_COLUMNS
    if column not in {"app", "name", "pid", "pid_started", "created_at", "updated_at", "started_at"}
)
# The event a worker started by a deploy or a restart logs, by action: its kind and verb.
_EVENT_KINDS = {
    "create": ("deployed", "created"),
    "update": ("updated", "updated"),
    "restart": ("restarted", "restarted"),
}


class Supervisor:
    """Owns the worker processes of every app of one home."""

    def __init__(self, home: Home, store: Store, settings: SupervisorSettings | None = None):
        self.home = home
        self.store = store
        self.settings = settings or SupervisorSettings()
        self.workers: dict[tuple[str, str], Worker] = {}
        # Where the service answers: a mothership's worker is told it (set by the service).
        self.service_url: str | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        # The cancel flags of the deploys of each app (running, or waiting for its lock).
        self._cancels: dict[str, dict[asyncio.Event, Emit]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._monitor: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._processes = WorkerProcesses(home, self.settings)
        self.restarts = Restarts(self._start_recorded, self.settings.backoff_max)
        self.crashes = CrashHandler(store, self._processes, self.settings, self.restarts)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover from the database (adopt, clean up, restart), then watch the workers."""
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(1.0), trust_env=False)
        # Importing in the background while recovery runs: the first start forks from it.
        self._processes.start_pool()
        used = {r.get("build_path") for r in self.store.list_endpoints()}
        await asyncio.to_thread(buildcopies.remove_partial_copies, self.home.root / "apps", used)
        await self._recover()
        self._monitor = asyncio.get_running_loop().create_task(self._monitor_loop())

    async def close(self, *, stop_workers: bool) -> None:
        """Stop watching; with `stop_workers`, stop every worker (status `stopped`)."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        self.restarts.cancel_all()
        for task in list(self._tasks):
            task.cancel()
        if stop_workers:
            workers = list(self.workers.values())
            await asyncio.gather(*(self._stop_worker(w) for w in workers))
            # Every endpoint meant to run is now stopped, including those waiting for a
            # restart after a crash: they stay down until the next deploy.
            for record in self.store.list_endpoints():
                if record["status"] in _WANTED:
                    self.store.upsert_endpoint(
                        record["app"], record["name"], status="stopped", pid=None
                    )
                    self.store.add_event(
                        "stopped", "local cloud stopped", app=record["app"], endpoint=record["name"]
                    )
            self.workers.clear()
        if self._http is not None:
            await self._http.aclose()
        await asyncio.to_thread(self._processes.close_pool)

    def app_lock(self, app: str) -> asyncio.Lock:
        """The lock that serialises deploys and undeploys of `app`."""
        return self._locks.setdefault(app, asyncio.Lock())

    def cancel_deploy(self, app: str) -> bool:
        """Ask the deploys of `app` to start no more endpoints; False when none is running."""
        flags = self._cancels.get(app) or {}
        for flag, emit in flags.items():
            if not flag.is_set():
                flag.set()
                emit(DeployEvent(type="cancelling", app=app))
        return bool(flags)

    def spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        """Run `coro` detached from any request (a client hanging up must not cancel it)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- recovery -------------------------------------------------------------------------

    async def _recover(self) -> None:
        to_start: list[dict[str, Any]] = []
        adopted: set[int] = set()
        for record in self.store.list_endpoints():
            process = self._processes.adoptable(record)
            if process is not None:
                worker = Worker(
                    record["app"],
                    record["name"],
                    process.pid,
                    float(record["pid_started"]),
                    int(record["port"]),
                )
                self.workers[(worker.app, worker.name)] = worker
                adopted.add(process.pid)
                self.store.add_event(
                    "adopted",
                    f"re-adopted running worker pid {process.pid}",
                    app=worker.app,
                    endpoint=worker.name,
                )
                if self._moved_since(record, process):
                    self.spawn_task(self._reboot(worker, "the local cloud's address changed"))
                else:
                    self.spawn_task(self._confirm_ready(worker))
                continue
            if record.get("pid"):
                self.store.add_event(
                    "lost",
                    f"worker pid {record['pid']} ended while the local cloud was down",
                    app=record["app"],
                    endpoint=record["name"],
                )
                self.store.upsert_endpoint(record["app"], record["name"], pid=None)
            if record["status"] in _WANTED:
                to_start.append(record)
        # Worker processes of this home that no record explains: terminate them (they were
        # spawned by a service killed before it could record their pid).
        for process, stray_app, resource in self._processes.strays(adopted):
            await asyncio.to_thread(terminate, process, self.settings.stop_timeout)
            self.store.add_event(
                "killed_unknown",
                f"terminated unrecorded worker pid {process.pid}",
                app=stray_app,
                data={"resource": resource, "pid": process.pid},
            )
        for record in to_start:
            self.spawn_task(self._start_recorded(record["app"], record["name"], "recovered"))

    def _moved_since(self, record: dict[str, Any], process: psutil.Process) -> bool:
        """Whether a mothership was told another address of the service than its own now (it
        reaches the state manager there: a restarted service may listen elsewhere)."""
        if record.get("role") != roles.MOTHERSHIP or not self.service_url:
            return False
        try:
            told = process.environ().get("FLASH_STATE_URL")
        except psutil.Error:
            return False
        return told != self.service_url

    async def _reboot(self, worker: Worker, reason: str) -> None:
        """Restart an adopted worker with a fresh environment."""
        async with self.app_lock(worker.app):
            await self._stop_worker(worker)
        self.store.add_event("rebooting", reason, app=worker.app, endpoint=worker.name)
        await self._start_recorded(worker.app, worker.name, reason)

    async def _confirm_ready(self, worker: Worker) -> None:
        ok, _ = await self._processes.wait_ready(
            worker, self._client(), self.settings.ready_timeout
        )
        record = self.store.get_endpoint(worker.app, worker.name)
        if record is not None and worker.alive() and record["status"] != "failed":
            self.store.upsert_endpoint(
                worker.app, worker.name, status="healthy" if ok else "unhealthy"
            )

    async def _start_recorded(self, app: str, name: str, reason: str) -> None:
        """(Re)start a recorded endpoint from its record (recovery and crash restarts)."""
        async with self.app_lock(app):
            record = self.store.get_endpoint(app, name)
            if record is None or record["status"] == "failed":
                return
            if (app, name) in self.workers and self.workers[(app, name)].alive():
                return
            if not record.get("build_path") or not Path(record["build_path"]).is_dir():
                self.store.upsert_endpoint(
                    app, name, status="failed", last_error="its build copy is missing"
                )
                self.store.add_event("failed", "build copy missing", app=app, endpoint=name)
                return
            python = record.get("python")
            if python and not Path(python).exists():
                # Its environment left the cache: starting it on another interpreter would run
                # it without its packages. A deploy builds the environment again.
                error = f"its environment is missing ({python}); deploy again to rebuild it"
                self.store.upsert_endpoint(app, name, status="failed", last_error=error)
                self.store.add_event("failed", "environment missing", app=app, endpoint=name)
                return
            await self._processes.prepare(record)
            port_changed = not record.get("port") or not port_is_free(int(record["port"]))
            worker = await self._spawn(record, new_port=port_changed)
            if port_changed:
                self._write_endpoints_file(app)
            restarts = int(record.get("restarts") or 0) + (reason in ("crash", "recycle"))
            self.store.upsert_endpoint(app, name, restarts=restarts, status="unhealthy")
            self.store.add_event(
                "restarted",
                f"worker restarted ({reason}), pid {worker.pid}",
                app=app,
                endpoint=name,
            )
        await self._confirm_ready(worker)

    # -- processes ------------------------------------------------------------------------

    async def _spawn(self, record: dict[str, Any], *, new_port: bool = False) -> Worker:
        """Start the worker of `record` and record its pid. Caller holds the app lock."""
        app, name = record["app"], record["name"]
        if new_port or not record.get("port"):
            port = pick_port(self._ports_in_use())
        else:
            port = int(record["port"])
        key = self.store.endpoint_key(app, name)
        if key is None:
            key = secrets.token_urlsafe(32)
            self.store.set_endpoint_key(app, name, key)
        # In a thread: a start waits on processes (the fork server, the log writer), and the
        # endpoints of one deploy start side by side instead of one after another.
        worker = await asyncio.to_thread(
            self._processes.spawn, record, port, key, self._role_env(record)
        )
        url = f"http://127.0.0.1:{port}"
        # Watched from now on, even if recording its pid fails (a full disk): a retry then
        # finds it running instead of starting a second one.
        self.workers[(app, name)] = worker
        self.store.upsert_endpoint(
            app,
            name,
            pid=worker.pid,
            pid_started=worker.create_time,
            port=port,
            url=url,
            started_at=time.time(),
        )
        return worker

    def _role_env(self, record: dict[str, Any]) -> dict[str, str]:
        """The variables of the endpoint's role (mothership, child): see `roles`."""
        if (record.get("role") or roles.ENDPOINT) == roles.ENDPOINT:
            return {}
        mothership = None
        if record.get("mothership"):
            mothership = self.store.get_endpoint(record["app"], record["mothership"])
        try:
            master = self.home.token_file.read_text().strip()
        except OSError:
            master = ""
        return roles.worker_env(
            record,
            service_url=self.service_url,
            master_token=master,
            mothership=mothership,
            mothership_key=self.store.endpoint_key(record["app"], record["mothership"])
            if mothership is not None
            else None,
        )

    def _client(self) -> httpx.AsyncClient:
        """The HTTP client that polls the workers' `/ping` (made by `start`)."""
        assert self._http is not None
        return self._http

    async def isolation(self) -> list[WorkerIsolation]:
        """What each running worker says it applied (its `/ping`), not what it was asked."""
        return await probe_isolation(list(self.workers.values()), self._client())

    async def _stop_worker(self, worker: Worker) -> None:
        """Stop `worker` (see `WorkerProcesses.stop`) and stop watching it."""
        await self._processes.stop(worker)
        self.workers.pop((worker.app, worker.name), None)

    # -- monitoring -----------------------------------------------------------------------

    async def _monitor_loop(self) -> None:
        # Log rotation is not done here: each worker's log writer holds its own file's cap.
        while True:
            for worker in list(self.workers.values()):
                if worker.expected_exit or worker.alive():
                    continue
                self.workers.pop((worker.app, worker.name), None)
                self.spawn_task(self.crashes.handle(worker, time.time()))
            await asyncio.sleep(self.settings.monitor_interval)

    # -- builds ---------------------------------------------------------------------------

    def _ensure_build(self, app: str, build: BuildSpec) -> Path:
        """The immutable copy of the request's build, created on first use, and its record."""
        target = buildcopies.ensure_copy(self.home, app, build)
        assert build.build_id is not None  # ensure_copy refuses a request without one
        self.store.record_build(app, build.build_id, build.archive, str(target), build.manifest)
        return target

    def _ports_in_use(self) -> set[int]:
        """Ports recorded for any endpoint (bound or about to be)."""
        return {int(r["port"]) for r in self.store.list_endpoints() if r.get("port")}

    def _write_endpoints_file(self, app: str) -> None:
        """Rewrite the app's service-registry file (URLs + keys), 0600, atomically."""
        keys = self.store.app_keys(app)
        table = {
            r["name"]: {"url": r["url"], "key": keys.get(r["name"])}
            for r in self.store.list_endpoints(app)
            if r.get("url")
        }
        write_private(
            self.home.endpoints_file(app), json.dumps({"endpoints": table}, indent=2) + "\n"
        )

    # -- deploy / undeploy ----------------------------------------------------------------

    def _unchanged(
        self, spec: EndpointSpec, record: dict[str, Any] | None, build_id: str, environment: str
    ) -> bool:
        if record is None or record["status"] == "failed":
            return False
        worker = self.workers.get((record["app"], spec.name))
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
        async with self.app_lock(app):
            emit(DeployEvent(type="locked", app=app))
            self.store.upsert_app(app, request.project_path)
            results: list[dict[str, Any]] = []
            timeout = float(request.ready_timeout or self.settings.ready_timeout)

            # removals first, so a rename frees its resources before the new name starts
            removals = [n for n in request.remove if self.store.get_endpoint(app, n)]
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
                record = self.store.get_endpoint(app, spec.name)
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
                build_path = await asyncio.to_thread(self._ensure_build, app, request.build)
                emit(DeployEvent(type="build", build_id=request.build.build_id, state="ready"))
                # Records first (status deploying, port chosen), then the endpoint table, so
                # every worker starts with the URLs of all the app's endpoints.
                for spec, action, record in todo:
                    self.restarts.cancel(app, spec.name)
                    if action == "create":
                        # The logs an undeploy left to read end with the next deploy.
                        logfiles.remove_logs(self._processes.log_path(app, spec.name))
                    port = (record.get("port") if record else None) or pick_port(
                        self._ports_in_use()
                    )
                    self.store.upsert_endpoint(
                        app,
                        spec.name,
                        resource_type=spec.resource_type,
                        is_load_balanced=spec.is_load_balanced,
                        config=spec.config,
                        config_hash=spec.config_hash,
                        code_hash=spec.code_hash,
                        build_id=request.build.build_id,
                        build_path=str(build_path),
                        python=spec.python,
                        status="deploying",
                        port=port,
                        url=f"http://127.0.0.1:{port}",
                        # A deploy starts a fresh run: status counts restarts and crashes
                        # since the last deploy, so old crashes don't hide the new code's health
                        # (or count towards failing it).
                        restarts=0,
                        crash_times=[],
                        last_error=None,
                        role=spec.role,
                        mothership=spec.mothership,
                        environment=request.environment,
                    )
                    if self.store.endpoint_key(app, spec.name) is None:
                        self.store.set_endpoint_key(app, spec.name, secrets.token_urlsafe(32))
                self._write_endpoints_file(app)
                gate = asyncio.Semaphore(max(1, int(self.settings.deploy_concurrency)))

                async def start(
                    spec: EndpointSpec, action: str, previous: dict[str, Any] | None
                ) -> dict[str, Any]:
                    async with gate:
                        if cancel.is_set():
                            return self._not_started(app, spec, action, previous, emit)
                        return await self._deploy_one(app, spec, action, timeout, emit)

                outcomes = await asyncio.gather(*(start(s, a, r) for s, a, r in todo))
                results.extend(outcomes)
                if cancel.is_set():
                    self._write_endpoints_file(app)  # without the endpoints not started
            # In mothership mode the mothership writes the environment's state itself.
            if all(spec.role == roles.ENDPOINT for spec in request.endpoints):
                self._persist_manifest(app, request)
            buildcopies.prune_copies(self.store, app)
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

    def _orphan_child(self, app: str, spec: EndpointSpec) -> str | None:
        """Why a mothership's child cannot be deployed (its mothership is gone), or None.

        An undeploy that removed the mothership while its provisioning waited for the app's
        lock must not be followed by children nobody manages.
        """
        if spec.role != roles.CHILD:
            return None
        mothership = self.store.get_endpoint(app, spec.mothership or "")
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
            self.store.delete_endpoint(app, spec.name)
        else:
            kept = {k: previous.get(k) for k in _RESTORED}
            self.store.upsert_endpoint(app, spec.name, **kept)
        self.store.add_event("deploy_cancelled", NOT_STARTED, app=app, endpoint=spec.name)
        emit(DeployEvent(type="endpoint", name=spec.name, action=action, state="cancelled"))
        return {"name": spec.name, "action": action, "ok": False, "error": NOT_STARTED}

    async def restart(self, app: str, name: str, emit: Emit) -> dict[str, Any]:
        """Stop and start an endpoint's worker from its record (same build, config, key): a
        new pid, one more restart, a fresh crash window; returns its result."""
        async with self.app_lock(app):
            record = self.store.get_endpoint(app, name)
            if record is None:
                raise KeyError(name)
            self.restarts.cancel(app, name)
            self.store.upsert_endpoint(
                app,
                name,
                status="deploying",
                restarts=int(record.get("restarts") or 0) + 1,
                crash_times=[],
                last_error=None,
            )
            spec = EndpointSpec(name=name, config_hash=record.get("config_hash"))
            timeout = float(self.settings.ready_timeout)
            result = await self._deploy_one(app, spec, "restart", timeout, emit)
        emit(DeployEvent(type="result", app=app, ok=result["ok"], results=[result]))
        return result

    async def _deploy_one(
        self, app: str, spec: EndpointSpec, action: str, timeout: float, emit: Emit
    ) -> dict[str, Any]:
        started = time.monotonic()
        name = spec.name
        old = self.workers.get((app, name))
        if old is not None:
            emit(DeployEvent(type="endpoint", name=name, action=action, state="stopping"))
            await self._stop_worker(old)
        if spec.setup_error:
            return self._setup_failed(app, spec, action, started, emit)
        record = self.store.get_endpoint(app, name)
        assert record is not None
        emit(DeployEvent(type="endpoint", name=name, action=action, state="starting"))
        if not record.get("build_path") or not Path(record["build_path"]).is_dir():
            error = "its build copy is missing: deploy it again"
            self.store.upsert_endpoint(app, name, status="failed", last_error=error, pid=None)
            emit(DeployEvent(type="endpoint", name=name, action=action, state="error", error=error))
            return {"name": name, "action": action, "ok": False, "error": error}
        await self._processes.prepare(record)
        port_taken = not port_is_free(int(record["port"]))
        worker = await self._spawn(record, new_port=port_taken)
        if port_taken:
            self._write_endpoints_file(app)
        ok, error = await self._processes.wait_ready(worker, self._client(), timeout)
        elapsed = round((time.monotonic() - started) * 1000, 1)
        record = self.store.get_endpoint(app, name) or record
        if ok:
            self.store.upsert_endpoint(app, name, status="healthy")
            kind, done = _EVENT_KINDS.get(action, ("updated", f"{action}d"))
            self.store.add_event(
                kind,
                f"{done}, pid {worker.pid}, {record['url']}",
                app=app,
                endpoint=name,
                data={"config_hash": spec.config_hash, "elapsed_ms": elapsed},
            )
        else:
            if not worker.alive():  # its last words are still in the pipe, maybe
                await self._processes.drain_log(worker, 2.0)
            tail = logfiles.last_lines(
                self._processes.log_path(app, name), 20, self.store.app_keys(app).values()
            )
            error = bound_text(error + ("\n" + "\n".join(tail[-12:]) if tail else ""))
            self.store.add_event("deploy_failed", error.splitlines()[0], app=app, endpoint=name)
            if worker.alive():
                self.store.upsert_endpoint(app, name, status="unhealthy", last_error=error)
        emit(
            DeployEvent(
                type="endpoint",
                name=name,
                action=action,
                state="healthy" if ok else "error",
                elapsed_ms=elapsed,
                url=record.get("url"),
                **({"error": error} if not ok else {}),
            )
        )
        result: dict[str, Any] = {
            "name": name,
            "action": action,
            "ok": ok,
            "elapsed_ms": elapsed,
            "url": record.get("url"),
        }
        if not ok:
            result["error"] = error
        return result

    def _setup_failed(
        self, app: str, spec: EndpointSpec, action: str, started: float, emit: Emit
    ) -> dict[str, Any]:
        """Record an endpoint whose environment could not be made `failed`; start nothing."""
        error = bound_text(f"environment not ready: {spec.setup_error}")
        elapsed = round((time.monotonic() - started) * 1000, 1)
        self.store.upsert_endpoint(
            app, spec.name, status="failed", last_error=error, pid=None, pid_started=None
        )
        self.store.add_event("deploy_failed", error.splitlines()[0], app=app, endpoint=spec.name)
        emit(
            DeployEvent(
                type="endpoint",
                name=spec.name,
                action=action,
                state="error",
                elapsed_ms=elapsed,
                error=error,
            )
        )
        return {
            "name": spec.name,
            "action": action,
            "ok": False,
            "elapsed_ms": elapsed,
            "error": error,
        }

    async def _remove(self, app: str, names: list[str], emit: Emit) -> list[dict[str, Any]]:
        # The log stays readable until the endpoint is deployed again (a post-mortem), with the
        # app's keys redacted now: once the record goes, nothing knows them any more.
        keys = list(self.store.app_keys(app).values())

        async def one(name: str) -> dict[str, Any]:
            started = time.monotonic()
            emit(DeployEvent(type="endpoint", name=name, action="delete", state="stopping"))
            self.restarts.cancel(app, name)
            worker = self.workers.get((app, name))
            if worker is not None:
                await self._stop_worker(worker)
            await asyncio.to_thread(
                logfiles.redact_files, self._processes.log_path(app, name), keys
            )
            self.store.delete_endpoint(app, name)
            shutil.rmtree(worker_state_dir(self.home, app, name), ignore_errors=True)
            self.store.add_event("undeployed", "undeployed", app=app, endpoint=name)
            elapsed = round((time.monotonic() - started) * 1000, 1)
            emit(DeployEvent(type="endpoint", name=name, action="delete", state="removed"))
            return {"name": name, "action": "delete", "ok": True, "elapsed_ms": elapsed}

        results = list(await asyncio.gather(*(one(n) for n in names)))
        self._write_endpoints_file(app)
        return results

    async def undeploy(self, app: str, names: list[str] | None, emit: Emit) -> dict[str, Any]:
        """Stop and remove endpoints of `app` (all when `names` is None)."""
        started = time.monotonic()
        async with self.app_lock(app):
            known = [r["name"] for r in self.store.list_endpoints(app)]
            targets = known if names is None else [n for n in names if n in known]
            missing = [] if names is None else [n for n in names if n not in known]
            results = await self._remove(app, targets, emit) if targets else []
            for name in missing:
                results.append(
                    {"name": name, "action": "delete", "ok": False, "error": "not deployed"}
                )
            for name in targets:
                with contextlib.suppress(Exception):
                    for env in self.store.environments(app):
                        self.store.patch_manifest_resource(app, env, name, None)
            buildcopies.prune_copies(self.store, app)
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
        previous = self.store.get_manifest(app, request.environment) or {}
        old_entries = previous.get("resources") or {}
        new_entries = request.build.manifest.get("resources") or {}
        resources: dict[str, Any] = {}
        for record in self.store.list_endpoints(app):
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
        self.store.put_manifest(app, request.environment, manifest)
