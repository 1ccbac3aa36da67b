"""One endpoint's job queue in the fake RunPod data plane (reference/runpod_api.md §4).

Jobs go IN_QUEUE -> IN_PROGRESS (a worker took it) -> one of the four final states: COMPLETED,
FAILED (the handler's output carried an error, or the worker went away), CANCELLED (`/cancel`)
or TIMED_OUT (longer than its policy's executionTimeout). A job cancelled or timed out while a
worker runs it becomes a stop signal for that worker (the runpod SDK's job-stop channel).
Finished jobs are kept for their retention time (30 min for /run, 1 min for /runsync), after
which their id is unknown (404). `/retry` puts a FAILED or TIMED_OUT job back in the queue under
the same id.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "FINAL",
    "IN_PROGRESS",
    "IN_QUEUE",
    "TIMED_OUT",
    "Job",
    "JobQueue",
]

IN_QUEUE, IN_PROGRESS = "IN_QUEUE", "IN_PROGRESS"
COMPLETED, FAILED, CANCELLED, TIMED_OUT = "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"
FINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})
RUN_RETENTION = 30 * 60.0
RUNSYNC_RETENTION = 60.0
_STOP_RESEND = 0.5
_STOP_RESEND_FOR = 10.0


@dataclass
class Job:
    """One job and what its status answer shows."""

    id: str
    input: Any
    created: float
    retention: float
    timeout: float | None  # seconds of execution allowed; None: no limit
    status: str = IN_QUEUE
    output: Any = None
    error: Any = None
    worker_id: str | None = None
    started: float | None = None
    finished: float | None = None
    chunks: list[Any] = field(default_factory=list)
    streamed: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def wire(self) -> dict[str, Any]:
        """The `/status` (and `/runsync`) answer."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started is not None:
            body["delayTime"] = int((self.started - self.created) * 1000)
            if self.finished is not None:
                body["executionTime"] = int((self.finished - self.started) * 1000)
        if self.worker_id is not None:
            body["workerId"] = self.worker_id
        if self.output is not None:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body


class JobQueue:
    """The jobs of one endpoint: queue, running, finished, and the workers' stop signals."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._queue: deque[str] = deque()
        self._arrived = asyncio.Event()
        # worker id -> job id -> (resend until, next send), both time.monotonic()
        self._stops: dict[str, dict[str, tuple[float, float]]] = {}
        self._stop_set: dict[str, asyncio.Event] = {}
        self._released: set[str] = set()
        self.completed = self.failed = self.retried = 0

    def submit(self, job_input: Any, *, sync: bool, timeout: float | None) -> Job:
        """A new job, queued."""
        job = Job(
            id=f"{'sync-' if sync else ''}{uuid.uuid4()}-u1",
            input=job_input,
            created=time.time(),
            retention=RUNSYNC_RETENTION if sync else RUN_RETENTION,
            timeout=timeout,
        )
        self.jobs[job.id] = job
        self._queue.append(job.id)
        self._arrived.set()
        return job

    def get(self, job_id: str) -> Job | None:
        """The job, unless unknown or past its retention."""
        self.expire()
        return self.jobs.get(job_id)

    def expire(self) -> None:
        """Forget finished jobs past their retention."""
        now = time.time()
        for job_id, job in list(self.jobs.items()):
            if job.finished is not None and now - job.finished > job.retention:
                del self.jobs[job_id]

    async def take(self, worker_id: str, wait: float) -> Job | None:
        """The next queued job for `worker_id`, waiting up to `wait` seconds for one."""
        deadline = time.monotonic() + wait
        while worker_id not in self._released:
            while self._queue:
                job = self.jobs.get(self._queue.popleft())
                if job is None or job.status != IN_QUEUE:
                    continue
                job.status, job.started, job.worker_id = IN_PROGRESS, time.time(), worker_id
                job.finished = None
                if job.timeout is not None:
                    asyncio.get_running_loop().call_later(job.timeout, self._time_out, job)
                return job
            self._arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass
        return None

    def _time_out(self, job: Job) -> None:
        if job.status == IN_PROGRESS:
            self.finish(job, TIMED_OUT, error="job exceeded its execution timeout")

    def finish(self, job: Job, status: str, *, output: Any = None, error: Any = None) -> None:
        """End `job` in a final state (a job already final stays as it is)."""
        if job.status in FINAL:
            return
        if status in (CANCELLED, TIMED_OUT) and job.status == IN_PROGRESS and job.worker_id:
            now = time.monotonic()
            self._stops.setdefault(job.worker_id, {})[job.id] = (now + _STOP_RESEND_FOR, now)
            self._stop_event(job.worker_id).set()
        job.status, job.finished = status, time.time()
        job.output, job.error = output, error
        if status == COMPLETED:
            self.completed += 1
        elif status in (FAILED, TIMED_OUT):
            self.failed += 1
        job.done.set()

    def cancel(self, job: Job) -> None:
        """Cancel a queued or running job."""
        self.finish(job, CANCELLED)

    def retry(self, job: Job) -> bool:
        """Queue a FAILED or TIMED_OUT job again under its id; False for other states."""
        if job.status not in (FAILED, TIMED_OUT):
            return False
        job.status, job.output, job.error = IN_QUEUE, None, None
        job.started = job.finished = job.worker_id = None
        job.chunks, job.streamed, job.done = [], False, asyncio.Event()
        self.retried += 1
        self._queue.append(job.id)
        self._arrived.set()
        return True

    def purge(self) -> int:
        """Drop every queued job; the number dropped."""
        removed = 0
        while self._queue:
            job = self.jobs.pop(self._queue.popleft(), None)
            if job is not None and job.status == IN_QUEUE:
                removed += 1
        return removed

    def worker_gone(self, worker_id: str, reason: str) -> None:
        """Jobs the worker was running end FAILED with `reason`."""
        for job in list(self.jobs.values()):
            if job.worker_id == worker_id and job.status == IN_PROGRESS:
                self.finish(job, FAILED, error=reason)
        self._stops.pop(worker_id, None)
        self._stop_event(worker_id).set()

    def release(self, worker_id: str) -> None:
        """End the worker's waits and give it no more jobs (it is being stopped)."""
        self._released.add(worker_id)
        self._stop_event(worker_id).set()

    def running(self, worker_id: str) -> int:
        """How many jobs `worker_id` runs now."""
        return sum(
            1 for j in self.jobs.values() if j.worker_id == worker_id and j.status == IN_PROGRESS
        )

    async def stops(self, worker_id: str, wait: float) -> list[str]:
        """Job ids `worker_id` must stop, waiting up to `wait` seconds for some.

        A stop is sent again (every `_STOP_RESEND` s, for `_STOP_RESEND_FOR` s): a worker that
        took a job may not have started it yet when the stop first comes, and then ignores it.
        """
        event = self._stop_event(worker_id)
        deadline = time.monotonic() + wait
        while worker_id not in self._released:
            now = time.monotonic()
            pending = self._stops.setdefault(worker_id, {})
            for job_id, (until, _next) in list(pending.items()):
                if until < now:
                    del pending[job_id]
            ready = sorted(job_id for job_id, (_u, at) in pending.items() if at <= now)
            if ready:
                for job_id in ready:
                    pending[job_id] = (pending[job_id][0], now + _STOP_RESEND)
                return ready
            if now >= deadline:
                return []
            wake = min([at for _u, at in pending.values()] + [deadline])
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), max(0.01, wake - now))
            except asyncio.TimeoutError:
                pass
        return []

    def _stop_event(self, worker_id: str) -> asyncio.Event:
        return self._stop_set.setdefault(worker_id, asyncio.Event())

    def counts(self) -> dict[str, int]:
        """The `jobs` object of `/health`."""
        self.expire()
        states = [j.status for j in self.jobs.values()]
        return {
            "completed": self.completed,
            "failed": self.failed,
            "inProgress": states.count(IN_PROGRESS),
            "inQueue": states.count(IN_QUEUE),
            "retried": self.retried,
        }

    def close(self) -> None:
        """Wake everyone waiting on a job (the endpoint is gone)."""
        for job in self.jobs.values():
            job.done.set()
        for event in self._stop_set.values():
            event.set()
