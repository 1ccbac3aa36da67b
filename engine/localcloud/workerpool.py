"""The worker pool: a fork server (`runtime.forkserver`) per interpreter, owned by the service.

A worker started through it skips the interpreter's start and the runtime's imports: the fork
server has them loaded and forks. The started process is what a spawned worker is (its own
session, the same environment, working directory, log pipe and command line), so stopping,
adoption after a service restart and stray detection treat both alike.

Each fork server listens on a unix socket in a private directory and holds a pipe from the
service on its stdin: it exits when the service does (a killed service included), leaving its
workers running. When a server is not ready, has died or refuses a start, `spawn` answers None
and the caller starts a fresh interpreter (today's path); a dead server is started again.
`FLASH_WORKER_POOL=off` in the service's environment turns the pool off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from engine.home import Home, ensure_private_dir

__all__ = ["POOL_ENV", "ForkedChild", "WorkerPool", "pool_enabled"]

POOL_ENV = "FLASH_WORKER_POOL"
# Room (bytes) the fork server's command line keeps for its children's: a forked worker
# rewrites it to `python -m runtime.worker --build-dir ... --resource ... --port ...`.
_CMDLINE_ROOM = 4096
# sockaddr_un's sun_path holds 107 bytes and a NUL; a home too deep for the socket's path
# gets a private directory in the system's temporary directory.
_MAX_SOCKET_PATH = 107
# A socket's own name: <service pid>-<n>.s, bound as <name>.new first (runtime.forkserver).
_SOCKET_NAME_ROOM = 24
# Padding in the fork server's environment: room for its workers' environments in /proc
# (a forked worker rewrites its /proc environ to its own, as it does its command line).
_ROOM_ENV = "FLASH_FORKSERVER_ROOM"
_ENVIRON_ROOM = 64 * 1024
_REQUEST_TIMEOUT = 5.0
# A fork server that died before it was ready (a broken environment) is not started again
# for this long: meanwhile every start falls back to a fresh interpreter.
_RETRY_AFTER = 60.0


def pool_enabled(environ: Mapping[str, str]) -> bool:
    """False when `FLASH_WORKER_POOL=off` (every worker then starts a fresh interpreter)."""
    return environ.get(POOL_ENV, "").strip().lower() not in ("off", "0", "false", "no")


@dataclass
class ForkedChild:
    """A worker forked by a fork server: its exit status comes over the start's connection."""

    pid: int
    create_time: float
    conn: socket.socket | None
    returncode: int | None = None
    # The connection ended without an exit report (the fork server died): the process is
    # then watched by pid and start time, and its exit status is unknown.
    lost: bool = False
    _exited: bool = field(default=False, repr=False)

    def poll(self) -> int | None:
        """The exit status once the process has exited and it is known, else None."""
        self._read()
        return self.returncode

    def alive(self) -> bool:
        """Whether the process still runs."""
        self._read()
        if self._exited:
            return False
        if not self.lost:
            return True
        try:
            process = psutil.Process(self.pid)
            running = (
                abs(process.create_time() - self.create_time) < 0.05
                and process.status() != psutil.STATUS_ZOMBIE
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            running = False
        self._exited = not running
        return running

    def wait(self, timeout: float) -> int | None:
        """Wait up to `timeout` seconds for the exit; subprocess.TimeoutExpired past it."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout)
            time.sleep(0.01)
        return self.returncode

    def _read(self) -> None:
        if self.conn is None:
            return
        while True:
            try:
                data = self.conn.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._close()
                if not self._exited:
                    self.lost = True
                return
            with contextlib.suppress(ValueError):
                message = json.loads(data)
                if isinstance(message, dict) and "exit" in message:
                    self.returncode = int(message["exit"])
                    self._exited = True
                    self._close()
                    return

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _ForkServer:
    """One running fork server (the process, its socket, its lifeline)."""

    def __init__(self, interpreter: str, socket_path: Path, env: Mapping[str, str], log: Path):
        self.interpreter = interpreter
        self.socket_path = socket_path
        self.env = dict(env)
        self.started_at = time.monotonic()
        self.was_ready = False
        environ = {**env, "PYTHONUNBUFFERED": "1", _ROOM_ENV: "." * _ENVIRON_ROOM}
        # The bytes of its /proc environ: a worker's must fit (see runtime.forkserver).
        self.environ_room = _environ_size(environ)
        output = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.proc = subprocess.Popen(
                [
                    interpreter,
                    "-m",
                    "runtime.forkserver",
                    "--socket",
                    str(socket_path),
                    "--room",
                    "." * _CMDLINE_ROOM,
                ],
                # Its lifeline: when the service exits, this pipe closes and so does the server.
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=output,
                cwd="/",
                env=environ,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(output)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        self.was_ready = self.was_ready or (self.alive() and self.socket_path.exists())
        return self.was_ready and self.alive()

    def close(self, timeout: float) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()


class WorkerPool:
    """The fork servers of one service, by interpreter path."""

    def __init__(self, home: Home, *, enabled: bool) -> None:
        self.home = home
        self.enabled = enabled
        self._servers: dict[str, _ForkServer] = {}
        self._count = 0
        self._socket_dir: Path | None = None
        self._temporary_dir = False
        # Starts run in threads (see Supervisor._spawn): one at a time may start a server.
        self._lock = threading.Lock()

    def start(self, interpreter: str, env: Mapping[str, str]) -> None:
        """Start the fork server of `interpreter` unless one runs (it gets `env`)."""
        if not self.enabled:
            return
        with self._lock:
            self._start(interpreter, env)

    def _start(self, interpreter: str, env: Mapping[str, str]) -> None:
        server = self._servers.get(interpreter)
        if server is not None and server.alive():
            return
        if server is not None:
            if not server.was_ready and time.monotonic() - server.started_at < _RETRY_AFTER:
                return  # it failed at start: workers start fresh interpreters for a while
            self._say(
                f"the fork server of {interpreter} (pid {server.proc.pid}) exited with code "
                f"{server.proc.returncode}; starting another"
            )
            server.close(1.0)
        self._count += 1
        socket_path = self._sockets() / f"{os.getpid()}-{self._count}.s"
        log = self.home.cloud_dir / "forkserver.log"
        self._servers[interpreter] = _ForkServer(interpreter, socket_path, env, log)

    async def ready(self, interpreter: str, timeout: float) -> bool:
        """Wait (bounded) until the fork server of `interpreter` accepts starts."""
        server = self._servers.get(interpreter)
        if not self.enabled or server is None:
            return False
        deadline = time.monotonic() + timeout
        while not server.ready():
            if not server.alive() or time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def server_pid(self, interpreter: str) -> int | None:
        """The pid of the running fork server of `interpreter`, if any."""
        server = self._servers.get(interpreter)
        return server.proc.pid if server is not None and server.alive() else None

    def spawn(
        self, argv: Sequence[str], log_fd: int, *, cwd: str, env: Mapping[str, str]
    ) -> ForkedChild | None:
        """Fork `argv` (`argv[0]` is the interpreter) from its fork server; None when the
        server cannot (not started, not ready, dead, the command line does not fit): the
        caller starts a fresh process instead. `log_fd` stays the caller's to close."""
        if not self.enabled:
            return None
        interpreter = argv[0]
        server = self._servers.get(interpreter)
        if server is None:
            return None
        if not server.alive():
            self._say(f"fork server unavailable: {_what(argv)} starts a fresh interpreter")
            self.start(interpreter, server.env)
            return None
        if not server.ready():
            self._say(f"fork server not ready: {_what(argv)} starts a fresh interpreter")
            return None
        if sum(len(item.encode()) + 1 for item in argv) > _CMDLINE_ROOM:
            return None
        if _environ_size(env) > server.environ_room:
            self._say(f"a worker's environment is larger than {server.environ_room} bytes")
            return None
        request = json.dumps({"argv": list(argv), "env": dict(env), "cwd": cwd}).encode()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.settimeout(_REQUEST_TIMEOUT)
            conn.connect(str(server.socket_path))
            socket.send_fds(conn, [request], [log_fd])
            reply = json.loads(conn.recv(4096) or b"{}")
            pid = int(reply["pid"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            conn.close()
            self._say(f"fork server refused a start ({exc}): starting a fresh interpreter")
            return None
        conn.setblocking(False)
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            create_time = time.time()
        return ForkedChild(pid, create_time, conn)

    def close(self, timeout: float = 5.0) -> None:
        """Stop every fork server (their workers run on)."""
        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
        for server in servers:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                server.close(timeout)
        if self._socket_dir is not None and self._temporary_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._socket_dir = None

    def _sockets(self) -> Path:
        if self._socket_dir is None:
            directory = ensure_private_dir(self.home.cloud_dir / "pool")
            if len(str(directory).encode()) + 1 + _SOCKET_NAME_ROOM > _MAX_SOCKET_PATH:
                directory = Path(tempfile.mkdtemp(prefix="flash-pool-"))
                self._temporary_dir = True
            self._socket_dir = directory
        return self._socket_dir

    @staticmethod
    def _say(message: str) -> None:
        """A line in the service's log (its stderr)."""
        print(f"worker pool: {message}", file=sys.stderr, flush=True)


def _environ_size(environ: Mapping[str, str]) -> int:
    """The bytes `environ` takes in a process's environment block."""
    return sum(len(f"{key}={value}".encode()) + 1 for key, value in environ.items())


def _what(argv: Sequence[str]) -> str:
    """The worker `argv` starts, for the service's log."""
    items = list(argv)
    if "--resource" in items[:-1]:
        return f"worker {items[items.index('--resource') + 1]!r}"
    return "a worker"
