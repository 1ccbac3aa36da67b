"""What a worker's unexpected exit does to its endpoint: the crash is recorded, then the
worker is restarted after a backoff, or the endpoint is `failed` after `crash_limit` crashes
within `crash_window` seconds; a worker that recycled itself is restarted at once, no crash.

`Restarts` holds the restarts waiting for their time (at most one per endpoint); the
supervisor cancels one when a deploy or an undeploy takes the endpoint over.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.localcloud import logfiles
from engine.localcloud.store import Store
from engine.localcloud.workers import Worker, WorkerProcesses
from runtime.exitcodes import RECYCLE_EXIT_CODE

if TYPE_CHECKING:
    from engine.localcloud.settings import SupervisorSettings

__all__ = ["CrashHandler", "Restarts"]

# (app, endpoint, reason) -> start the recorded endpoint again
StartRecorded = Callable[[str, str, str], Awaitable[None]]


class Restarts:
    """Restarts waiting for their time, at most one per endpoint."""

    def __init__(self, start: StartRecorded, backoff_max: float) -> None:
        self._start = start
        self._backoff_max = backoff_max
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def schedule(self, app: str, name: str, delay: float, reason: str) -> None:
        """Start the endpoint again after `delay` seconds (needs a running loop)."""
        self._tasks[(app, name)] = asyncio.get_running_loop().create_task(
            self._later(app, name, delay, reason)
        )

    def pending(self, app: str, name: str) -> bool:
        """Whether a restart of the endpoint is waiting."""
        return (app, name) in self._tasks

    def cancel(self, app: str, name: str) -> None:
        """Drop the endpoint's waiting restart, if any."""
        task = self._tasks.pop((app, name), None)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        """Drop every waiting restart (the service is closing)."""
        for task in list(self._tasks.values()):
            task.cancel()

    async def _later(self, app: str, name: str, delay: float, reason: str) -> None:
        try:
            await asyncio.sleep(delay)
            while True:
                try:
                    await self._start(app, name, reason)
                    return
                except (OSError, sqlite3.Error) as exc:
                    # A full disk: try again later rather than leave the endpoint down.
                    print(
                        f"supervisor: restarting {app}/{name} failed ({exc}); retrying",
                        file=sys.stderr,
                    )
                    delay = min(max(delay, 0.05) * 2, self._backoff_max)
                    await asyncio.sleep(delay)
        finally:
            current = asyncio.current_task()
            if self._tasks.get((app, name)) is current:
                self._tasks.pop((app, name), None)


class CrashHandler:
    """Records the unexpected exits of workers and schedules their restarts."""

    def __init__(
        self,
        store: Store,
        processes: WorkerProcesses,
        settings: SupervisorSettings,
        restarts: Restarts,
    ) -> None:
        self.store = store
        self._processes = processes
        self.settings = settings
        self.restarts = restarts

    async def handle(self, worker: Worker, crashed_at: float) -> None:
        """Record a worker's unexpected exit, retrying with backoff until it is written.

        A full disk (ENOSPC, or SQLite's "database or disk is full") must neither kill the
        monitor nor leave the record claiming a live worker: the attempt is repeated, and
        `record` is safe to repeat (the crash keeps its time; written events are not
        written again).
        """
        await self._processes.drain_log(worker, 2.0)
        done: set[str] = set()
        delay = 0.05
        while True:
            try:
                self.record(worker, crashed_at=crashed_at, done=done)
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

    def record(
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
        log = self._processes.log_path(app, name)
        if code == RECYCLE_EXIT_CODE:
            self._recycled(worker, log)
            return
        if "marker" not in done:
            # The log is a courtesy; a full disk must not stop the record from being written.
            with contextlib.suppress(OSError):
                logfiles.append_marker(log, f"worker pid {worker.pid} exited (code {code})")
            done.add("marker")
        tail = logfiles.last_lines(log, 30, self.store.app_keys(app).values())
        now = time.time() if crashed_at is None else crashed_at
        window = self.settings.crash_window
        previous = [t for t in record.get("crash_times") or [] if now - t < window and t != now]
        crashes = [*previous, now]
        last_error = "\n".join(tail[-20:])
        self._event_once(
            done,
            "crashed",
            f"worker pid {worker.pid} exited (code {code})",
            worker,
            {"exit_code": code, "pid": worker.pid},
        )
        failed = len(crashes) >= self.settings.crash_limit
        self.store.upsert_endpoint(
            app,
            name,
            status="failed" if failed else "unhealthy",
            pid=None,
            pid_started=None,
            crash_times=crashes,
            last_error=last_error,
        )
        if failed:
            self._event_once(
                done,
                "failed",
                f"crashed {len(crashes)} times in {window:.0f}s; not restarting",
                worker,
                {"last_lines": tail[-20:]},
            )
            with contextlib.suppress(OSError):
                logfiles.append_marker(log, f"endpoint failed after {len(crashes)} crashes")
            return
        delay = min(self.settings.backoff_max, self.settings.backoff_base * 2 ** (len(crashes) - 1))
        with contextlib.suppress(OSError):
            logfiles.append_marker(log, f"restarting in {delay:.1f}s")
        self.restarts.schedule(app, name, delay, "crash")

    def _event_once(
        self, done: set[str], kind: str, message: str, worker: Worker, data: dict[str, Any]
    ) -> None:
        """Add an event unless an earlier attempt at recording this crash already did."""
        if kind not in done:
            self.store.add_event(kind, message, app=worker.app, endpoint=worker.name, data=data)
            done.add(kind)

    def _recycled(self, worker: Worker, log: Path) -> None:
        """A worker that recycled itself (stuck calls, its log says which): restart it now.

        Not a crash: it does not count towards `crash_limit`.
        """
        app, name = worker.app, worker.name
        message = f"worker pid {worker.pid} recycled itself (stuck calls); restarting"
        logfiles.append_marker(log, message)
        self.store.add_event("recycled", message, app=app, endpoint=name)
        self.store.upsert_endpoint(app, name, status="unhealthy", pid=None, pid_started=None)
        self.restarts.schedule(app, name, 0.0, "recycle")
