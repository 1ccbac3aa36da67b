"""Worker processes of one home: start them (environment, log writer), wait until they answer,
stop them, and find them again by pid, start time and command line.

Each worker is its own session (process group): signals to the service's group (Ctrl-C in a
terminal) do not reach it, it survives the service, and stopping it signals the whole group
(anything the user's code spawned goes too).

A worker is forked by its interpreter's fork server when it can be (`workerpool`), else started
as a fresh interpreter; both read the same (command line, environment, session), so finding,
adopting and stopping them is one code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from engine.home import HOME_ENV, Home, ensure_private_dir
from engine.localcloud import logfiles, sandboxing
from engine.localcloud.workerpool import ForkedChild, WorkerPool
from runtime import logline

__all__ = [
    "WORKER_MODULE",
    "Worker",
    "WorkerProcesses",
    "WorkerSettings",
    "terminate",
    "worker_interpreter",
]

WORKER_MODULE = "runtime.worker"
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
        "FLASH_MANIFEST_TTL",
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


def worker_interpreter(record: Mapping[str, Any]) -> str:
    """The interpreter the endpoint of `record` runs on: its environment's (the record's
    `python`), else the local cloud's own."""
    return str(record.get("python") or sys.executable)


@dataclass
class WorkerSettings:
    """How worker processes are run and stopped (the supervisor's settings extend these)."""

    stop_timeout: float = 5.0
    log_max_bytes: int = logfiles.DEFAULT_MAX_BYTES
    log_keep: int = logfiles.DEFAULT_KEEP
    worker_shutdown_timeout: float = 3.0
    # Start workers by forking a pre-imported interpreter (`workerpool`); off: a fresh one each.
    worker_pool: bool = True


@dataclass
class Worker:
    """A running worker process (spawned by this service, or adopted from a previous one)."""

    app: str
    name: str
    pid: int
    create_time: float
    port: int
    # Spawned by this service (Popen), forked by its fork server, or None when adopted.
    proc: subprocess.Popen[bytes] | ForkedChild | None = None
    expected_exit: bool = False
    # The process writing its output to the log file (only for workers spawned here).
    log_writer: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        """Whether the process is still running (and is still the same process)."""
        if isinstance(self.proc, ForkedChild):
            return self.proc.alive()
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


class WorkerProcesses:
    """Starts, waits for, stops and finds the worker processes of one home."""

    def __init__(self, home: Home, settings: WorkerSettings) -> None:
        self.home = home
        self.settings = settings
        self._apps_root = str(home.root / "apps") + os.sep
        self.pool = WorkerPool(home, enabled=settings.worker_pool)

    def log_path(self, app: str, name: str) -> Path:
        """The log file of endpoint `name` of `app`."""
        return logfiles.log_path(self.home.logs_dir(app), name)

    # -- start ----------------------------------------------------------------------------

    def interpreter(self, record: Mapping[str, Any]) -> str:
        """The Python interpreter the worker of `record` runs on."""
        return worker_interpreter(record)

    def start_pool(self) -> None:
        """Start the fork server of the default interpreter (the service's start)."""
        self.pool.start(sys.executable, self._pool_environ())

    async def prepare(self, record: Mapping[str, Any], timeout: float = 5.0) -> None:
        """Have the fork server of `record`'s interpreter ready (bounded) before a start."""
        if not self.pool.enabled:
            return
        interpreter = self.interpreter(record)
        self.pool.start(interpreter, self._pool_environ())
        await self.pool.ready(interpreter, timeout)

    def close_pool(self) -> None:
        """Stop the fork servers (the workers they started run on)."""
        self.pool.close()

    def _pool_environ(self) -> dict[str, str]:
        # What every worker inherits; per-worker variables come with each start.
        return _worker_environ(os.environ, self.home.root, [self._token()])

    def spawn(
        self,
        record: Mapping[str, Any],
        port: int,
        key: str,
        extra_env: Mapping[str, str] | None = None,
    ) -> Worker:
        """Start the worker of the endpoint `record` on `port` with its `key` (and its role's
        variables, `extra_env`: see `roles`)."""
        app, name = record["app"], record["name"]
        build_path = record["build_path"]
        env = _worker_environ(os.environ, self.home.root, [self._token()])
        user_env = (record.get("config") or {}).get("env") or {}
        if isinstance(user_env, dict):
            env.update({str(k): str(v) for k, v in user_env.items() if isinstance(v, str)})
        state = sandboxing.worker_state_dir(self.home, app, name)
        tmp = ensure_private_dir(state / "tmp")
        if sandboxing.sandbox_enabled(os.environ):
            policy = sandboxing.worker_policy(
                self.home,
                app,
                name,
                Path(build_path),
                _user_home(os.environ),
                self.interpreter(record),
            )
            env.update(policy.to_env())
        env.update(
            {
                "FLASH_ENDPOINT_KEY": key,
                "FLASH_ENDPOINTS_FILE": str(self.home.endpoints_file(app)),
                "FLASH_RESOURCE_NAME": name,
                "FLASH_APP_NAME": app,
                "FLASH_LOCALCLOUD_WORKER": f"{app}/{name}",
                "FLASH_SHUTDOWN_TIMEOUT": str(self.settings.worker_shutdown_timeout),
                # Where a stopping worker leaves its jobs' statuses for the next one: in the
                # one directory of the home it may write (its sandbox allows it).
                "FLASH_JOB_JOURNAL": str(state / "jobs.json"),
                # Its own temporary directory: /tmp is not granted when the home is under it.
                "TMPDIR": str(tmp),
                "PYTHONUNBUFFERED": "1",
                # The build copy stays as it was built (and private): no __pycache__ written
                # into it with the worker's umask. Bytecode already there is still read.
                "PYTHONDONTWRITEBYTECODE": "1",
                # Its output goes to a log (through the log writer's pipe): stamp each line.
                logline.STAMP_ENV: "1",
            }
        )
        env.update(extra_env or {})
        log = self.log_path(app, name)
        with contextlib.suppress(OSError):  # a full disk must not keep the worker down
            logfiles.append_marker(
                log, f"starting worker on port {port} (build {str(record.get('build_id'))[:12]})"
            )
        cmd = [
            self.interpreter(record),
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
        forked = self._forked(cmd, fd, cwd=build_path, env=env)
        if forked is not None:
            return Worker(
                app, name, forked.pid, forked.create_time, port, forked, log_writer=log_writer
            )
        proc = logfiles.spawn_detached(cmd, fd, cwd=build_path, env=env)
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = time.time()
        return Worker(app, name, proc.pid, create_time, port, proc, log_writer=log_writer)

    def _forked(
        self, cmd: list[str], fd: int, *, cwd: str, env: Mapping[str, str]
    ) -> ForkedChild | None:
        """`cmd` forked by its interpreter's fork server (closing `fd`), or None (fd kept)."""
        forked = self.pool.spawn(cmd, fd, cwd=cwd, env=env)
        if forked is not None:
            os.close(fd)
        return forked

    def _token(self) -> str:
        """The service's API token ("" when it has none yet): workers must never see it."""
        try:
            return self.home.token_file.read_text().strip()
        except OSError:
            return ""

    @staticmethod
    async def wait_ready(
        worker: Worker, http: httpx.AsyncClient, timeout: float
    ) -> tuple[bool, str]:
        """Poll /ping until 200; (False, reason) if the process exits or the deadline passes."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{worker.port}/ping"
        # A forked worker answers within tens of milliseconds: poll often at first, so the
        # poll adds little to a deploy (or a save in `flash-tui dev`), then every 20 ms.
        delay = 0.005
        while time.monotonic() < deadline:
            if not worker.alive():
                return False, f"worker exited (code {worker.exit_code()}) before it was ready"
            try:
                response = await http.get(url, timeout=0.5)
                if response.status_code == 200:
                    return True, ""
            except httpx.HTTPError:
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)
        return False, f"not ready within {timeout:.0f}s"

    # -- stop -----------------------------------------------------------------------------

    async def stop(self, worker: Worker) -> None:
        """SIGTERM the worker's process group, wait, SIGKILL if it lingers; reap it."""
        worker.expected_exit = True
        if worker.alive():
            with contextlib.suppress(OSError):
                logfiles.append_marker(
                    self.log_path(worker.app, worker.name), f"stopping worker pid {worker.pid}"
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
        await self.drain_log(worker, 1.0)

    async def drain_log(self, worker: Worker, timeout: float) -> None:
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
        log = str(self.log_path(worker.app, worker.name))
        found = await asyncio.to_thread(_log_writer_of, log)
        while found is not None and time.monotonic() < deadline:
            with contextlib.suppress(psutil.Error):
                if not found.is_running() or found.status() == psutil.STATUS_ZOMBIE:
                    return
            await asyncio.sleep(0.01)

    # -- find -----------------------------------------------------------------------------

    def adoptable(self, record: Mapping[str, Any]) -> psutil.Process | None:
        """The running worker `record` describes (same pid, start time, app and endpoint)."""
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
        if not self._is_ours(cmdline):
            return None
        if _arg(cmdline, "--resource") != record["name"]:
            return None
        # builds live in <home>/apps/<app>/builds/<id>: the app must match too
        if _app_of(cmdline) != record["app"]:
            return None
        return process

    def strays(self, adopted: set[int]) -> Iterator[tuple[psutil.Process, str | None, str | None]]:
        """Worker processes of this home not in `adopted`, each with its app and endpoint."""
        for process in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                cmdline = process.info.get("cmdline") or []
                if process.pid in adopted or not self._is_ours(cmdline):
                    continue
                yield process, _app_of(cmdline) or None, _arg(cmdline, "--resource")

    def _is_ours(self, cmdline: list[str]) -> bool:
        if WORKER_MODULE not in cmdline:
            return False
        build_dir = _arg(cmdline, "--build-dir") or ""
        return build_dir.startswith(self._apps_root)


def terminate(process: psutil.Process, timeout: float) -> None:
    """SIGTERM, wait, SIGKILL one unknown worker (and its group)."""
    with contextlib.suppress(psutil.Error, OSError):
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except psutil.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(psutil.TimeoutExpired):
                process.wait(timeout=2.0)


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


def _user_home(environ: Mapping[str, str]) -> Path | None:
    """The user's home directory (its dotfiles hold keys: a worker may not read it)."""
    raw = environ.get("HOME", "").strip()
    try:
        return Path(raw) if raw else Path.home()
    except RuntimeError:
        return None


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


def _app_of(cmdline: list[str]) -> str:
    """The app of a worker's command line: its build is `<home>/apps/<app>/builds/<id>`."""
    return Path(_arg(cmdline, "--build-dir") or "").parent.parent.name


def _arg(cmdline: list[str], flag: str) -> str | None:
    for index, item in enumerate(cmdline[:-1]):
        if item == flag:
            return cmdline[index + 1]
    return None
