"""The fake data plane's routes for its workers: what the runpod SDK's worker loop calls.

On the platform a worker takes jobs from `RUNPOD_WEBHOOK_GET_JOB` (a long poll: 204 when there
is none), posts results to `RUNPOD_WEBHOOK_POST_OUTPUT` (`{"output"}` or `{"error"}`; an error
makes the job FAILED) and stream chunks to `RUNPOD_WEBHOOK_POST_STREAM`, long-polls the stop
channel (`job-stop`, `{"jobsToStop": [...]}`) and pings `RUNPOD_WEBHOOK_PING`. Each request
carries the worker's own key (`?token=`). There is no route telling a worker where other
endpoints are: RunPod has none (the deploy puts that table into the template env).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from fakes.runpod_jobs import COMPLETED, FAILED, FINAL, IN_PROGRESS, Job, JobQueue
from fakes.runpod_workers import ImageWorker

__all__ = ["WorkerSide", "add_worker_routes"]

# Both long polls answer within the fake server's graceful-shutdown wait (3 s).
_TAKE_WAIT = 2.0
_STOP_WAIT = 2.0
_NOT_JSON = object()  # a posted body that is not JSON


@dataclass(frozen=True)
class WorkerSide:
    """What a worker's request may touch: its endpoint's jobs and itself."""

    jobs: JobQueue
    worker: ImageWorker


def add_worker_routes(
    router: APIRouter,
    find: Callable[[str, str, str], WorkerSide | None],
) -> None:
    """Add the worker routes under `/_dataplane/{endpoint_id}`; `find(endpoint, worker, key)`
    is None for an unknown worker or a wrong key."""
    base = "/_dataplane/{endpoint_id}"

    @router.get(base + "/job-take/{worker_id}")
    async def job_take(endpoint_id: str, worker_id: str, token: str = "") -> Response:
        found = find(endpoint_id, worker_id, token)
        if found is None:
            return Response(status_code=401)
        found.worker.ready = True
        job = await found.jobs.take(found.worker.id, _TAKE_WAIT)
        if job is None:
            return Response(status_code=204)
        return JSONResponse({"id": job.id, "input": job.input})

    @router.get(base + "/job-stop/{worker_id}")
    async def job_stop(endpoint_id: str, worker_id: str, token: str = "") -> Response:
        found = find(endpoint_id, worker_id, token)
        if found is None:
            return Response(status_code=401)
        stops = await found.jobs.stops(found.worker.id, _STOP_WAIT)
        if not stops:
            return Response(status_code=204)
        return JSONResponse({"jobsToStop": stops})

    # `job-done` (a result: the job ends) and `job-stream` (a chunk of its output).
    @router.post(base + "/job-{kind}/{worker_id}/{job_id}")
    async def job_report(
        kind: str, endpoint_id: str, worker_id: str, job_id: str, request: Request, token: str = ""
    ) -> Response:
        if kind not in ("done", "stream"):
            return Response(status_code=404)
        found = find(endpoint_id, worker_id, token)
        if found is None:
            return Response(status_code=401)
        job = found.jobs.get(job_id)
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = _NOT_JSON
        if kind == "done":
            _finish(found, job, worker_id, body)
        elif job is not None and job.status not in FINAL and isinstance(body, dict):
            job.chunks.append(body.get("output"))
            job.streamed = True
        return JSONResponse({})

    @router.get(base + "/ping/{worker_id}")
    async def ping(endpoint_id: str, worker_id: str, token: str = "") -> Response:
        found = find(endpoint_id, worker_id, token)
        return Response(status_code=401 if found is None else 200)


def _finish(found: WorkerSide, job: Job | None, worker_id: str, result: Any) -> None:
    """A worker's result for a job it holds: COMPLETED, or FAILED with its `error`."""
    if result is _NOT_JSON:
        result = {"error": "the worker sent a result that is not JSON"}
    if job is None or job.status != IN_PROGRESS or job.worker_id != worker_id:
        return
    if not isinstance(result, dict):
        result = {"output": result}
    error = result.get("error")
    found.jobs.finish(
        job, FAILED if error else COMPLETED, output=result.get("output"), error=error or None
    )
