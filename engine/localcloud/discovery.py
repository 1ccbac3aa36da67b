"""Finding, starting and stopping the local cloud service of a flash-tui home.

The running service writes `<home>/localcloud/state.json` (pid, process start time, host, port,
token path, started_at). A client reads it, checks that the pid is alive AND is the same process
(start time), then asks `/v1/health` with the token. A state file whose process is gone (the
service was SIGKILLed) is stale: it is removed and a new service is started.

Starting is serialised across processes with an exclusive lock on `<home>/localcloud/start.lock`,
so two CLIs that both find no service start exactly one. The service itself holds
`service.lock` for its whole life (with its pid written in it), so even a start that bypasses
this module cannot produce two services for one home.

The lock is also how a service is found when its state file is lost or damaged while it runs:
the lock holder is the service. Commands then say exactly what is wrong (which file, which
error) instead of starting a second service, and `stop_cloud` stops the holder and its workers.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
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
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import psutil

from engine.home import Home, write_private
from engine.localcloud import logfiles
from engine.localcloud.wire import ShutdownRequest

__all__ = [
    "CloudError",
    "CloudInfo",
    "CloudStateLost",
    "CloudStopped",
    "CloudUnreachable",
    "claim_service_lock",
    "ensure_cloud",
    "kill_home_workers",
    "load_or_create_token",
    "lock_holder",
    "ping",
    "read_state",
    "state_problem",
    "stop_cloud",
    "write_state",
]

DEFAULT_START_TIMEOUT = 20.0


class CloudError(Exception):
    """The local cloud could not be reached, started or stopped; the message says why.

    `status`: the HTTP status of the service's refusal, when it answered one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CloudUnreachable(CloudError):
    """No answer from the service's address (it may have stopped or moved)."""


class CloudStateLost(CloudError):
    """The service runs (it holds the service lock) but cannot be reached through its state file."""

    def __init__(self, message: str, pid: int) -> None:
        super().__init__(message)
        self.pid = pid


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


@dataclass(frozen=True)
class CloudStopped:
    """What `stop_cloud` did: whether a service ran (its pid), whether it had to be killed
    (`forced`), how many orphaned workers were killed, and what was wrong with its state file."""

    was_running: bool
    stopped: bool = True
    pid: int | None = None
    forced: bool = False
    killed_workers: int = 0
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`cloud stop --json`): `pid`, `forced` only when one was running,
        `problem` only when there was one."""
        out: dict[str, Any] = {"was_running": self.was_running, "stopped": self.stopped}
        if self.was_running:
            out.update(pid=self.pid, forced=self.forced)
        out["killed_workers"] = self.killed_workers
        if self.problem is not None:
            out["problem"] = self.problem
        return out


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
    state = {
        "pid": os.getpid(),
        "create_time": process_started(os.getpid()),
        "host": host,
        "port": port,
        "url": f"http://{host}:{port}",
        "token_file": str(home.token_file),
        "started_at": started_at,
    }
    write_private(home.state_file, json.dumps(state, indent=2) + "\n")


def process_started(pid: int) -> float | None:
    """When process `pid` started, as psutil's `create_time` says it (epoch seconds); None when
    it is gone or a zombie. One reading for the state file and every check against it."""
    try:
        # On Linux, /proc says it in two reads, so that finding the running cloud on every
        # command does not import psutil (psutil computes the same: start ticks + boot time).
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            fields = stat_file.read().rpartition(b")")[2].split()
        with open("/proc/stat", "rb") as system_file:
            boot = next(line for line in system_file if line.startswith(b"btime"))
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None  # a Linux without that process
        return _psutil_started(pid)
    except (OSError, StopIteration):
        return _psutil_started(pid)
    if fields[0] == b"Z":
        return None
    return float(fields[19]) / os.sysconf("SC_CLK_TCK") + float(boot.split()[1])


def _psutil_started(pid: int) -> float | None:
    import psutil  # not at the top: a found cloud needs none (process_started)

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _pid_matches(pid: int, create_time: float) -> bool:
    started = process_started(pid)
    return started is not None and abs(started - create_time) < 0.05


def read_state(home: Home, *, remove_stale: bool = True) -> CloudInfo | None:
    """The running service of `home`, or None (a stale state file is removed, unless a service
    holds the lock: see `lock_holder` and `state_problem`)."""
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
    # While a service holds the lock the file is not stale but damaged: it is kept, so that
    # the error can say what is wrong with it.
    if remove_stale and lock_holder(home) is None:
        with contextlib.suppress(FileNotFoundError):
            home.state_file.unlink()
    return None


def state_problem(home: Home) -> str:
    """What is wrong with the state file, in words that name it (for error messages)."""
    path = home.state_file
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"its state file {path} is missing"
    except (OSError, ValueError) as exc:
        return f"its state file {path} is unreadable: {exc}"
    if not isinstance(state, dict):
        return f"its state file {path} is unreadable: not a JSON object"
    try:
        Path(state["token_file"]).read_text(encoding="utf-8")
    except (KeyError, TypeError):
        return f"its state file {path} is unreadable: no token_file"
    except OSError as exc:
        return f"its token file {state['token_file']} is unreadable: {exc}"
    return f"its state file {path} names pid {state.get('pid')}, which is not the service"


def claim_service_lock(home: Home) -> int | None:
    """Take the home's service lock for this process (and write our pid in it): the open
    descriptor, to keep for the service's life, or None when another service holds it."""
    fd = os.open(home.service_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _is_service_of(process: psutil.Process, home: Home) -> bool:
    import psutil  # not at the top: a found cloud needs none (process_started)

    try:
        cmdline = process.cmdline()
    except psutil.Error:
        return False
    if "engine.localcloud" not in cmdline:
        return False
    try:
        return Path(cmdline[cmdline.index("--home") + 1]).resolve() == home.root
    except (ValueError, IndexError):
        return False


def lock_holder(home: Home) -> psutil.Process | None:
    """The service process holding the home's service lock, or None when it is not held."""
    import psutil  # not at the top: a found cloud needs none (process_started)

    try:
        fd = os.open(home.service_lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            held = True
        else:
            held = False
            fcntl.flock(fd, fcntl.LOCK_UN)
        content = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    if not held:
        return None
    with contextlib.suppress(ValueError, psutil.Error):
        # The lock file is this home's: the pid in it needs only to be a local cloud service
        # (it may have been started without --home, through $FLASH_TUI_HOME).
        process = psutil.Process(int(content))
        if "engine.localcloud" in process.cmdline():
            return process
    # A lock file without our pid (written by an older version): look for the process.
    for process in psutil.process_iter(["pid"]):
        if process.pid != os.getpid() and _is_service_of(process, home):
            return process
    return None


def _recover_info(home: Home, process: psutil.Process) -> CloudInfo | None:
    """How to reach a service whose state file is lost: its listening port and the token."""
    import psutil  # not at the top: a found cloud needs none (process_started)

    try:
        token = home.token_file.read_text(encoding="utf-8").strip()
        connections = process.net_connections(kind="tcp4")
        create_time = process_started(process.pid)
    except (OSError, psutil.Error):
        return None
    if create_time is None:
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.ip == "127.0.0.1":
            info = CloudInfo(
                pid=process.pid,
                host="127.0.0.1",
                port=int(conn.laddr.port),
                started_at=create_time,
                create_time=create_time,
                token=token,
            )
            if ping(info):
                return info
    return None


def _lost_state_error(home: Home, holder: psutil.Process) -> CloudStateLost:
    return CloudStateLost(
        f"the local cloud of {home.root} is running (pid {holder.pid}, the holder of "
        f"{home.service_lock}) but {state_problem(home)}; `flash-tui cloud stop` stops it "
        "and its workers, then any command starts a new one",
        holder.pid,
    )


def _check_lock_holder(home: Home, timeout: float) -> None:
    """Raise `CloudStateLost` when a service holds the lock without a usable state file.

    A service that has just started holds the lock before it writes its state file: one
    younger than `timeout` is given until then to write it.
    """
    import psutil  # not at the top: a found cloud needs none (process_started)

    holder = lock_holder(home)
    if holder is None:
        return
    with contextlib.suppress(psutil.Error):
        deadline = time.monotonic() + max(0.0, holder.create_time() + timeout - time.time())
        while time.monotonic() < deadline and holder.is_running():
            if read_state(home, remove_stale=False) is not None:
                return
            time.sleep(0.05)
    if holder.is_running() and read_state(home, remove_stale=False) is None:
        raise _lost_state_error(home, holder)


def ping(info: CloudInfo, timeout: float = 1.0) -> bool:
    """True when the service answers its health route with this token.

    Raises `CloudError` when it answers but refuses the token: waiting or retrying cannot help.
    """
    # The standard library's client: plain HTTP to 127.0.0.1 needs neither httpx's sync
    # stack nor the CA bundle its default TLS context loads (~25 ms of every CLI command).
    connection = http.client.HTTPConnection(info.host, info.port, timeout=timeout)
    try:
        connection.request("GET", "/v1/health", headers=info.headers())
        response = connection.getresponse()
        response.read()
        status = response.status
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    if status in (401, 403):
        raise CloudError(
            f"the local cloud at {info.describe()} (pid {info.pid}) rejected the token "
            f"(HTTP {status}): the token file no longer matches the running "
            "service; stop it with `flash-tui cloud stop` and retry"
        )
    return status == 200


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
    return logfiles.spawn_detached(
        [sys.executable, "-m", "engine.localcloud", "--home", str(home.root)],
        logfiles.open_for_worker(home.service_log),
        cwd=str(home.root),
        env=env,
    )


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
    if info is None:
        _check_lock_holder(home, timeout)
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
        _check_lock_holder(home, timeout)
        # Here, not at the top: only starting a service opens its database (sqlite3, psutil).
        from engine.localcloud.store import StoreError, check_database

        try:
            check_database(home.db_path)
        except StoreError as exc:
            raise CloudError(str(exc)) from None
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
    import psutil  # not at the top: a found cloud needs none (process_started)

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
) -> CloudStopped:
    """Stop the service of `home` (and its workers); returns what was done.

    Asks politely (`POST /v1/shutdown`), waits for the process to exit, escalates to SIGTERM
    then SIGKILL past the deadline. `was_running` is False when nothing was running.
    """
    home = home or Home()
    info = read_state(home)
    problem: str | None = None
    if info is None:
        holder = lock_holder(home)
        if holder is None:
            killed = kill_home_workers(home) if stop_workers else []
            return CloudStopped(was_running=False, killed_workers=len(killed))
        # Its state file is lost: reach it through its socket, or failing that, signals.
        problem = state_problem(home)
        create_time = process_started(holder.pid)
        if create_time is None:
            return CloudStopped(was_running=False)
        info = _recover_info(home, holder) or CloudInfo(
            pid=holder.pid,
            host="127.0.0.1",
            port=0,
            started_at=create_time,
            create_time=create_time,
            token="",
        )
    asked = False
    with contextlib.suppress(httpx.HTTPError):
        if not info.port:
            raise httpx.ConnectError("no port known")
        response = httpx.post(
            f"{info.url}/v1/shutdown",
            headers=info.headers(),
            json=ShutdownRequest(stop_workers=stop_workers).model_dump(),
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
    return CloudStopped(
        was_running=True,
        pid=info.pid,
        forced=forced,
        killed_workers=len(killed),
        problem=problem,
    )
