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
  What they do (plan per endpoint, blue/green updates, cancel, restart) is `deploys`, which
  the service runs on top of this supervisor.
- A worker replaced by an update keeps serving for `drain_grace` seconds after the switch (a
  caller that read the old address just before it still gets an answer), then is stopped
  gracefully. It is no longer recorded: a service killed meanwhile finds it a stray and ends it.

What a crash does (the record, the window rule, backoff, the waiting restarts) is `crashes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from engine.home import Home, write_private
from engine.localcloud import buildcopies, roles
from engine.localcloud.crashes import CrashHandler, Restarts
from engine.localcloud.isolation import probe_isolation
from engine.localcloud.ports import pick_port, port_is_free
from engine.localcloud.settings import SupervisorSettings
from engine.localcloud.store import Store
from engine.localcloud.wire import BuildSpec, WorkerIsolation
from engine.localcloud.workers import Worker, WorkerProcesses, terminate
from engine.status import RUNNING

__all__ = ["Supervisor"]

# Statuses in which an endpoint is meant to be running (engine.status.RUNNING): a worker found
# dead at service start (machine reboot, SIGKILL) is started again. `stopped` (by `cloud stop`)
# and `failed` stay down until the next deploy.
_WANTED = RUNNING


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
        # Workers an update replaced, serving out their drain grace (see `retire`).
        self._draining: dict[int, tuple[Worker, str | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._monitor: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self.processes = WorkerProcesses(home, self.settings)
        self.restarts = Restarts(self._start_recorded, self.settings.backoff_max)
        self.crashes = CrashHandler(store, self.processes, self.settings, self.restarts)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover from the database (adopt, clean up, restart), then watch the workers."""
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(1.0), trust_env=False)
        # Importing in the background while recovery runs: the first start forks from it.
        self.processes.start_pool()
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
        # Replaced workers are recorded nowhere: they go with the service either way.
        await asyncio.gather(*(self.processes.stop(w) for w, _ in list(self._draining.values())))
        self._draining.clear()
        if stop_workers:
            workers = list(self.workers.values())
            await asyncio.gather(*(self.stop_worker(w) for w in workers))
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
        await asyncio.to_thread(self.processes.close_pool)

    def app_lock(self, app: str) -> asyncio.Lock:
        """The lock that serialises deploys and undeploys of `app`."""
        return self._locks.setdefault(app, asyncio.Lock())

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
            process = self.processes.adoptable(record)
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
        for process, stray_app, resource in self.processes.strays(adopted):
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
            await self.stop_worker(worker)
        self.store.add_event("rebooting", reason, app=worker.app, endpoint=worker.name)
        await self._start_recorded(worker.app, worker.name, reason)

    async def _confirm_ready(self, worker: Worker) -> None:
        ok, _ = await self.processes.wait_ready(worker, self.client(), self.settings.ready_timeout)
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
            worker = await self.respawn(record)
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

    async def respawn(self, record: dict[str, Any]) -> Worker:
        """Start the recorded endpoint's worker again: on its port, or on a new one when that
        is taken (the app's endpoint table then follows). Caller holds the app lock."""
        await self.processes.prepare(record)
        moved = not record.get("port") or not port_is_free(int(record["port"]))
        worker = await self.spawn(record, new_port=moved)
        if moved:
            self.write_endpoints_file(record["app"])
        return worker

    async def spawn(self, record: dict[str, Any], *, new_port: bool = False) -> Worker:
        """Start the worker of `record` and record its pid. Caller holds the app lock."""
        app, name = record["app"], record["name"]
        if new_port or not record.get("port"):
            port = pick_port(self.ports_in_use())
        else:
            port = int(record["port"])
        worker = await self.launch(record, port)
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

    async def launch(self, record: dict[str, Any], port: int) -> Worker:
        """Start a worker for `record` on `port`, neither recorded nor watched (`spawn` does
        both; an update records its new worker only once it is healthy)."""
        app, name = record["app"], record["name"]
        key = self.store.endpoint_key(app, name)
        if key is None:
            key = secrets.token_urlsafe(32)
            self.store.set_endpoint_key(app, name, key)
        # In a thread: a start waits on processes (the fork server, the log writer), and the
        # endpoints of one deploy start side by side instead of one after another.
        return await asyncio.to_thread(
            self.processes.spawn, record, port, key, self.role_env(record)
        )

    def role_env(self, record: dict[str, Any]) -> dict[str, str]:
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

    def client(self) -> httpx.AsyncClient:
        """The HTTP client that polls the workers' `/ping` (made by `start`)."""
        assert self._http is not None
        return self._http

    async def isolation(self) -> list[WorkerIsolation]:
        """What each running worker says it applied (its `/ping`), not what it was asked."""
        return await probe_isolation(list(self.workers.values()), self.client())

    async def stop_worker(self, worker: Worker) -> None:
        """Stop `worker` (see `WorkerProcesses.stop`) and stop watching it."""
        await self.processes.stop(worker)
        self.workers.pop((worker.app, worker.name), None)

    def retire(self, worker: Worker, build_id: str | None) -> None:
        """Stop a worker an update replaced (it ran build `build_id`) once its drain grace is
        over, in the background; then its build copy may go."""
        worker.expected_exit = True
        self._draining[worker.pid] = (worker, build_id)

        async def drain() -> None:
            try:
                await asyncio.sleep(self.settings.drain_grace)
                await self.processes.stop(worker)
            finally:
                self._draining.pop(worker.pid, None)
            async with self.app_lock(worker.app):
                self.prune_copies(worker.app)

        self.spawn_task(drain())

    async def stop_draining(self, app: str, name: str) -> None:
        """Stop at once the replaced workers of an endpoint being removed: nothing calls it
        any more that could still need them."""
        workers = [w for w, _ in self._draining.values() if (w.app, w.name) == (app, name)]
        await asyncio.gather(*(self.processes.stop(w) for w in workers))

    def prune_copies(self, app: str) -> None:
        """Delete the build copies of `app` that no record and no draining worker runs from.
        Caller holds the app lock (a deploy records its copy before any endpoint uses it)."""
        keep = {b for w, b in self._draining.values() if w.app == app and b}
        buildcopies.prune_copies(self.store, app, keep)
        buildcopies.prune_runtimes(self.home.app_dir(app))

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

    def ensure_build(self, app: str, build: BuildSpec) -> Path:
        """The immutable copy of the request's build, created on first use, and its record."""
        target = buildcopies.ensure_copy(self.home, app, build)
        assert build.build_id is not None  # ensure_copy refuses a request without one
        self.store.record_build(app, build.build_id, build.archive, str(target), build.manifest)
        return target

    def ports_in_use(self) -> set[int]:
        """Ports recorded for any endpoint (bound or about to be) or still draining."""
        recorded = {int(r["port"]) for r in self.store.list_endpoints() if r.get("port")}
        return recorded | {w.port for w, _ in self._draining.values()}

    def write_endpoints_file(self, app: str) -> None:
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
