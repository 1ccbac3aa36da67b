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
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from runtime.asgi import send_json

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_RETENTION",
    "DEFAULT_RUNSYNC_WAIT",
    "Job",
    "QueueServer",
    "TERMINAL_STATUSES",
]

DEFAULT_CONCURRENCY = 8
DEFAULT_RETENTION = 600.0  # seconds a finished job stays readable through /status
DEFAULT_RUNSYNC_WAIT = 90.0  # RunPod's /runsync waits about this long before answering
MAX_RUNSYNC_WAIT = 300.0
SYNC_RETENTION = 60.0  # /runsync jobs: their caller already got the result
MAX_BODY_BYTES = 20 * 1024 * 1024  # RunPod's /runsync payload limit

IN_QUEUE, IN_PROGRESS = "IN_QUEUE", "IN_PROGRESS"
COMPLETED, FAILED, CANCELLED, TIMED_OUT = "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"
TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})

JobHandler = Callable[[dict[str, Any]], Awaitable[Any] | Any]


# One encoder for the process: json.dumps() with non-default options builds a new encoder on
# every call, which shows up on the per-request path.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Job:
    """One job: its input, state and (once finished) pre-encoded output."""

    __slots__ = (
        "id",
        "input",
        "status",
        "output_json",
        "error",
        "created",
        "started",
        "finished",
        "timeout",
        "webhook",
        "task",
        "_done",
    )

    def __init__(self, job_id: str, payload: Any, timeout: float | None) -> None:
        self.id = job_id
        self.input = payload
        self.status = IN_QUEUE
        self.output_json: str | None = None  # validated JSON text of the output
        self.error: Any = None
        self.created = time.monotonic()
        self.started: float | None = None
        self.finished: float | None = None
        self.timeout = timeout
        self.webhook: str | None = None
        self.task: asyncio.Task[Any] | None = None
        self._done: asyncio.Future[None] | None = None  # created only when someone waits

    def waiter(self) -> asyncio.Future[None]:
        """A future resolved when the job finishes."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            if self.finished is not None:
                self._done.set_result(None)
        return self._done

    def body(self, worker_id: str) -> str:
        """The `/status` JSON of this job (RunPod field names); `worker_id` is JSON text."""
        # Ids are generated here (plain ASCII) and worker_id comes pre-encoded as JSON.
        parts = [f'"id":"{self.id}"', f'"status":"{self.status}"']
        if self.started is not None:
            parts.append(f'"delayTime":{int((self.started - self.created) * 1000)}')
            parts.append(f'"workerId":{worker_id}')
        if self.finished is not None and self.started is not None:
            parts.append(f'"executionTime":{int((self.finished - self.started) * 1000)}')
        if self.output_json is not None:
            parts.append(f'"output":{self.output_json}')
        if self.error is not None:
            parts.append(f'"error":{_dumps(self.error)}')
        return "{" + ",".join(parts) + "}"


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
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.handler = handler
        self.concurrency = concurrency
        self.retention = retention
        self.runsync_wait = runsync_wait
        self.execution_timeout = execution_timeout or None
        self.worker_id = worker_id or f"local-{os.getpid()}"
        self._worker_json = _dumps(self.worker_id)
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
    ) -> Job:
        """Queue a job (starts at once when a slot is free).

        `webhook`: a URL that gets the final `/status` body POSTed when the job ends.
        """
        job = self._new_job(payload, sync, timeout)
        job.webhook = webhook
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
        except asyncio.TimeoutError:
            self._finish(
                job, TIMED_OUT, error=f"job exceeded its execution timeout ({job.timeout:g}s)"
            )
        except asyncio.CancelledError:
            if job.status not in TERMINAL_STATUSES:
                self._finish(job, CANCELLED)
        except Exception as exc:  # the handler itself broke: the job fails, the worker serves on
            sys.stderr.write(f"job {job.id} handler error:\n{traceback.format_exc()}")
            sys.stderr.flush()
            self._finish(job, FAILED, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._running -= 1
            self._pump()

    def _complete(self, job: Job, result: Any) -> None:
        error = None
        output: Any = result
        if isinstance(result, dict) and result.get("error"):
            # runpod SDK rule: an "error" key fails the job; the rest stays the output.
            output = {k: v for k, v in result.items() if k != "error"}
            error = result["error"]
        try:
            output_json = _dumps(output) if output is not None else None
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
        if job._done is not None and not job._done.done():
            job._done.set_result(None)
        if job.webhook:
            asyncio.get_running_loop().create_task(
                _post_webhook(job.webhook, job.body(self._worker_json))
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

    def purge_queue(self) -> int:
        """Cancel every job still waiting for a slot; returns how many."""
        waiting = list(self._queue)
        self._queue.clear()
        for job in waiting:
            self._finish(job, CANCELLED)
        return len(waiting)

    def _expire(self) -> None:
        now = time.monotonic()
        for expiry in (self._expiry, self._expiry_sync):
            while expiry and expiry[0][0] <= now:
                _, job_id = expiry.popleft()
                self.jobs.pop(job_id, None)

    def health(self) -> dict[str, Any]:
        """RunPod's /health body for this single worker."""
        busy = 1 if self._running else 0
        return {
            "jobs": {
                "completed": self.counts["completed"],
                "failed": self.counts["failed"],
                "inProgress": self._running,
                "inQueue": len(self._queue),
                "retried": self.counts["retried"],
            },
            "workers": {
                "idle": 1 - busy,
                "initializing": 0,
                "ready": 1,
                "running": busy,
                "throttled": 0,
                "unhealthy": 0,
            },
        }

    async def shutdown(self, grace: float) -> None:
        """Stop taking jobs, let running ones finish for up to `grace` seconds, cancel the rest."""
        self._accepting = False
        self.purge_queue()
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=0.5)

    # ---------------------------------------------------------------- HTTP

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method = scope["method"]
        op, job_id = _route(scope["path"])
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
            if job is None:
                await _respond(send, 404, _dumps({"error": f"job {job_id} not found"}))
            else:
                await _respond(send, 200, job.body(self._worker_json))
        elif op == "cancel":
            if method != "POST":
                await _respond(send, 405, '{"error":"method not allowed"}')
                return
            job = self.jobs.get(job_id or "")
            if job is None:
                await _respond(send, 404, _dumps({"error": f"job {job_id} not found"}))
                return
            self.cancel(job)
            await _respond(send, 200, _dumps({"id": job.id, "status": job.status}))
        elif op == "health":
            await _respond(send, 200, _dumps(self.health()))
        elif op == "ping":
            await _respond(send, 200, '{"status":"healthy"}')
        elif op == "purge-queue":
            if method != "POST":
                await _respond(send, 405, '{"error":"method not allowed"}')
                return
            removed = self.purge_queue()
            await _respond(send, 200, _dumps({"removed": removed, "status": "completed"}))

    async def _submit(self, scope: dict[str, Any], receive: Any, send: Any, *, sync: bool) -> None:
        if not self._accepting:
            await _respond(send, 503, '{"error":"worker is shutting down"}')
            return
        body = await _read_body(receive)
        if body is None:
            await _respond(send, 413, '{"error":"request body too large"}')
            return
        try:
            request = json.loads(body) if body else None
        except ValueError as exc:
            await _respond(send, 400, _dumps({"error": f"invalid JSON body: {exc}"}))
            return
        if not isinstance(request, dict) or "input" not in request:
            await _respond(send, 400, '{"error":"the request body must be {\\"input\\": ...}"}')
            return
        timeout = None
        policy = request.get("policy")
        if isinstance(policy, dict) and isinstance(policy.get("executionTimeout"), (int, float)):
            timeout = max(0.001, policy["executionTimeout"] / 1000)
        if not sync:
            webhook = request.get("webhook")
            job = self.submit(
                request["input"],
                timeout=timeout,
                webhook=webhook if isinstance(webhook, str) and webhook else None,
            )
            await _respond(send, 200, _dumps({"id": job.id, "status": job.status}))
            return
        wait = self.runsync_wait
        query = scope.get("query_string") or b""
        if query:
            values = parse_qs(query.decode("latin-1")).get("wait")
            if values:
                try:
                    wait = min(MAX_RUNSYNC_WAIT, max(0.0, float(values[0]) / 1000))
                except ValueError:
                    pass
        if self._running < self.concurrency and not self._queue:
            await self._run_inline(request["input"], timeout, wait, send)
            return
        job = self.submit(request["input"], sync=True, timeout=timeout)
        if job.finished is None:
            await asyncio.wait((job.waiter(),), timeout=wait)
        await _respond(send, 200, job.body(self._worker_json))

    async def _run_inline(
        self, payload: Any, timeout: float | None, wait: float, send: Any
    ) -> None:
        """/runsync with a free slot: run the job in the request's own task.

        Saves a task, a future and a wait per call (the common case). If the job outlives
        `wait`, a timer answers IN_PROGRESS from a side task while this one keeps running the
        job, exactly like the queued path; /cancel cancels this task.
        """
        job = self._new_job(payload, True, timeout)
        self._running += 1
        job.status = IN_PROGRESS
        job.started = time.monotonic()
        job.task = asyncio.current_task()
        replied = False
        loop = asyncio.get_running_loop()

        def reply_early() -> None:
            nonlocal replied
            replied = True
            loop.create_task(_respond(send, 200, job.body(self._worker_json)))

        timer = loop.call_later(wait, reply_early)
        try:
            await self._execute(job)
        finally:
            timer.cancel()
        if not replied:
            await _respond(send, 200, job.body(self._worker_json))

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown(grace=self.shutdown_grace)
                await send({"type": "lifespan.shutdown.complete"})
                return


_OPS = frozenset({"run", "runsync", "health", "ping", "purge-queue"})
_ID_OPS = frozenset({"status", "cancel"})


def _route(path: str) -> tuple[str | None, str | None]:
    """(operation, job id) of a request path; accepts an optional endpoint-id prefix."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None, None
    if parts[-1] in _OPS and len(parts) <= 3:
        prefix = parts[:-1]
        if not prefix or len(prefix) == 1 or prefix[0] == "v2":
            return parts[-1], None
        return None, None
    if len(parts) >= 2 and parts[-2] in _ID_OPS and len(parts) <= 4:
        prefix = parts[:-2]
        if not prefix or len(prefix) == 1 or prefix[0] == "v2":
            return parts[-2], parts[-1]
    return None, None


async def _post_webhook(url: str, body: str) -> None:
    """Deliver a finished job to its webhook (best effort, like RunPod: a few tries)."""
    import httpx  # only jobs with a webhook need it

    for attempt in range(3):
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                response = await client.post(
                    url, content=body, headers={"content-type": "application/json"}
                )
            if response.status_code < 400:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.5 * (attempt + 1))
    sys.stderr.write(f"webhook delivery to {url} failed after 3 attempts\n")
    sys.stderr.flush()


async def _read_body(receive: Any) -> bytes | None:
    """The whole request body, or None when it exceeds MAX_BODY_BYTES."""
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _respond(send: Any, status: int, body: str) -> None:
    await send_json(send, status, body.encode())
