"""The fake's worker processes: emulated image workers (`runpod_image`) and their logs.

One `ImageWorker` is one process running an endpoint's artifact the way upstream's image does.
Its stdout and stderr are read by a thread that stamps each line with the time it was read and
keeps it (bounded) for the REST v2 log stream; the data plane's own lines about the worker
(started, exited) are kept as `system` lines, like the platform's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from starlette.requests import Request

from fakes.runpod_image import worker_command

__all__ = [
    "STOP_GRACE",
    "ImageWorker",
    "LogRecord",
    "free_port",
    "log_events",
    "log_start",
    "rfc3339",
]

STOP_GRACE = 10.0  # seconds a stopped worker gets between SIGTERM and SIGKILL
_LOG_POLL = 0.05  # seconds between looks for new lines while following
MAX_LOG_LINES = 5000  # per worker; the REST v2 stream's `tail` goes up to 5000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LogRecord:
    """One log line of a worker: `seq` orders lines of one worker, `at` is epoch seconds."""

    seq: int
    at: float
    source: str  # "container" (the worker's output) or "system" (the platform's)
    line: str


class ImageWorker:
    """One emulated image worker process of one endpoint version."""

    def __init__(
        self,
        *,
        endpoint_id: str,
        kind: str,
        version: int,
        image: str,
        site: Path,
        directory: Path,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.id = f"{endpoint_id}-{secrets.token_hex(5)}"
        self.kind = kind
        self.version = version
        self.image = image
        self.token = secrets.token_urlsafe(24)  # the worker's own key for the internal routes
        self.port = free_port() if kind == "LB" else None
        self.started_at = time.time()
        self.ready = False  # QB: asked for its first job; LB: /ping answered 200
        self.stopping = False
        self.directory = Path(directory) / self.id
        self._site = site
        self._lines: deque[LogRecord] = deque(maxlen=MAX_LOG_LINES)
        self._seq = 0
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def app_dir(self) -> Path:
        """The worker's code directory (the image's /app)."""
        return self.directory / "app"

    def uptime(self) -> float:
        """Seconds since the worker started."""
        return time.time() - self.started_at

    def platform_env(
        self, template_env: dict[str, str], internal: str, artifact: Path
    ) -> dict[str, str]:
        """The worker's env: the template's plus what the platform sets (nothing more: how a
        worker finds other endpoints is up to its template env). `internal` is the data
        plane's base URL for this endpoint's worker routes."""
        token = f"?token={self.token}"
        env = {
            **template_env,
            "RUNPOD_ENDPOINT_ID": self.endpoint_id,
            "RUNPOD_POD_ID": self.id,
            "RUNPOD_POD_HOSTNAME": self.id,
            "FLASH_BUILD_ARTIFACT_PATH": str(artifact),
            "RUNPOD_WEBHOOK_GET_JOB": f"{internal}/job-take/$ID{token}",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{internal}/job-done/$RUNPOD_POD_ID/$ID{token}",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{internal}/job-stream/$RUNPOD_POD_ID/$ID{token}",
            "RUNPOD_WEBHOOK_PING": f"{internal}/ping/$RUNPOD_POD_ID{token}",
            "RUNPOD_AI_API_KEY": self.token,
            # The platform's memory/disk fitness checks would judge this shared machine.
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "PYTHONUNBUFFERED": "1",
        }
        if self.port is not None:
            env["PORT"] = env["PORT_HEALTH"] = str(self.port)
        return env

    def start(self, env: dict[str, str]) -> None:
        """Start the process with the endpoint's `env`; its code directory starts empty, like a
        new container's."""
        self.app_dir.mkdir(parents=True, exist_ok=True)
        home = self.directory / "home"
        home.mkdir(exist_ok=True)
        # Nothing of this process's environment (keys, PYTHONPATH): only what the platform sets.
        full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **env}
        self.system(f"worker {self.id} starting ({self.image}, version {self.version})")
        self._process = subprocess.Popen(
            worker_command(self._site, self.app_dir, self.kind, self.port),
            cwd=self.app_dir,
            env=full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(
            target=self._read, name=f"worker-log-{self.id}", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int | None:
        """The process id (None before start)."""
        return self._process.pid if self._process is not None else None

    def alive(self) -> bool:
        """True while the process runs."""
        return self._process is not None and self._process.poll() is None

    def exit_code(self) -> int | None:
        """The exit status once the process ended."""
        return None if self._process is None else self._process.poll()

    def stop(self, timeout: float = STOP_GRACE) -> None:
        """SIGTERM the process group, SIGKILL after `timeout`; wait for the log reader."""
        self.stopping = True
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                process.wait()
        # Its children (the runpod SDK's heartbeat process) outlive a crash: end them too.
        self._signal(signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(timeout)

    def _signal(self, signum: int) -> None:
        try:
            os.killpg(self._process.pid, signum)  # type: ignore[union-attr]
        except (ProcessLookupError, PermissionError):
            pass

    def system(self, line: str) -> None:
        """Keep a line of the platform's own about this worker."""
        self._append("system", line)

    def lines(self) -> list[LogRecord]:
        """Every kept line, oldest first."""
        with self._lock:
            return list(self._lines)

    def _append(self, source: str, line: str) -> None:
        with self._lock:
            self._seq += 1
            self._lines.append(LogRecord(self._seq, time.time(), source, line))

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for raw in iter(self._process.stdout.readline, b""):
            self._append("container", raw.decode("utf-8", "replace").rstrip("\r\n"))
        self._process.stdout.close()
        code = self._process.wait()
        self.system(f"worker {self.id} exited with status {code}")


# --------------------------------------------------------------------------------------------
# the REST v2 worker-log stream (SSE)


def rfc3339(at: float) -> str:
    """`at` (epoch seconds) as RFC 3339 UTC with microseconds."""
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log_start(last_event_id: str | None, since: str | None) -> tuple[float, int] | None:
    """Where a log stream starts: lines at or after a time and after a sequence number.

    `Last-Event-ID` (`<ts>/<seq>`) wins over `since` (RFC 3339); None: `since` is not a time.
    """
    if last_event_id:
        _stamp, _, seq = last_event_id.partition("/")
        with contextlib.suppress(ValueError):
            return float("-inf"), int(seq)
    if since:
        try:
            return _parse_time(since), 0
        except ValueError:
            return None
    return float("-inf"), 0


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def log_events(
    worker: ImageWorker, source: str | None, tail: int, after: tuple[float, int], request: Request
) -> AsyncIterator[bytes]:
    """The SSE stream of one worker's log: history (last `tail` lines), `: live`, then new."""

    def wanted(seq: int, at: float, src: str) -> bool:
        return (source is None or src == source) and at >= after[0] and seq > after[1]

    snapshot = worker.lines()
    history = [r for r in snapshot if wanted(r.seq, r.at, r.source)]
    if after == (float("-inf"), 0):  # neither Last-Event-ID nor since: the last `tail` lines
        history = history[-tail:] if tail else []
    for record in history:
        yield _event(record.seq, record.at, record.source, record.line)
    last = snapshot[-1].seq if snapshot else 0
    yield b": live\n\n"
    while not await request.is_disconnected():
        fresh = [r for r in worker.lines() if r.seq > last]
        for record in fresh:
            last = record.seq
            if source is None or record.source == source:
                yield _event(record.seq, record.at, record.source, record.line)
        if not fresh:
            await asyncio.sleep(_LOG_POLL)


def _event(seq: int, at: float, source: str, line: str) -> bytes:
    data = json.dumps({"ts": rfc3339(at), "source": source, "line": line})
    return f"id: {rfc3339(at)}/{seq}\ndata: {data}\n\n".encode()
