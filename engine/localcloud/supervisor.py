"""The supervisor: runs, watches, restarts, re-adopts and stops the endpoints' worker processes.

It lives inside the local cloud service. Its rules:

- The database is written BEFORE a process is acted on (record, then spawn; pid recorded right
  after spawn), so a SIGKILL of the service at any point leaves a record that explains every
  process: on the next start, live workers whose pid, start time and command line match their
  record are re-adopted; a recorded worker that is gone is started again; a worker process of
  this home that no record explains (killed between spawn and pid write) is terminated.
- Workers run from an immutable copy of the build (`<home>/apps/<app>/builds/<build_id>`,
  extracted from the build's archive, whose SHA-256 is the build id), so rebuilding the project
  does not change a running endpoint until it is redeployed. Copies are private (0700/0600)
  and made under a temporary name, renamed when complete; what a crash leaves half made is
  removed at the next start.
- A worker gets its own key, its app's endpoint table and the service's environment minus
  everything that leads to the home (see `_worker_environ`): user code runs in it.
- Each worker is its own session (process group): signals to the service's group (Ctrl-C in a
  terminal) do not reach it, it survives the service, and stopping it signals the whole group
  (anything the user's code spawned goes too).
- A worker that exits unexpectedly is restarted after an exponential backoff; after
  `crash_limit` crashes within `crash_window` seconds the endpoint is `failed`, with the last
  log lines recorded (the import error of a broken handler, typically).
- Deploys and undeploys of one app are serialised by a per-app lock (one service per home, so
  an in-process lock is enough; the database's own locking protects against anything else).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from engine.home import DIR_MODE, FILE_MODE, HOME_ENV, Home, write_private
from engine.localcloud import logfiles
from engine.localcloud.store import Store, bound_text
from runtime import logline
from runtime.worker import RECYCLE_EXIT_CODE

__all__ = [
    "DeployRequest",
    "EndpointSpec",
    "Supervisor",
    "SupervisorSettings",
    "Worker",
]

Emit = Callable[[dict[str, Any]], None]

WORKER_MODULE = "runtime.worker"
BUILD_MARKER = ".flash-build-complete"
# Inherited FLASH_* variables a worker still gets: its documented settings. Every other one
# (the home, the service's settings, registry pointers, keys) stays with the service.
_WORKER_SETTINGS = frozenset(
    {
        "FLASH_WORKER_CONCURRENCY",
        "FLASH_JOB_RETENTION",
        "FLASH_RUNSYNC_WAIT",
        "FLASH_CALL_TIMEOUT",
        "FLASH_HEADER_TIMEOUT",
        "FLASH_ENDPOINTS_TTL",
        "FLASH_IS_LIVE_PROVISIONING",
        "FLASH_SHUTDOWN_TIMEOUT",
        "FLASH_EXECUTION_TIMEOUT",
        "FLASH_REQUEST_TIMEOUT",
        "FLASH_MAX_STUCK",
        "FLASH_RECYCLE_DELAY",
        "FLASH_QUEUE_MAX_JOBS",
        "FLASH_QUEUE_MAX_BYTES",
        "FLASH_RESULTS_MAX_BYTES",
        "FLASH_MAX_BODY_BYTES",
        "FLASH_JSON_MAX_DEPTH",
    }
)
# Statuses in which an endpoint is meant to be running: a worker found dead at service start
# (machine reboot, SIGKILL) is started again. `stopped` (by `cloud stop`) and `failed` stay
# down until the next deploy.
from engine.status import RUNNING as _WANTED  # noqa: E402 - the one list of running states


@dataclass
class SupervisorSettings:
    """Tunables; the service reads overrides from `FLASH_LOCALCLOUD_*` environment variables."""

    backoff_base: float = 0.5
    backoff_max: float = 10.0
    crash_limit: int = 5
    crash_window: float = 60.0
    ready_timeout: float = 30.0
    stop_timeout: float = 5.0
    monitor_interval: float = 0.1
    log_max_bytes: int = logfiles.DEFAULT_MAX_BYTES
    log_keep: int = logfiles.DEFAULT_KEEP
    worker_shutdown_timeout: float = 3.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SupervisorSettings:
        """Defaults overridden by `FLASH_LOCALCLOUD_<FIELD>` (upper case) when set."""
        env = os.environ if environ is None else environ
        settings = cls()
        for name, current in vars(cls()).items():
            raw = env.get(f"FLASH_LOCALCLOUD_{name.upper()}", "").strip()
            if raw:
                with contextlib.suppress(ValueError):
                    setattr(settings, name, type(current)(float(raw)))
        return settings


@dataclass
class EndpointSpec:
    """One endpoint as the engine wants it deployed."""

    name: str
    resource_type: str
    is_load_balanced: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str | None = None
    code_hash: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EndpointSpec:
        """From the JSON body of a deploy request."""
        return cls(
            name=str(data["name"]),
            resource_type=str(data.get("resource_type") or ""),
            is_load_balanced=bool(data.get("is_load_balanced")),
            config=dict(data.get("config") or {}),
            config_hash=data.get("config_hash"),
            code_hash=data.get("code_hash"),
        )


@dataclass
class DeployRequest:
    """What to deploy (create/update) and remove for one app, from which build."""

    app: str
    endpoints: list[EndpointSpec]
    remove: list[str] = field(default_factory=list)
    build_id: str | None = None
    archive: str | None = None
    build_dir: str | None = None
    manifest: dict[str, Any] | None = None
    project_path: str | None = None
    environment: str = "local"
    force: bool = False
    ready_timeout: float | None = None

    @classmethod
    def from_dict(cls, app: str, data: dict[str, Any]) -> DeployRequest:
        """From the JSON body of a deploy request."""
        build = data.get("build") or {}
        return cls(
            app=app,
            endpoints=[EndpointSpec.from_dict(e) for e in data.get("endpoints") or []],
            remove=[str(n) for n in data.get("remove") or []],
            build_id=build.get("build_id"),
            archive=build.get("archive"),
            build_dir=build.get("build_dir"),
            manifest=build.get("manifest"),
            project_path=data.get("project_path"),
            environment=str(data.get("environment") or "local"),
            force=bool(data.get("force")),
            ready_timeout=data.get("ready_timeout"),
        )


@dataclass
class Worker:
    """A running worker process (spawned by this service, or adopted from a previous one)."""

    app: str
    name: str
    pid: int
    create_time: float
    port: int
    proc: subprocess.Popen[bytes] | None = None
    expected_exit: bool = False
    # The process writing its output to the log file (only for workers spawned here).
    log_writer: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        """Whether the process is still running (and is still the same process)."""
        if self.proc is not None:
            return self.proc.poll() is None
        try:
            process = psutil.Process(self.pid)
            return (
                abs(process.create_time() - self.create_time) < 0.05
                and process.status() != psutil.STATUS_ZOMBIE
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    def exit_code(self) -> int | None:
        """The exit status when known (only for our own children)."""
        return self.proc.returncode if self.proc is not None else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pick_port(taken: set[int]) -> int:
    """A free port not in `taken` (ports promised to workers that have not bound yet)."""
    for _ in range(50):
        port = free_port()
        if port not in taken:
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1")


def port_is_free(port: int) -> bool:
    """Whether `port` can be bound on 127.0.0.1 (with SO_REUSEADDR, as the worker binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _worker_environ(
    environ: Mapping[str, str], home_root: Path, secrets: list[str]
) -> dict[str, str]:
    """The service's environment as a worker inherits it: nothing that leads to the home.

    User code runs in the worker; it must not be told where the home (token, database, other
    apps' keys) is, nor be handed a secret the service happens to hold. A path list (PATH...)
    loses only its entries inside the home; any other value naming the home is left out.
    """
    root = str(home_root)

    def inside_home(item: str) -> bool:
        return item.rstrip(os.sep) == root or item.startswith(root + os.sep)

    inherited = {}
    for name, value in environ.items():
        if name == HOME_ENV or (name.startswith("FLASH_") and name not in _WORKER_SETTINGS):
            continue
        if any(secret in value for secret in secrets if secret):
            continue
        items = value.split(os.pathsep)
        kept = [item for item in items if not inside_home(item)]
        if kept != items:
            if len(items) == 1 or not kept:
                continue
            value = os.pathsep.join(kept)
        if root not in value:
            inherited[name] = value
    return inherited


def _make_private(root: Path) -> None:
    """Directories 0700 and files 0600 (0700 if executable) under `root`, `root` included."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue  # the data filter keeps symlinks inside the copy; their mode is unused
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            os.chmod(path, DIR_MODE)
        else:
            os.chmod(path, DIR_MODE if mode & stat.S_IXUSR else FILE_MODE)


def _arg(cmdline: list[str], flag: str) -> str | None:
    for index, item in enumerate(cmdline[:-1]):
        if item == flag:
            return cmdline[index + 1]
    return None


class Supervisor:
    """Owns the worker processes of every app of one home."""

    def __init__(self, home: Home, store: Store, settings: SupervisorSettings | None = None):
        self.home = home
        self.store = store
        self.settings = settings or SupervisorSettings()
        self.workers: dict[tuple[str, str], Worker] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._restarts: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._monitor: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._apps_root = str(self.home.root / "apps") + os.sep

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover from the database (adopt, clean up, restart), then watch the workers."""
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(1.0), trust_env=False)
        await asyncio.to_thread(self._remove_partial_builds)
        await self._recover()
        self._monitor = asyncio.get_running_loop().create_task(self._monitor_loop())

    async def close(self, *, stop_workers: bool) -> None:
        """Stop watching; with `stop_workers`, stop every worker (status `stopped`)."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        for task in list(self._restarts.values()) + list(self._tasks):
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

    def _is_our_worker(self, cmdline: list[str]) -> bool:
        if WORKER_MODULE not in cmdline:
            return False
        build_dir = _arg(cmdline, "--build-dir") or ""
        return build_dir.startswith(self._apps_root)

    def _matches_record(self, record: dict[str, Any]) -> psutil.Process | None:
        pid, started = record.get("pid"), record.get("pid_started")
        if not pid or started is None:
            return None
        try:
            process = psutil.Process(int(pid))
            if abs(process.create_time() - float(started)) >= 0.05:
                return None  # the pid was reused by another process
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            cmdline = process.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        if not self._is_our_worker(cmdline):
            return None
        if _arg(cmdline, "--resource") != record["name"]:
            return None
        # builds live in <home>/apps/<app>/builds/<id>: the app must match too
        if Path(_arg(cmdline, "--build-dir") or "").parent.parent.name != record["app"]:
            return None
        return process

    async def _recover(self) -> None:
        to_start: list[dict[str, Any]] = []
        adopted: set[int] = set()
        for record in self.store.list_endpoints():
            process = self._matches_record(record)
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
        for process in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                cmdline = process.info.get("cmdline") or []
                if process.pid in adopted or not self._is_our_worker(cmdline):
                    continue
                await asyncio.to_thread(_terminate, process, self.settings.stop_timeout)
                self.store.add_event(
                    "killed_unknown",
                    f"terminated unrecorded worker pid {process.pid}",
                    app=Path(_arg(cmdline, "--build-dir") or "").parent.parent.name or None,
                    data={"resource": _arg(cmdline, "--resource"), "pid": process.pid},
                )
        for record in to_start:
            self.spawn_task(self._start_recorded(record["app"], record["name"], "recovered"))

    async def _confirm_ready(self, worker: Worker) -> None:
        ok, _ = await self._wait_ready(worker, self.settings.ready_timeout)
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
            port_changed = not record.get("port") or not port_is_free(int(record["port"]))
            worker = self._spawn(record, new_port=port_changed)
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

    def _token(self) -> str:
        """The service's API token ("" when it has none yet): workers must never see it."""
        try:
            return self.home.token_file.read_text().strip()
        except OSError:
            return ""

    def _spawn(self, record: dict[str, Any], *, new_port: bool = False) -> Worker:
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
        build_path = record["build_path"]
        env = _worker_environ(os.environ, self.home.root, [self._token()])
        user_env = (record.get("config") or {}).get("env") or {}
        if isinstance(user_env, dict):
            env.update({str(k): str(v) for k, v in user_env.items() if isinstance(v, str)})
        env.update(
            {
                "FLASH_ENDPOINT_KEY": key,
                "FLASH_ENDPOINTS_FILE": str(self.home.endpoints_file(app)),
                "FLASH_RESOURCE_NAME": name,
                "FLASH_APP_NAME": app,
                "FLASH_LOCALCLOUD_WORKER": f"{app}/{name}",
                "FLASH_SHUTDOWN_TIMEOUT": str(self.settings.worker_shutdown_timeout),
                # Where a stopping worker leaves its jobs' statuses for the next one (named
                # like the log's rotations, so that an undeploy removes it with them).
                "FLASH_JOB_JOURNAL": str(logfiles.log_path(self.home.logs_dir(app), name))
                + ".jobs",
                "PYTHONUNBUFFERED": "1",
                # Its output goes to a log (through the log writer's pipe): stamp each line.
                logline.STAMP_ENV: "1",
            }
        )
        log = logfiles.log_path(self.home.logs_dir(app), name)
        with contextlib.suppress(OSError):  # a full disk must not keep the worker down
            logfiles.append_marker(
                log, f"starting worker on port {port} (build {str(record.get('build_id'))[:12]})"
            )
        cmd = [
            sys.executable,
            "-m",
            WORKER_MODULE,
            "--build-dir",
            build_path,
            "--resource",
            name,
            "--port",
            str(port),
        ]
        # The worker writes into a pipe; its log writer holds the file's cap (see logfiles).
        log_writer, fd = logfiles.start_writer(
            log, self.settings.log_max_bytes, self.settings.log_keep
        )
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                cwd=build_path,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(fd)
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = time.time()
        url = f"http://127.0.0.1:{port}"
        # Watched from now on, even if recording its pid fails (a full disk): a retry then
        # finds it running instead of starting a second one.
        worker = Worker(app, name, proc.pid, create_time, port, proc, log_writer=log_writer)
        self.workers[(app, name)] = worker
        self.store.upsert_endpoint(
            app,
            name,
            pid=proc.pid,
            pid_started=create_time,
            port=port,
            url=url,
            started_at=time.time(),
        )
        return worker

    async def _wait_ready(self, worker: Worker, timeout: float) -> tuple[bool, str]:
        """Poll /ping until 200; (False, reason) if the process exits or the deadline passes."""
        assert self._http is not None
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{worker.port}/ping"
        while time.monotonic() < deadline:
            if not worker.alive():
                return False, f"worker exited (code {worker.exit_code()}) before it was ready"
            try:
                response = await self._http.get(url, timeout=0.5)
                if response.status_code == 200:
                    return True, ""
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.02)
        return False, f"not ready within {timeout:.0f}s"

    async def _stop_worker(self, worker: Worker) -> None:
        """SIGTERM the worker's process group, wait, SIGKILL if it lingers; reap it."""
        worker.expected_exit = True
        if worker.alive():
            with contextlib.suppress(OSError):
                logfiles.append_marker(
                    logfiles.log_path(self.home.logs_dir(worker.app), worker.name),
                    f"stopping worker pid {worker.pid}",
                )
            _signal_group(worker.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.settings.stop_timeout
            while worker.alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if worker.alive():
                _signal_group(worker.pid, signal.SIGKILL)
                deadline = time.monotonic() + 2.0
                while worker.alive() and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
        else:
            # Its session may still hold children the user code started.
            _signal_group(worker.pid, signal.SIGKILL, group_only=True)
        if worker.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=1.0)
        await self._drain_log(worker, 1.0)
        self.workers.pop((worker.app, worker.name), None)

    async def _drain_log(self, worker: Worker, timeout: float) -> None:
        """Wait (bounded) for the worker's log writer to copy its last output, and reap it."""
        deadline = time.monotonic() + timeout
        writer = worker.log_writer
        # A child the user's code started may still hold the pipe: then the writer lives on
        # (it keeps logging that child) and we stop waiting at the deadline.
        if writer is not None:
            while writer.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return
        # An adopted worker: its writer was started by an earlier service; find it by its file.
        log = str(logfiles.log_path(self.home.logs_dir(worker.app), worker.name))
        found = await asyncio.to_thread(_log_writer_of, log)
        while found is not None and time.monotonic() < deadline:
            with contextlib.suppress(psutil.Error):
                if not found.is_running() or found.status() == psutil.STATUS_ZOMBIE:
                    return
            await asyncio.sleep(0.01)

    # -- monitoring -----------------------------------------------------------------------

    async def _monitor_loop(self) -> None:
        # Log rotation is not done here: each worker's log writer holds its own file's cap.
        while True:
            for worker in list(self.workers.values()):
                if worker.expected_exit or worker.alive():
                    continue
                self.workers.pop((worker.app, worker.name), None)
                self.spawn_task(self._handle_crash(worker, time.time()))
            await asyncio.sleep(self.settings.monitor_interval)

    async def _handle_crash(self, worker: Worker, crashed_at: float) -> None:
        """Record a worker's unexpected exit, retrying with backoff until it is written.

        A full disk (ENOSPC, or SQLite's "database or disk is full") must neither kill the
        monitor nor leave the record claiming a live worker: the attempt is repeated, and
        `_on_crash` is safe to repeat (the crash keeps its time; written events are not
        written again).
        """
        await self._drain_log(worker, 2.0)
        done: set[str] = set()
        delay = 0.05
        while True:
            try:
                self._on_crash(worker, crashed_at=crashed_at, done=done)
                return
            except (OSError, sqlite3.Error) as exc:
                print(
                    f"supervisor: recording the exit of {worker.app}/{worker.name} failed "
                    f"({exc}); retrying in {delay:.2f}s",
                    file=sys.stderr,
                )
            except Exception as exc:  # a bad record: reported, the monitor lives on
                print(f"supervisor: crash handling failed: {exc}", file=sys.stderr)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _log_tail(self, app: str, name: str, count: int) -> list[str]:
        """The last lines of an endpoint's log, keys redacted: they go into records and events."""
        log = logfiles.log_path(self.home.logs_dir(app), name)
        keys = list(self.store.app_keys(app).values())
        return logfiles.redact(logfiles.plain_lines(logfiles.tail_lines(log, count)), keys)

    def _on_crash(
        self, worker: Worker, *, crashed_at: float | None = None, done: set[str] | None = None
    ) -> None:
        """Record a crash and schedule the restart (or fail the endpoint); safe to repeat with
        the same `crashed_at` and `done` after a failed write."""
        app, name = worker.app, worker.name
        done = set() if done is None else done
        record = self.store.get_endpoint(app, name)
        if record is None:
            return
        if record.get("pid") not in (None, worker.pid):
            return  # a deploy has started another worker meanwhile: this crash is history
        code = worker.exit_code()
        log = logfiles.log_path(self.home.logs_dir(app), name)
        if code == RECYCLE_EXIT_CODE:
            self._on_recycle(worker, log)
            return
        if "marker" not in done:
            # The log is a courtesy; a full disk must not stop the record from being written.
            with contextlib.suppress(OSError):
                logfiles.append_marker(log, f"worker pid {worker.pid} exited (code {code})")
            done.add("marker")
        tail = self._log_tail(app, name, 30)
        now = time.time() if crashed_at is None else crashed_at
        window = self.settings.crash_window
        previous = [t for t in record.get("crash_times") or [] if now - t < window and t != now]
        crashes = [*previous, now]
        last_error = "\n".join(tail[-20:])
        if "crashed" not in done:
            self.store.add_event(
                "crashed",
                f"worker pid {worker.pid} exited (code {code})",
                app=app,
                endpoint=name,
                data={"exit_code": code, "pid": worker.pid},
            )
            done.add("crashed")
        if len(crashes) >= self.settings.crash_limit:
            self.store.upsert_endpoint(
                app,
                name,
                status="failed",
                pid=None,
                pid_started=None,
                crash_times=crashes,
                last_error=last_error,
            )
            if "failed" not in done:
                self.store.add_event(
                    "failed",
                    f"crashed {len(crashes)} times in {window:.0f}s; not restarting",
                    app=app,
                    endpoint=name,
                    data={"last_lines": tail[-20:]},
                )
                done.add("failed")
            with contextlib.suppress(OSError):
                logfiles.append_marker(log, f"endpoint failed after {len(crashes)} crashes")
            return
        delay = min(self.settings.backoff_max, self.settings.backoff_base * 2 ** (len(crashes) - 1))
        self.store.upsert_endpoint(
            app,
            name,
            status="unhealthy",
            pid=None,
            pid_started=None,
            crash_times=crashes,
            last_error=last_error,
        )
        with contextlib.suppress(OSError):
            logfiles.append_marker(log, f"restarting in {delay:.1f}s")
        self._restarts[(app, name)] = asyncio.get_running_loop().create_task(
            self._restart_later(app, name, delay)
        )

    def _on_recycle(self, worker: Worker, log: Path) -> None:
        """A worker that recycled itself (stuck calls, its log says which): restart it now.

        Not a crash: it does not count towards `crash_limit`.
        """
        app, name = worker.app, worker.name
        message = f"worker pid {worker.pid} recycled itself (stuck calls); restarting"
        logfiles.append_marker(log, message)
        self.store.add_event("recycled", message, app=app, endpoint=name)
        self.store.upsert_endpoint(app, name, status="unhealthy", pid=None, pid_started=None)
        self._restarts[(app, name)] = asyncio.get_running_loop().create_task(
            self._restart_later(app, name, 0.0, "recycle")
        )

    async def _restart_later(
        self, app: str, name: str, delay: float, reason: str = "crash"
    ) -> None:
        try:
            await asyncio.sleep(delay)
            while True:
                try:
                    await self._start_recorded(app, name, reason)
                    return
                except (OSError, sqlite3.Error) as exc:
                    # A full disk: try again later rather than leave the endpoint down.
                    print(
                        f"supervisor: restarting {app}/{name} failed ({exc}); retrying",
                        file=sys.stderr,
                    )
                    delay = min(max(delay, 0.05) * 2, self.settings.backoff_max)
                    await asyncio.sleep(delay)
        finally:
            current = asyncio.current_task()
            if self._restarts.get((app, name)) is current:
                self._restarts.pop((app, name), None)

    def _cancel_restart(self, app: str, name: str) -> None:
        task = self._restarts.pop((app, name), None)
        if task is not None:
            task.cancel()

    # -- builds ---------------------------------------------------------------------------

    def _ensure_build(self, request: DeployRequest) -> Path:
        """The immutable copy of the request's build, created on first use."""
        if not request.build_id:
            raise ValueError("deploy request without a build id")
        if any(c not in "0123456789abcdefABCDEF" for c in request.build_id):
            raise ValueError("malformed build id")
        target = self.home.builds_dir(request.app) / request.build_id
        if (target / BUILD_MARKER).is_file():
            return target
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            archive = Path(request.archive) if request.archive else None
            if archive is not None and archive.is_file():
                if _sha256(archive) != request.build_id:
                    raise ValueError(
                        f"{archive} no longer matches build {request.build_id[:12]} "
                        "(rebuilt meanwhile?); build and deploy again"
                    )
                tmp.mkdir(mode=0o700)
                with tarfile.open(archive, "r:gz") as tar:
                    tar.extractall(tmp, filter="data")
            elif request.build_dir and Path(request.build_dir).is_dir():
                shutil.copytree(
                    request.build_dir,
                    tmp,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )
            else:
                raise ValueError("the build has neither an archive nor a build directory")
            (tmp / BUILD_MARKER).write_text(request.build_id + "\n")
            # The archive's modes (0644/0755) would open the copy to other users.
            _make_private(tmp)
            if target.exists():  # an incomplete copy from an interrupted deploy
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.store.record_build(
            request.app, request.build_id, request.archive, str(target), request.manifest
        )
        return target

    def _remove_partial_builds(self) -> None:
        """Delete build copies a crash left half made: temporary extraction directories, and
        copies without their completion marker that no endpoint runs from."""
        apps = self.home.root / "apps"
        if not apps.is_dir():
            return
        used = {r.get("build_path") for r in self.store.list_endpoints()}
        for builds in apps.glob("*/builds"):
            for path in builds.iterdir():
                if not path.is_dir() or path.is_symlink():
                    continue
                partial = path.name.startswith(".") and ".tmp-" in path.name
                unmarked = not (path / BUILD_MARKER).is_file() and str(path) not in used
                if partial or unmarked:
                    shutil.rmtree(path, ignore_errors=True)
                elif stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
                    _make_private(path)  # a copy made before copies were private

    def _prune_builds(self, app: str) -> None:
        """Delete build copies no endpoint runs from any more."""
        used = {r.get("build_id") for r in self.store.list_endpoints(app)}
        for build in self.store.list_builds(app):
            if build["build_id"] not in used:
                shutil.rmtree(build["path"], ignore_errors=True)
                self.store.delete_build(app, build["build_id"])

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

    def _unchanged(self, spec: EndpointSpec, record: dict[str, Any] | None, build_id: str) -> bool:
        if record is None or record["status"] == "failed":
            return False
        worker = self.workers.get((record["app"], spec.name))
        if worker is None or not worker.alive():
            return False
        if spec.config_hash is None or spec.config_hash != record.get("config_hash"):
            return False
        if spec.resource_type != record.get("resource_type"):
            return False
        if spec.code_hash is not None:
            return spec.code_hash == record.get("code_hash")
        return build_id == record.get("build_id")

    async def deploy(self, request: DeployRequest, emit: Emit) -> dict[str, Any]:
        """Create/update `request.endpoints`, remove `request.remove`; returns a summary."""
        app = request.app
        started = time.monotonic()
        async with self.app_lock(app):
            emit({"type": "locked", "app": app})
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
                record = self.store.get_endpoint(app, spec.name)
                if not request.force and self._unchanged(spec, record, request.build_id or ""):
                    results.append({"name": spec.name, "action": "unchanged", "ok": True})
                    emit({"type": "endpoint", "name": spec.name, "action": "unchanged"})
                    continue
                todo.append((spec, "update" if record else "create", record))
            if todo:
                emit({"type": "build", "build_id": request.build_id, "state": "copying"})
                build_path = await asyncio.to_thread(self._ensure_build, request)
                emit({"type": "build", "build_id": request.build_id, "state": "ready"})
                # Records first (status deploying, port chosen), then the endpoint table, so
                # every worker starts with the URLs of all the app's endpoints.
                for spec, _action, record in todo:
                    self._cancel_restart(app, spec.name)
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
                        build_id=request.build_id,
                        build_path=str(build_path),
                        status="deploying",
                        port=port,
                        url=f"http://127.0.0.1:{port}",
                        # A deploy starts a fresh run: status counts restarts and crashes
                        # since the last deploy, so old crashes don't hide the new code's health
                        # (or count towards failing it).
                        restarts=0,
                        crash_times=[],
                        last_error=None,
                    )
                    if self.store.endpoint_key(app, spec.name) is None:
                        self.store.set_endpoint_key(app, spec.name, secrets.token_urlsafe(32))
                self._write_endpoints_file(app)
                outcomes = await asyncio.gather(
                    *(self._deploy_one(app, s, action, timeout, emit) for s, action, _ in todo)
                )
                results.extend(outcomes)
            self._persist_manifest(request)
            self._prune_builds(app)
        ok = all(r.get("ok") for r in results)
        summary = {
            "app": app,
            "ok": ok,
            "results": results,
            "build_id": request.build_id,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        }
        emit({"type": "result", **summary})
        return summary

    async def _deploy_one(
        self, app: str, spec: EndpointSpec, action: str, timeout: float, emit: Emit
    ) -> dict[str, Any]:
        started = time.monotonic()
        name = spec.name
        old = self.workers.get((app, name))
        if old is not None:
            emit({"type": "endpoint", "name": name, "action": action, "state": "stopping"})
            await self._stop_worker(old)
        record = self.store.get_endpoint(app, name)
        assert record is not None
        emit({"type": "endpoint", "name": name, "action": action, "state": "starting"})
        port_taken = not port_is_free(int(record["port"]))
        worker = self._spawn(record, new_port=port_taken)
        if port_taken:
            self._write_endpoints_file(app)
        ok, error = await self._wait_ready(worker, timeout)
        elapsed = round((time.monotonic() - started) * 1000, 1)
        record = self.store.get_endpoint(app, name) or record
        if ok:
            self.store.upsert_endpoint(app, name, status="healthy")
            self.store.add_event(
                "deployed" if action == "create" else "updated",
                f"{action}d, pid {worker.pid}, {record['url']}",
                app=app,
                endpoint=name,
                data={"config_hash": spec.config_hash, "elapsed_ms": elapsed},
            )
        else:
            if not worker.alive():  # its last words are still in the pipe, maybe
                await self._drain_log(worker, 2.0)
            tail = self._log_tail(app, name, 20)
            error = bound_text(error + ("\n" + "\n".join(tail[-12:]) if tail else ""))
            self.store.add_event("deploy_failed", error.splitlines()[0], app=app, endpoint=name)
            if worker.alive():
                self.store.upsert_endpoint(app, name, status="unhealthy", last_error=error)
        emit(
            {
                "type": "endpoint",
                "name": name,
                "action": action,
                "state": "healthy" if ok else "error",
                "elapsed_ms": elapsed,
                "url": record.get("url"),
                **({"error": error} if not ok else {}),
            }
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

    async def _remove(self, app: str, names: list[str], emit: Emit) -> list[dict[str, Any]]:
        async def one(name: str) -> dict[str, Any]:
            started = time.monotonic()
            emit({"type": "endpoint", "name": name, "action": "delete", "state": "stopping"})
            self._cancel_restart(app, name)
            worker = self.workers.get((app, name))
            if worker is not None:
                await self._stop_worker(worker)
            self.store.delete_endpoint(app, name)
            logfiles.remove_logs(logfiles.log_path(self.home.logs_dir(app), name))
            self.store.add_event("undeployed", "undeployed", app=app, endpoint=name)
            elapsed = round((time.monotonic() - started) * 1000, 1)
            emit({"type": "endpoint", "name": name, "action": "delete", "state": "removed"})
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
            self._prune_builds(app)
        summary = {
            "app": app,
            "ok": not missing,
            "results": results,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        }
        emit({"type": "result", **summary})
        return summary

    def _persist_manifest(self, request: DeployRequest) -> None:
        """Record what is deployed, as the state manager (and a mothership) sees it.

        The persisted manifest is the build's manifest restricted to the deployed endpoints,
        each entry with its `config_hash`, `endpoint_url` and `status` (upstream's persisted
        form, flash_facts §5.6); endpoints a partial deploy did not touch keep their entries.
        """
        if not request.manifest:
            return
        previous = self.store.get_manifest(request.app, request.environment) or {}
        old_entries = previous.get("resources") or {}
        new_entries = request.manifest.get("resources") or {}
        resources: dict[str, Any] = {}
        for record in self.store.list_endpoints(request.app):
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
        manifest = {k: v for k, v in request.manifest.items() if k != "resources"}
        manifest["resources"] = resources
        self.store.put_manifest(request.app, request.environment, manifest)


def _signal_group(pid: int, sig: int, *, group_only: bool = False) -> None:
    """Signal the process group led by `pid` (workers are session leaders), else the pid.

    `group_only`: the leader is gone; signal what is left of its group (processes the user's
    code started). Linux does not reuse a pid while it names a live process group, so this
    cannot hit an unrelated group.
    """
    try:
        if group_only:
            os.killpg(pid, sig)
            return
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _log_writer_of(log: str) -> psutil.Process | None:
    """The running log writer process of the log file `log`, if any."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline: list[str] = process.info.get("cmdline") or []
        is_writer = any(part.endswith("logwriter.py") for part in cmdline)
        if is_writer and _arg(cmdline, "--path") == log:
            return process
    return None


def _terminate(process: psutil.Process, timeout: float) -> None:
    """SIGTERM, wait, SIGKILL one unknown worker (and its group)."""
    with contextlib.suppress(psutil.Error, OSError):
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except psutil.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(psutil.TimeoutExpired):
                process.wait(timeout=2.0)
