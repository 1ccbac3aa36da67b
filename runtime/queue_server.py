"""A RunPod-compatible queue API for queue-based (QB) endpoints, as a minimal ASGI app.

Routes (an optional `/v2/<endpoint id>` or `/<endpoint id>` prefix is accepted, so the runpod
SDK can point its base URL at a worker):

- `POST /run` `{"input": ..., "policy": {"executionTimeout": ms}, "webhook": url}` ->
  `{"id", "status"}` (the webhook gets the final status body POSTed);
- `POST /runsync` (same body; `?wait=<ms>`): waits for the job up to a timeout, then answers like
  `/status` (a job still running answers `IN_QUEUE`/`IN_PROGRESS`, as RunPod does);
- `GET|POST /status/{id}` -> `{id, status, output | error, delayTime, executionTime, workerId}`;
- `POST /cancel/{id}`, `POST /purge-queue`, `GET /health` (RunPod shape), `GET /ping`.

Why not FastAPI here: every request is a JSON envelope around the handler call, so a plain
ASGI callable with one dict dispatch does the job with a fraction of the per-request overhead
(no dependency injection, no response-model validation); that overhead is what a queue API
benchmark measures.

Jobs run on the event loop with bounded concurrency (`concurrency` jobs at a time, the rest
wait in FIFO order). A handler output dict carrying an `"error"` key marks the job FAILED with
that error and the rest of the dict as `output` — the runpod SDK's rule, so clients written for
RunPod see the same shapes. Finished jobs are kept for `retention` seconds, then dropped.

Limits keep a worker alive under abuse: bodies are capped (RunPod's 10 MB for /run, 20 MB for
/runsync) and must be JSON the worker can encode (`runtime.payload`: a lone surrogate or deep
nesting is a 400, no job is created); the queue is bounded by job count and by the bytes of
pending input (429 with `Retry-After`); kept results are bounded by bytes (the oldest are evicted;
`/status` of an evicted or expired id says so). A job that times out or is cancelled frees its
slot at once, even when its sync code keeps a thread busy: such *stuck* threads are counted
(`busy_threads`), and once `max_stuck` of them exist the server reports itself unhealthy (`/ping`
503, `/health` unhealthy) so that the worker can be recycled. On shutdown, unfinished jobs are
FAILED with the reason, and with a `journal` file the finished /run jobs' statuses are written
there and served by the next incarnation of the worker (other ids of a previous worker: 404).

A job's record, its status body, webhook delivery and the journal file are
`runtime.queue_jobs`; the state machine over the table of jobs and its HTTP API are here.
At about 680 lines it stays one module: the HTTP API and the same-machine entry `runsync`
(`runtime.local_frames`) share the admission checks and the state machine's private counts;
split, each half would reach into the other's.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from runtime.asgi import send_json
from runtime.payload import DEFAULT_MAX_DEPTH, BodyError, parse_json, read_body
from runtime.queue_jobs import (
    CANCELLED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    IN_QUEUE,
    TERMINAL_STATUSES,
    TIMED_OUT,
    Job,
    dumps,
    post_webhook,
    read_journal,
    route,
    write_journal,
)

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_RETENTION",
    "DEFAULT_RUNSYNC_WAIT",
    "Job",
    "QueueLimits",
    "QueueServer",
    "TERMINAL_STATUSES",
]

DEFAULT_CONCURRENCY = 8
DEFAULT_RETENTION = 600.0  # seconds a finished job stays readable through /status
DEFAULT_RUNSYNC_WAIT = 90.0  # RunPod's /runsync waits about this long before answering
MAX_RUNSYNC_WAIT = 300.0
SYNC_RETENTION = 60.0  # /runsync jobs: their caller already got the result
MAX_BODY_BYTES = 20 * 1024 * 1024  # RunPod's /runsync payload limit
MAX_RUN_BODY_BYTES = 10 * 1024 * 1024  # RunPod's /run payload limit
DEFAULT_MAX_QUEUE_JOBS = 1000
DEFAULT_MAX_QUEUE_BYTES = 128 * 1024 * 1024  # input of unfinished jobs
DEFAULT_MAX_RESULT_BYTES = 128 * 1024 * 1024  # outputs and errors of kept finished jobs
RETRY_AFTER = b"2"

JobHandler = Callable[[dict[str, Any]], Awaitable[Any] | Any]
# Gives a /runsync answer (status, JSON text) to its caller: HTTP or a same-machine frame.
Reply = Callable[[int, str], Awaitable[None]]


@dataclass(frozen=True)
class QueueLimits:
    """What a queue server takes before it refuses: queued jobs and their input bytes, kept
    result bytes, a request body's bytes and JSON depth, and stuck handler threads."""

    max_queue_jobs: int = DEFAULT_MAX_QUEUE_JOBS
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    # None: RunPod's own caps (MAX_BODY_BYTES for /runsync, MAX_RUN_BODY_BYTES for /run).
    max_body_bytes: int | None = None
    max_depth: int = DEFAULT_MAX_DEPTH
    # None: as many as the server's concurrency.
    max_stuck: int | None = None


@dataclass(frozen=True)
class _Refusal:
    """A submission not taken: its status and error (`retry`: answered with Retry-After)."""

    status: int
    error: str
    retry: bool = False


class QueueServer:
    """ASGI app serving the RunPod queue API around one job handler.

    `handler(job)` takes `{"id", "input"}` and returns the output (a coroutine is awaited; a
    plain return value is used as is — a blocking sync handler should be made async by the
    caller, see `runtime.qb_handler`).
    """

    def __init__(
        self,
        handler: JobHandler,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        retention: float = DEFAULT_RETENTION,
        runsync_wait: float = DEFAULT_RUNSYNC_WAIT,
        execution_timeout: float | None = None,
        worker_id: str | None = None,
        shutdown_grace: float = 3.0,
        limits: QueueLimits = QueueLimits(),
        busy_threads: Callable[[], int] | None = None,
        journal: Path | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.handler = handler
        self.concurrency = concurrency
        self.retention = retention
        self.runsync_wait = runsync_wait
        self.execution_timeout = execution_timeout or None
        self.worker_id = worker_id or f"local-{os.getpid()}"
        self._worker_json = dumps(self.worker_id)
        self.shutdown_grace = shutdown_grace
        self.jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._running = 0
        self._expiry: deque[tuple[float, str]] = deque()
        self._expiry_sync: deque[tuple[float, str]] = deque()
        self._accepting = True
        # Job ids: a random per-process prefix plus a counter — unique, and much cheaper
        # than uuid4 on the hot path (auth, not id secrecy, protects the jobs).
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count(1)
        self.counts = {"completed": 0, "failed": 0, "retried": 0}
        self.limits = limits
        self.busy_threads = busy_threads
        self.max_stuck = limits.max_stuck if limits.max_stuck is not None else concurrency
        self.journal = journal
        self.stop_reason: str | None = None  # why jobs unfinished at shutdown fail (if set)
        self._pending_bytes = 0
        self._result_bytes = 0
        self._previous: dict[str, str] = read_journal(journal) if journal else {}

    # ---------------------------------------------------------------- job lifecycle

    def _new_job(self, payload: Any, sync: bool, timeout: float | None) -> Job:
        self._expire()
        prefix = "sync-" if sync else ""
        job_id = f"{prefix}{self._id_prefix}-{next(self._ids)}"
        job = Job(job_id, payload, timeout or self.execution_timeout)
        self.jobs[job_id] = job
        return job

    def submit(
        self,
        payload: Any,
        *,
        sync: bool = False,
        timeout: float | None = None,
        webhook: str | None = None,
        size: int = 0,
    ) -> Job:
        """Queue a job (starts at once when a slot is free).

        `webhook`: a URL that gets the final `/status` body POSTed when the job ends; `size`:
        the bytes its request took (counted against `max_queue_bytes` until it ends).
        """
        job = self._new_job(payload, sync, timeout)
        job.webhook = webhook
        job.size = size
        self._pending_bytes += size
        self._queue.append(job)
        self._pump()
        return job

    def _pump(self) -> None:
        while self._running < self.concurrency and self._queue:
            job = self._queue.popleft()
            self._running += 1
            job.status = IN_PROGRESS
            job.started = time.monotonic()
            job.task = asyncio.get_running_loop().create_task(self._execute(job))

    async def _execute(self, job: Job) -> None:
        try:
            result = self.handler({"id": job.id, "input": job.input})
            if inspect.isawaitable(result):
                if job.timeout:
                    result = await asyncio.wait_for(result, job.timeout)
                else:
                    result = await result
            self._complete(job, result)
        except asyncio.TimeoutError as exc:
            if job.timeout:
                self._finish(
                    job, TIMED_OUT, error=f"job exceeded its execution timeout ({job.timeout:g}s)"
                )
            else:  # no timeout of ours: the handler raised a TimeoutError of its own
                self._handler_error(job, exc)
        except asyncio.CancelledError:
            if job.status not in TERMINAL_STATUSES:
                self._finish(job, CANCELLED)
        except Exception as exc:  # the handler itself broke: the job fails, the worker serves on
            self._handler_error(job, exc)
        finally:
            self._running -= 1
            self._pump()

    def _handler_error(self, job: Job, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(f"job {job.id} handler error:\n{text}")
        sys.stderr.flush()
        self._finish(job, FAILED, error=f"{type(exc).__name__}: {exc}")

    def _complete(self, job: Job, result: Any) -> None:
        error = None
        output: Any = result
        if isinstance(result, dict) and result.get("error"):
            # runpod SDK rule: an "error" key fails the job; the rest stays the output.
            output = {k: v for k, v in result.items() if k != "error"}
            error = result["error"]
        try:
            output_json = dumps(output) if output is not None else None
        except (TypeError, ValueError) as exc:
            self._finish(job, FAILED, error=f"handler output is not JSON serializable: {exc}")
            return
        job.output_json = output_json
        self._finish(job, FAILED if error is not None else COMPLETED, error=error)

    def _finish(self, job: Job, status: str, *, error: Any = None) -> None:
        if job.finished is not None:
            return  # already cancelled; a late result must not overwrite that
        job.status = status
        job.error = error
        job.finished = time.monotonic()
        self._pending_bytes -= job.size
        job.size = 0
        job.kept = len(job.output_json or "") + (len(dumps(error)) if error is not None else 0)
        self._result_bytes += job.kept
        if job.started is None:
            job.started = job.finished
        if status == COMPLETED:
            self.counts["completed"] += 1
        elif status in (FAILED, TIMED_OUT):
            self.counts["failed"] += 1
        # The payload is not needed any more; dropping it keeps retained jobs small (fewer
        # objects for the garbage collector to walk on a busy worker).
        job.input = None
        # RunPod keeps /runsync results about a minute and /run results much longer.
        # Two queues, each in expiry order, since the two retention times differ.
        if job.id.startswith("sync-"):
            self._expiry_sync.append((job.finished + min(self.retention, SYNC_RETENTION), job.id))
        else:
            self._expiry.append((job.finished + self.retention, job.id))
        if self._result_bytes > self.limits.max_result_bytes:
            self._evict()
        if job._done is not None and not job._done.done():
            job._done.set_result(None)
        if job.webhook:
            asyncio.get_running_loop().create_task(
                post_webhook(job.webhook, job.body(self._worker_json))
            )

    def cancel(self, job: Job) -> None:
        """Cancel a queued or running job (a finished one is left as it is)."""
        if job.status == IN_QUEUE:
            try:
                self._queue.remove(job)
            except ValueError:
                pass
            self._finish(job, CANCELLED)
        elif job.status == IN_PROGRESS and job.task is not None:
            # A sync function already running in a thread cannot be interrupted; the job is
            # reported CANCELLED at once and whatever it returns later is discarded.
            self._finish(job, CANCELLED)
            job.task.cancel()

    def purge_queue(self, reason: str | None = None) -> int:
        """Cancel every job still waiting for a slot (FAIL them with `reason` if given)."""
        waiting = list(self._queue)
        self._queue.clear()
        for job in waiting:
            if reason is None:
                self._finish(job, CANCELLED)
            else:
                self._finish(job, FAILED, error=reason)
        return len(waiting)

    def _drop(self, job_id: str) -> None:
        job = self.jobs.pop(job_id, None)
        if job is not None:
            self._result_bytes -= job.kept

    def _expire(self) -> None:
        now = time.monotonic()
        for expiry in (self._expiry, self._expiry_sync):
            while expiry and expiry[0][0] <= now:
                _, job_id = expiry.popleft()
                self._drop(job_id)

    def _evict(self) -> None:
        """Drop the oldest finished jobs until kept results fit in `max_result_bytes`."""
        sync_retention = min(self.retention, SYNC_RETENTION)
        while self._result_bytes > self.limits.max_result_bytes and (
            self._expiry or self._expiry_sync
        ):
            # Each queue is in finish order; the older head of the two goes first.
            run_finished = self._expiry[0][0] - self.retention if self._expiry else None
            sync_finished = self._expiry_sync[0][0] - sync_retention if self._expiry_sync else None
            run_first = run_finished is not None and (
                sync_finished is None or run_finished <= sync_finished
            )
            if run_first:
                self._drop(self._expiry.popleft()[1])
            else:
                self._drop(self._expiry_sync.popleft()[1])

    @property
    def stuck(self) -> int:
        """Threads still busy with jobs that already ended (timed out or cancelled)."""
        if self.busy_threads is None:
            return 0
        return max(0, self.busy_threads() - self._running)

    def unhealthy(self) -> str | None:
        """Why this server cannot serve any more (stuck work), or None when it is healthy."""
        stuck = self.stuck
        if stuck and stuck >= self.max_stuck:
            return f"{stuck} stuck jobs (their code did not return after a timeout or cancel)"
        return None

    def _missing(self, job_id: str) -> str:
        """The 404 message of an unknown job id: expired if it was ours, else unknown."""
        prefix, _, number = job_id.removeprefix("sync-").partition("-")
        if prefix == self._id_prefix and number.isdigit():
            return (
                f"job {job_id} expired (finished jobs are kept {self.retention:g}s, /runsync "
                f"ones {min(self.retention, SYNC_RETENTION):g}s, up to "
                f"{self.limits.max_result_bytes} bytes of results)"
            )
        return (
            f"job {job_id} not found (unknown id, or a job of a previous worker of this "
            "endpoint whose status was not kept)"
        )

    def health(self) -> dict[str, Any]:
        """RunPod's /health body for this single worker."""
        busy = 1 if self._running else 0
        unhealthy = 1 if self.unhealthy() else 0
        return {
            "jobs": {
                "completed": self.counts["completed"],
                "failed": self.counts["failed"],
                "inProgress": self._running,
                "inQueue": len(self._queue),
                "retried": self.counts["retried"],
            },
            "workers": {
                "idle": 0 if unhealthy else 1 - busy,
                "initializing": 0,
                "ready": 1 - unhealthy,
                "running": 0 if unhealthy else busy,
                "throttled": 0,
                "unhealthy": unhealthy,
            },
        }

    async def shutdown(self, grace: float) -> None:
        """Stop taking jobs, let running ones finish for up to `grace` seconds, fail the rest.

        Queued and unfinished jobs end FAILED with the reason (a recycle or a shutdown); with
        a journal, the kept /run jobs' statuses are written for the next worker.
        """
        self._accepting = False
        unhealthy = self.unhealthy()
        reason = self.stop_reason or (
            f"worker recycled: {unhealthy}" if unhealthy else "worker shut down"
        )
        self.purge_queue(reason)
        running = [j for j in self.jobs.values() if j.task is not None and not j.task.done()]
        if running:
            _, pending = await asyncio.wait([j.task for j in running], timeout=grace)
            for job in running:
                if job.task in pending:
                    self._finish(job, FAILED, error=reason)
                    job.task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=0.5)
        entries = self._journal_entries() if self.journal is not None else {}
        if self.journal is not None and entries:
            write_journal(self.journal, entries)

    def _journal_entries(self) -> dict[str, str]:
        """Status bodies of kept /run jobs (newest first, within the result byte budget)."""
        entries: dict[str, str] = {}
        budget = self.limits.max_result_bytes
        for job in reversed(list(self.jobs.values())):
            if job.finished is None or job.id.startswith("sync-"):
                continue
            body = job.body(self._worker_json)
            budget -= len(body)
            if budget < 0:
                break
            entries[job.id] = body
        return entries

    # ---------------------------------------------------------------- HTTP

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method = scope["method"]
        op, job_id = route(scope["path"])
        if op is None:
            await _respond(send, 404, '{"error":"not found"}')
            return
        if op in ("run", "runsync"):
            if method != "POST":
                await _respond(send, 405, '{"error":"method not allowed"}')
                return
            await self._submit(scope, receive, send, sync=op == "runsync")
        elif op == "status":
            if method not in ("GET", "POST"):
                await _respond(send, 405, '{"error":"method not allowed"}')
                return
            self._expire()
            job = self.jobs.get(job_id or "")
            if job is None and job_id not in self._previous and self.journal is not None:
                # A worker replaced blue/green stops after this one started: its journal
                # arrives later and is read when a job it kept is asked for.
                self._previous.update(read_journal(self.journal))
            if job is not None:
                await _respond(send, 200, job.body(self._worker_json))
            elif job_id in self._previous:
                await _respond(send, 200, self._previous[job_id])
            else:
                await _respond(send, 404, dumps({"error": self._missing(job_id or "")}))
        elif op == "cancel":
            if method != "POST":
                await _respond(send, 405, '{"error":"method not allowed"}')
                return
            job = self.jobs.get(job_id or "")
            if job is None:
                await _respond(send, 404, dumps({"error": self._missing(job_id or "")}))
                return
            self.cancel(job)
            await _respond(send, 200, dumps({"id": job.id, "status": job.status}))
        elif op == "health":
            await _respond(send, 200, dumps(self.health()))
        elif op == "ping":
            unhealthy = self.unhealthy()
            if unhealthy:
                await _respond(send, 503, dumps({"status": "unhealthy", "error": unhealthy}))
            else:
                await _respond(send, 200, '{"status":"healthy"}')
        elif op == "purge-queue":
            if method != "POST":
                await _respond(send, 405, '{"error":"method not allowed"}')
                return
            removed = self.purge_queue()
            await _respond(send, 200, dumps({"removed": removed, "status": "completed"}))

    def _refusal(self) -> _Refusal | None:
        """(status, error, retry) when no job can be taken now (shutting down, unhealthy)."""
        if not self._accepting:
            return _Refusal(503, "worker is shutting down")
        unhealthy = self.unhealthy()
        if unhealthy:
            return _Refusal(503, f"worker is unhealthy and recycling: {unhealthy}", retry=True)
        return None

    def _admit(self, body: bytes) -> tuple[dict[str, Any], float | None] | _Refusal:
        """The request of a submitted body and its timeout, or (status, error, retry)."""
        try:
            request = parse_json(body, self.limits.max_depth) if body else None
        except BodyError as exc:
            return _Refusal(exc.status, exc.message)
        if not isinstance(request, dict) or "input" not in request:
            return _Refusal(400, 'the request body must be {"input": ...}')
        if self._running >= self.concurrency and len(self._queue) >= self.limits.max_queue_jobs:
            waiting = len(self._queue)
            limit = self.limits.max_queue_jobs
            return _Refusal(429, f"queue is full: {waiting} jobs waiting (limit {limit})", True)
        if self._pending_bytes + len(body) > self.limits.max_queue_bytes:
            return _Refusal(
                429,
                f"queue is full: {self._pending_bytes} bytes of pending input, this "
                f"body {len(body)} bytes (limit {self.limits.max_queue_bytes} bytes)",
                retry=True,
            )
        timeout = None
        policy = request.get("policy")
        if isinstance(policy, dict) and isinstance(policy.get("executionTimeout"), (int, float)):
            timeout = max(0.001, policy["executionTimeout"] / 1000)
        return request, timeout

    async def _submit(self, scope: dict[str, Any], receive: Any, send: Any, *, sync: bool) -> None:
        refusal = self._refusal()
        if refusal is not None:
            await _respond_refusal(send, refusal)
            return
        limit = self.limits.max_body_bytes or (MAX_BODY_BYTES if sync else MAX_RUN_BODY_BYTES)
        try:
            body = await read_body(receive, limit)
        except BodyError as exc:
            await _respond(send, exc.status, dumps({"error": exc.message}))
            return
        admitted = self._admit(body)
        if isinstance(admitted, _Refusal):
            await _respond_refusal(send, admitted)
            return
        request, timeout = admitted
        if not sync:
            webhook = request.get("webhook")
            job = self.submit(
                request["input"],
                timeout=timeout,
                webhook=webhook if isinstance(webhook, str) and webhook else None,
                size=len(body),
            )
            await _respond(send, 200, dumps({"id": job.id, "status": job.status}))
            return
        wait = self.runsync_wait
        query = scope.get("query_string") or b""
        if query:
            # `wait=<ms>` alone, as cross-endpoint calls send it, without the query parser.
            if query.startswith(b"wait=") and query[5:].isdigit():
                values = [query[5:].decode()]
            else:
                values = parse_qs(query.decode("latin-1")).get("wait") or []
            if values:
                try:
                    wait = min(MAX_RUNSYNC_WAIT, max(0.0, float(values[0]) / 1000))
                except ValueError:
                    pass

        async def reply(status: int, text: str) -> None:
            await _respond(send, status, text)

        await self._run_sync(request, timeout, wait, len(body), reply)

    async def runsync(self, body: bytes, wait_ms: int | None, reply: Reply) -> None:
        """A `/runsync` of `body` (the HTTP request's body) from a same-machine caller
        (`runtime.local_frames`): the same checks, limits, queue and answers as over HTTP,
        given to `reply(status, json_text)` once (a job outliving the wait: its status)."""
        refusal = self._refusal()
        limit = self.limits.max_body_bytes or MAX_BODY_BYTES
        if refusal is None and len(body) > limit:
            refusal = _Refusal(413, f"request body too large (limit {limit} bytes)")
        admitted = self._admit(body) if refusal is None else refusal
        if isinstance(admitted, _Refusal):
            await reply(admitted.status, dumps({"error": admitted.error}))
            return
        request, timeout = admitted
        wait = self.runsync_wait
        if wait_ms is not None:
            wait = min(MAX_RUNSYNC_WAIT, wait_ms / 1000)
        await self._run_sync(request, timeout, wait, len(body), reply)

    async def _run_sync(
        self, request: dict[str, Any], timeout: float | None, wait: float, size: int, reply: Reply
    ) -> None:
        if self._running < self.concurrency and not self._queue:
            await self._run_inline(request["input"], timeout, wait, reply, size)
            return
        job = self.submit(request["input"], sync=True, timeout=timeout, size=size)
        try:
            if job.finished is None:
                await _finished_within(job, wait)
        except asyncio.CancelledError:
            self.cancel(job)  # its caller gave up (a same-machine call cancelled)
            raise
        await reply(200, job.body(self._worker_json))

    async def _run_inline(
        self, payload: Any, timeout: float | None, wait: float, reply: Reply, size: int
    ) -> None:
        """/runsync with a free slot: run the job in the request's own task.

        Saves a task, a future and a wait per call (the common case). If the job outlives
        `wait`, a timer answers IN_PROGRESS from a side task while this one keeps running the
        job, exactly like the queued path; /cancel cancels this task.
        """
        job = self._new_job(payload, True, timeout)
        job.size = size
        self._pending_bytes += size
        self._running += 1
        job.status = IN_PROGRESS
        job.started = time.monotonic()
        job.task = asyncio.current_task()
        replied = False
        loop = asyncio.get_running_loop()

        def reply_early() -> None:
            nonlocal replied
            replied = True
            loop.create_task(reply(200, job.body(self._worker_json)))

        timer = loop.call_later(wait, reply_early)
        try:
            await self._execute(job)
        finally:
            timer.cancel()
        if not replied:
            await reply(200, job.body(self._worker_json))

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown(grace=self.shutdown_grace)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _finished_within(job: Job, wait: float) -> None:
    """Return when `job` finishes or after `wait` seconds, whichever comes first.

    A future and a timer: asyncio.wait's sets, callbacks and timeout handle for a single
    future cost a queued /runsync a tenth of its CPU time.
    """
    loop = asyncio.get_running_loop()
    woken = loop.create_future()

    def wake(_: object = None) -> None:
        if not woken.done():
            woken.set_result(None)

    done = job.waiter()
    done.add_done_callback(wake)
    timer = loop.call_later(wait, wake)
    try:
        await woken
    finally:
        timer.cancel()
        done.remove_done_callback(wake)


async def _respond_refusal(send: Any, refusal: _Refusal) -> None:
    if refusal.retry:
        await _respond_retry(send, refusal.status, refusal.error)
    else:
        await _respond(send, refusal.status, dumps({"error": refusal.error}))


async def _respond_retry(send: Any, status: int, error: str) -> None:
    body = dumps({"error": error}).encode()
    await send_json(send, status, body, [(b"retry-after", RETRY_AFTER)])


async def _respond(send: Any, status: int, body: str) -> None:
    await send_json(send, status, body.encode())
