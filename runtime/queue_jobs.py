"""A queue job: how a request path names it, its record and `/status` body, and where
finished jobs go besides `/status`: their webhook, and the journal a stopping worker leaves
for the next one.

The queue that runs jobs and its HTTP API are `runtime.queue_server`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "IN_PROGRESS",
    "IN_QUEUE",
    "TERMINAL_STATUSES",
    "TIMED_OUT",
    "Job",
    "dumps",
    "post_webhook",
    "read_journal",
    "route",
    "write_journal",
]

IN_QUEUE, IN_PROGRESS = "IN_QUEUE", "IN_PROGRESS"
COMPLETED, FAILED, CANCELLED, TIMED_OUT = "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"
TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})

# One encoder for the process: json.dumps() with non-default options builds a new encoder on
# every call, which shows up on the per-request path.
dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


_OPS = frozenset({"run", "runsync", "health", "ping", "purge-queue"})
_ID_OPS = frozenset({"status", "cancel"})


def route(path: str) -> tuple[str | None, str | None]:
    """(operation, job id) a request path names; an optional endpoint-id prefix is accepted."""
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
        "size",
        "kept",
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
        self.size = 0  # bytes of the request body while the job is unfinished
        self.kept = 0  # bytes of its output and error once finished
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
            parts.append(f'"error":{dumps(self.error)}')
        return "{" + ",".join(parts) + "}"


async def post_webhook(url: str, body: str) -> None:
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


def read_journal(path: Path) -> dict[str, str]:
    """Job statuses a previous worker left (the file is consumed: read once, then removed)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"warning: ignoring the job journal {path}: {exc}\n")
        return {}
    finally:
        path.unlink(missing_ok=True)
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


def write_journal(path: Path, entries: dict[str, str]) -> None:
    """Leave the kept jobs' statuses for the next worker on the endpoint (best effort)."""
    try:
        # 0600: job outputs are user data.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entries, handle)
    except OSError as exc:
        sys.stderr.write(f"warning: cannot write the job journal {path}: {exc}\n")
