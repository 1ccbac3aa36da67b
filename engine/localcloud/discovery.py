"""Finding, starting and stopping the local cloud service of a flash-tui home.

The running service writes `<home>/localcloud/state.json` (pid, process start time, host, port,
token path, started_at). A client reads it, checks that the pid is alive AND is the same process
(start time), then asks `/v1/health` with the token. A state file whose process is gone (the
service was SIGKILLed) is stale: it is removed and a new service is started.

Starting is serialised across processes with an exclusive lock on `<home>/localcloud/start.lock`,
so two CLIs that both find no service start exactly one. The service itself holds
`service.lock` for its whole life, so even a start that bypasses this module cannot produce two
services for one home.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from engine.home import Home, write_private

__all__ = [
    "CloudError",
    "CloudInfo",
    "ensure_cloud",
    "kill_home_workers",
    "load_or_create_token",
    "ping",
    "read_state",
    "stop_cloud",
    "write_state",
]

DEFAULT_START_TIMEOUT = 20.0


class CloudError(Exception):
    """The local cloud could not be reached, started or stopped; the message says why."""


@dataclass(frozen=True)
class CloudInfo:
    """How to reach a running service. The token is kept out of `repr`."""

    pid: int
    host: str
    port: int
    started_at: float
    create_time: float
    token: str = field(repr=False)

    @property
    def url(self) -> str:
        """Base URL of the API."""
        return f"http://{self.host}:{self.port}"

    def headers(self) -> dict[str, str]:
        """The Authorization header for the API."""
        return {"Authorization": f"Bearer {self.token}"}

    def describe(self) -> str:
        """`127.0.0.1:PORT` for headers and status lines (no secret)."""
        return f"{self.host}:{self.port}"


def load_or_create_token(home: Home) -> str:
    """The service token: read from the home, or generated (0600) on first use."""
    path = home.token_file
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text(encoding="utf-8").strip()
        if token:
            if (path.stat().st_mode & 0o777) != 0o600:
                os.chmod(path, 0o600)
            return token
    token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    return token


def write_state(home: Home, *, host: str, port: int, started_at: float) -> None:
    """Publish the running service (called by the service itself)."""
    me = psutil.Process(os.getpid())
    state = {
        "pid": me.pid,
        "create_time": me.create_time(),
        "host": host,
        "port": port,
        "url": f"http://{host}:{port}",
        "token_file": str(home.token_file),
        "started_at": started_at,
    }
    write_private(home.state_file, json.dumps(state, indent=2) + "\n")


def _pid_matches(pid: int, create_time: float) -> bool:
    try:
        process = psutil.Process(pid)
        return (
            abs(process.create_time() - create_time) < 0.05
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def read_state(home: Home, *, remove_stale: bool = True) -> CloudInfo | None:
    """The running service of `home`, or None (a stale state file is removed)."""
    try:
        state = json.loads(home.state_file.read_text(encoding="utf-8"))
        token = Path(state["token_file"]).read_text(encoding="utf-8").strip()
        info = CloudInfo(
            pid=int(state["pid"]),
            host=str(state["host"]),
            port=int(state["port"]),
            started_at=float(state["started_at"]),
            create_time=float(state["create_time"]),
            token=token,
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        info = None  # unreadable or half-written by an older version: treat as stale
    if info is not None and _pid_matches(info.pid, info.create_time):
        return info
    if remove_stale:
        with contextlib.suppress(FileNotFoundError):
            home.state_file.unlink()
    return None


def ping(info: CloudInfo, timeout: float = 1.0) -> bool:
    """True when the service answers its health route with this token.

    Raises `CloudError` when it answers but refuses the token: waiting or retrying cannot help.
    """
    try:
        response = httpx.get(
            f"{info.url}/v1/health", headers=info.headers(), timeout=timeout, trust_env=False
        )
    except httpx.HTTPError:
        return False
    if response.status_code in (401, 403):
        raise CloudError(
            f"the local cloud at {info.describe()} (pid {info.pid}) rejected the token "
            f"(HTTP {response.status_code}): the token file no longer matches the running "
            "service; stop it with `flash-tui cloud stop` and retry"
        )
    return response.status_code == 200


@contextlib.contextmanager
def _start_lock(home: Home) -> Iterator[None]:
    fd = os.open(home.start_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _log_tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _spawn_service(home: Home, extra_env: dict[str, str] | None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(extra_env or {})
    fd = os.open(home.service_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.localcloud", "--home", str(home.root)],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            # Detached: its own session, so it outlives the CLI/TUI and their terminal.
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd=str(home.root),
        )
    finally:
        os.close(fd)


def ensure_cloud(
    home: Home | None = None,
    *,
    start: bool = True,
    timeout: float = DEFAULT_START_TIMEOUT,
    extra_env: dict[str, str] | None = None,
) -> CloudInfo:
    """Find the running service of `home`, starting it (detached) when needed and allowed.

    Raises `CloudError` when it is not running and `start` is False, or when it does not
    become healthy within `timeout` seconds (the message includes the end of its log).
    """
    home = home or Home()
    info = read_state(home)
    if info is not None and ping(info):
        return info
    if not start:
        raise CloudError("the local cloud is not running (start it with `flash-tui cloud start`)")
    with _start_lock(home):
        # Someone else may have started it while we waited for the lock.
        info = read_state(home)
        if info is not None and ping(info, timeout=2.0):
            return info
        if info is not None:
            # Alive but not answering: wait for it a little (it may be booting).
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _pid_matches(info.pid, info.create_time):
                if ping(info):
                    return info
                time.sleep(0.05)
            raise CloudError(
                f"the local cloud (pid {info.pid}) is running but not answering; "
                f"see {home.service_log}"
            )
        proc = _spawn_service(home, extra_env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise CloudError(
                    f"the local cloud exited at start (code {code}):\n{_log_tail(home.service_log)}"
                )
            info = read_state(home, remove_stale=False)
            if info is not None and info.pid == proc.pid and ping(info, timeout=0.5):
                return info
            time.sleep(0.03)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        raise CloudError(
            f"the local cloud did not become healthy within {timeout:.0f}s:\n"
            f"{_log_tail(home.service_log)}"
        )


def kill_home_workers(home: Home, timeout: float = 5.0) -> list[int]:
    """Terminate every worker process that runs from a build of `home`; returns their pids.

    Last-resort cleanup (the service normally stops its workers): used by `cloud stop` when
    the service had to be killed, and by tests.
    """
    root = str(home.root / "apps") + os.sep
    victims: list[psutil.Process] = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline: list[str] = process.info.get("cmdline") or []
        if "runtime.worker" not in cmdline:
            continue
        with contextlib.suppress(ValueError, IndexError):
            if cmdline[cmdline.index("--build-dir") + 1].startswith(root):
                victims.append(process)
    for process in victims:
        with contextlib.suppress(psutil.Error, OSError):
            os.killpg(process.pid, signal.SIGTERM)
    _gone, alive = psutil.wait_procs(victims, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.Error, OSError):
            os.killpg(process.pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=2.0)
    return [p.pid for p in victims]


def stop_cloud(
    home: Home | None = None, *, stop_workers: bool = True, timeout: float = 15.0
) -> dict[str, Any]:
    """Stop the service of `home` (and its workers); returns what was done.

    Asks politely (`POST /v1/shutdown`), waits for the process to exit, escalates to SIGTERM
    then SIGKILL past the deadline. `{"was_running": False}` when nothing was running.
    """
    home = home or Home()
    info = read_state(home)
    if info is None:
        killed = kill_home_workers(home) if stop_workers else []
        return {"was_running": False, "stopped": True, "killed_workers": len(killed)}
    asked = False
    with contextlib.suppress(httpx.HTTPError):
        response = httpx.post(
            f"{info.url}/v1/shutdown",
            headers=info.headers(),
            json={"stop_workers": stop_workers},
            timeout=5.0,
            trust_env=False,
        )
        asked = response.status_code == 200
    forced = False
    deadline = time.monotonic() + (timeout if asked else 0.0)
    while time.monotonic() < deadline and _pid_matches(info.pid, info.create_time):
        time.sleep(0.05)
    if _pid_matches(info.pid, info.create_time):
        forced = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and _pid_matches(info.pid, info.create_time):
            time.sleep(0.05)
        if _pid_matches(info.pid, info.create_time):
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
    killed = kill_home_workers(home) if (stop_workers and forced) else []
    with contextlib.suppress(FileNotFoundError):
        if read_state(home, remove_stale=True) is None:
            pass
    return {
        "was_running": True,
        "stopped": True,
        "pid": info.pid,
        "forced": forced,
        "killed_workers": len(killed),
    }
