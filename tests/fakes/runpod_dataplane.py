"""The fake RunPod's data plane: queue API, load-balancer hosts, REST v2 workers and logs.

The control plane (`tests/fakes/runpod.py`) owns endpoints and builds; it tells the data plane
what each endpoint is (`EndpointView`) through `apply` / `remove`, and mounts `router` at the
root of its one app. Each endpoint's workers are real processes of the image emulator
(`runpod_image`): QB workers run the real `runpod` SDK's worker loop against the internal
job-take / job-done / job-stream / job-stop / ping routes (`/_dataplane/...`), as on the
platform; LB workers serve the artifact's FastAPI app and `/lb/{id}/...` is proxied to them.

Public routes (reference/runpod_api.md §4, §4.1, §6), each checked with
`authorize(endpoint_id, authorization_header)`:

- `/v2/{id}/run`, `/runsync[?wait=ms]`, `/status/{job}`, `/stream/{job}`, `/cancel/{job}`,
  `/retry/{job}`, `/purge-queue`, `/health` (jobs + all six worker counts); unknown jobs 404;
- `/lb/{id}/{path}`: the endpoint's LB worker (round robin over ready workers; a request waits
  for a starting worker, `/ping` answers 204 meanwhile; 503 when there is none);
- `/api/v2/serverless/{id}/workers` and `.../workers/{wid}/logs` (SSE: `id: <ts>/<seq>`,
  `data: {"ts", "source", "line"}`; `tail`, `since`, `source`, `Last-Event-ID`). After the
  history the stream sends one comment line `: live` (SSE comments are ignored by clients that
  do not know it), then live lines until the client goes.

Workers get the template's env and what the platform sets, nothing more: as on RunPod, a
worker finds other endpoints only through its template env (the deploy's `FLASH_ENDPOINTS`).

Scaling is simple on purpose: an endpoint runs `min(max(workersMin, 1), workersMax)` workers
(none when workersMax is 0, or without an artifact); a change of type, image, env, artifact or
version replaces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute

from fakes.runpod_image import image_kind, image_problem, image_site
from fakes.runpod_jobs import COMPLETED, Job, JobQueue
from fakes.runpod_worker_routes import WorkerSide, add_worker_routes
from fakes.runpod_workers import STOP_GRACE, ImageWorker, log_events, log_start, rfc3339

__all__ = ["DataPlane", "EndpointView"]

RUN_MAX_BYTES = 10 * 1024 * 1024
RUNSYNC_MAX_BYTES = 20 * 1024 * 1024
RUNSYNC_WAIT_MS = 90_000
LB_WAIT = 120.0  # seconds a load-balanced request waits for a starting worker (RunPod: 2 min)
_MAX_CRASHES = 5
_WATCH_EVERY = 0.2  # seconds between looks at a worker's process
_CLOSE_GRACE = 1.0  # seconds between SIGTERM and SIGKILL when the whole fake stops
_HOP_HEADERS = frozenset(
    {"host", "authorization", "connection", "keep-alive", "transfer-encoding", "content-length"}
)


@dataclass(frozen=True)
class EndpointView:
    """What the control plane knows of one endpoint."""

    id: str
    name: str
    type: str  # "QB" | "LB"
    env: dict[str, str]
    image_name: str
    workers_min: int
    workers_max: int
    ai_key: str = field(repr=False)
    version: int = 1
    artifact: Path | None = None  # the active build's tarball (None: none deployed)


class _Endpoint:
    """One endpoint's view, workers and jobs."""

    def __init__(self, view: EndpointView) -> None:
        self.view = view
        self.spec = ""
        self.workers: dict[str, ImageWorker] = {}
        self.jobs = JobQueue()
        self.next_lb = 0
        self.crashes: list[float] = []  # when its workers exited on their own (loop time)

    def wanted(self) -> int:
        view = self.view
        if view.artifact is None or view.workers_max <= 0:
            return 0
        return min(max(view.workers_min, 1), view.workers_max)


def _spec(view: EndpointView) -> str:
    artifact = ""
    if view.artifact is not None and view.artifact.is_file():
        artifact = hashlib.sha256(view.artifact.read_bytes()).hexdigest()
    text = json.dumps([view.type, view.env, view.image_name, view.version, artifact])
    return hashlib.sha256(text.encode()).hexdigest()


def _problem(status: int, detail: str) -> JSONResponse:
    body = {"title": detail, "status": status, "detail": detail}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


class _Problem(Exception):
    """A refusal found below a route (no such endpoint or job, a bad body): its answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class _ProblemRoute(APIRoute):
    """A route whose handler may raise `_Problem`: it answers as problem+json."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        """The route's handler, with a raised `_Problem` turned into its answer."""
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except _Problem as problem:
                return _problem(problem.status, str(problem))

        return answer


class DataPlane:
    """The fake's data plane; see the module docstring. `base_url` (the fake's root URL, e.g.
    `http://127.0.0.1:P`) must be set before the first `apply` that starts workers."""

    def __init__(
        self,
        workdir: Path,
        authorize: Callable[[str, str | None], bool],
        *,
        base_url: str = "",
    ) -> None:
        self.workdir = Path(workdir)
        self.base_url = base_url.rstrip("/")
        self._authorize = authorize
        self._endpoints: dict[str, _Endpoint] = {}
        self._site: Path | None = None
        # Endpoints saved at once all start workers: the first ones must not both make the site.
        self._site_lock = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.router = APIRouter(route_class=_ProblemRoute)
        self._add_queue_routes()
        add_worker_routes(self.router, self._internal)
        self._add_lb_and_worker_routes()

    # ---------------------------------------------------------------------------------------
    # the control plane's side

    async def apply(self, endpoint: EndpointView) -> None:
        """Start, replace or rescale the endpoint's workers to match `endpoint`."""
        state = self._endpoints.get(endpoint.id)
        if state is None:
            state = self._endpoints[endpoint.id] = _Endpoint(endpoint)
        state.view = endpoint
        spec = await asyncio.to_thread(_spec, endpoint)
        if spec != state.spec:
            state.spec = spec
            await self._stop_workers(state, list(state.workers.values()))
        for dead in [w for w in state.workers.values() if not w.alive() and not w.stopping]:
            state.workers.pop(dead.id)  # refused or crashed for good: replaced below
        live = [w for w in state.workers.values() if w.alive() and not w.stopping]
        await self._stop_workers(state, live[state.wanted() :])
        for _ in range(state.wanted() - min(len(live), state.wanted())):
            await self._start_worker(state)

    async def remove(self, endpoint_id: str, grace: float = STOP_GRACE) -> None:
        """Stop the endpoint's workers (SIGKILL after `grace` s) and forget its jobs."""
        state = self._endpoints.pop(endpoint_id, None)
        if state is not None:
            await self._stop_workers(state, list(state.workers.values()), grace)
            state.jobs.close()

    async def close(self) -> None:
        """Stop every worker: the fake is going away, so a worker still in a job (the SDK
        finishes it before it exits) is not waited for."""
        for endpoint_id in list(self._endpoints):
            await self.remove(endpoint_id, grace=_CLOSE_GRACE)
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def workers(self, endpoint_id: str) -> list[ImageWorker]:
        """The endpoint's current workers (state inspection for tests)."""
        state = self._endpoints.get(endpoint_id)
        return list(state.workers.values()) if state is not None else []

    async def _start_worker(self, state: _Endpoint) -> None:
        if not self.base_url:
            raise RuntimeError("DataPlane.base_url is not set: workers could not reach it")
        site = await self._image_site()
        view = state.view
        assert view.artifact is not None
        # The image decides what runs (a QB image on an LB endpoint serves no routes).
        kind = image_kind(view.image_name) or view.type
        worker = ImageWorker(
            endpoint_id=view.id,
            kind=kind,
            version=view.version,
            image=view.image_name,
            site=site,
            directory=self.workdir / "workers",
        )
        env = worker.platform_env(
            view.env,
            f"{self.base_url}/_dataplane/{view.id}",
            view.artifact,
        )
        state.workers[worker.id] = worker
        problem = image_problem(view.image_name)
        if problem is not None:
            worker.system(f"worker {worker.id} cannot start: {problem}")  # stays unhealthy
            return
        await asyncio.to_thread(worker.start, env)
        if kind == "LB":
            self._spawn(self._await_lb_ready(worker))
        self._spawn(self._watch(state, worker))

    async def _image_site(self) -> Path:
        async with self._site_lock:
            if self._site is None:
                self._site = await asyncio.to_thread(image_site, self.workdir / "image-site")
            return self._site

    async def _watch(self, state: _Endpoint, worker: ImageWorker) -> None:
        """A worker that exits on its own fails its jobs and is replaced, as on the platform;
        after `_MAX_CRASHES` in a minute it stays, unhealthy, in the list."""
        # Polled, not waited for in a thread: a thread per worker would hold the loop's
        # executor (and the server's shutdown) for as long as the worker runs.
        while worker.alive():
            await asyncio.sleep(_WATCH_EVERY)
        code = worker.exit_code()
        if worker.stopping or self._endpoints.get(state.view.id) is not state:
            return
        await asyncio.to_thread(worker.stop)  # what the process left running goes too
        state.jobs.worker_gone(worker.id, f"worker exited with status {code}")
        now = asyncio.get_running_loop().time()
        state.crashes = [t for t in state.crashes if now - t < 60.0] + [now]
        if len(state.crashes) > _MAX_CRASHES:
            return
        await asyncio.sleep(min(2.0 ** len(state.crashes) * 0.1, 5.0))
        if self._endpoints.get(state.view.id) is not state:
            return
        state.workers.pop(worker.id, None)
        shutil.rmtree(worker.app_dir, ignore_errors=True)
        if len([w for w in state.workers.values() if w.alive()]) < state.wanted():
            await self._start_worker(state)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _await_lb_ready(self, worker: ImageWorker) -> None:
        client = self._client()
        while worker.alive() and not worker.stopping:
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(f"http://127.0.0.1:{worker.port}/ping", timeout=2.0)
                if response.status_code == 200:
                    worker.ready = True
                    return
            await asyncio.sleep(0.1)

    async def _stop_workers(
        self, state: _Endpoint, workers: list[ImageWorker], grace: float = STOP_GRACE
    ) -> None:
        for worker in workers:
            worker.stopping = True
            state.jobs.release(worker.id)  # its long polls answer now: it can shut down
        await asyncio.gather(*(asyncio.to_thread(w.stop, grace) for w in workers))
        for worker in workers:
            state.workers.pop(worker.id, None)
            state.jobs.worker_gone(worker.id, "worker stopped")
            shutil.rmtree(worker.app_dir, ignore_errors=True)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(330.0, connect=5.0))
        return self._http

    def _public(self, endpoint_id: str, request: Request) -> _Endpoint:
        state = self._endpoints.get(endpoint_id)
        if state is None:
            raise _Problem(404, f"endpoint {endpoint_id} not found")
        if not self._authorize(endpoint_id, request.headers.get("authorization")):
            raise _Problem(401, "Unauthorized")
        return state

    def _worker_counts(self, state: _Endpoint) -> dict[str, int]:
        counts = dict.fromkeys(
            ("idle", "initializing", "ready", "running", "throttled", "unhealthy"), 0
        )
        for worker in state.workers.values():
            counts[self._worker_status(state, worker).lower()] += 1
        counts["ready"] = counts["idle"] + counts["running"]
        return counts

    def _worker_status(self, state: _Endpoint, worker: ImageWorker) -> str:
        if not worker.alive():
            return "UNHEALTHY"
        if not worker.ready:
            return "INITIALIZING"
        return "RUNNING" if state.jobs.running(worker.id) else "IDLE"

    # ---------------------------------------------------------------------------------------
    # queue API

    def _add_queue_routes(self) -> None:
        router = self.router

        @router.post("/v2/{endpoint_id}/run")
        async def run(endpoint_id: str, request: Request) -> Response:
            state = self._public(endpoint_id, request)
            job = await self._submit(state, request, sync=False)
            return JSONResponse({"id": job.id, "status": job.status})

        @router.post("/v2/{endpoint_id}/runsync")
        async def runsync(
            endpoint_id: str, request: Request, wait: int = RUNSYNC_WAIT_MS
        ) -> Response:
            state = self._public(endpoint_id, request)
            if not 1000 <= wait <= 300_000:
                return _problem(400, "wait must be between 1000 and 300000 ms")
            job = await self._submit(state, request, sync=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(job.done.wait(), wait / 1000)
            return JSONResponse(job.wire())

        @router.get("/v2/{endpoint_id}/status/{job_id}")
        @router.post("/v2/{endpoint_id}/status/{job_id}")
        async def status(endpoint_id: str, job_id: str, request: Request) -> Response:
            return JSONResponse(self._job(endpoint_id, job_id, request)[1].wire())

        @router.get("/v2/{endpoint_id}/stream/{job_id}")
        @router.post("/v2/{endpoint_id}/stream/{job_id}")
        async def stream(endpoint_id: str, job_id: str, request: Request) -> Response:
            job = self._job(endpoint_id, job_id, request)[1]
            chunks = [{"output": chunk} for chunk in job.chunks]
            job.chunks = []
            if job.status == COMPLETED and not job.streamed and job.output is not None:
                chunks.append({"output": job.output})  # a plain handler: one final chunk
                job.streamed = True
            return JSONResponse({"id": job.id, "status": job.status, "stream": chunks})

        @router.post("/v2/{endpoint_id}/cancel/{job_id}")
        async def cancel(endpoint_id: str, job_id: str, request: Request) -> Response:
            state, job = self._job(endpoint_id, job_id, request)
            state.jobs.cancel(job)
            return JSONResponse({"id": job.id, "status": job.status})

        @router.post("/v2/{endpoint_id}/retry/{job_id}")
        async def retry(endpoint_id: str, job_id: str, request: Request) -> Response:
            state, job = self._job(endpoint_id, job_id, request)
            if not state.jobs.retry(job):
                return _problem(400, f"job {job_id} is {job.status}: only FAILED or TIMED_OUT")
            return JSONResponse({"id": job.id, "status": job.status})

        @router.post("/v2/{endpoint_id}/purge-queue")
        async def purge(endpoint_id: str, request: Request) -> Response:
            state = self._public(endpoint_id, request)
            return JSONResponse({"removed": state.jobs.purge(), "status": "completed"})

        @router.get("/v2/{endpoint_id}/health")
        async def health(endpoint_id: str, request: Request) -> Response:
            state = self._public(endpoint_id, request)
            return JSONResponse(
                {"jobs": state.jobs.counts(), "workers": self._worker_counts(state)}
            )

    def _job(self, endpoint_id: str, job_id: str, request: Request) -> tuple[_Endpoint, Job]:
        state = self._public(endpoint_id, request)
        job = state.jobs.get(job_id)
        if job is None:
            raise _Problem(404, f"job {job_id} not found")
        return state, job

    async def _submit(self, state: _Endpoint, request: Request, sync: bool) -> Job:
        body = await request.body()
        if len(body) > (RUNSYNC_MAX_BYTES if sync else RUN_MAX_BYTES):
            raise _Problem(413, "request body too large")
        try:
            payload = json.loads(body)
        except ValueError:
            raise _Problem(400, "the body is not JSON") from None
        if not isinstance(payload, dict) or "input" not in payload:
            raise _Problem(400, "the body needs an 'input'")
        policy = payload.get("policy")
        timeout_ms = (
            policy.get("executionTimeout", 600_000) if isinstance(policy, dict) else 600_000
        )
        if not isinstance(timeout_ms, int) or timeout_ms < 0:
            raise _Problem(400, "policy.executionTimeout must be a whole number of ms")
        return state.jobs.submit(
            payload["input"], sync=sync, timeout=timeout_ms / 1000 if timeout_ms else None
        )

    # ---------------------------------------------------------------------------------------
    # the routes the workers' runpod SDK talks to (fakes.runpod_worker_routes)

    def _internal(self, endpoint_id: str, worker_id: str, token: str) -> WorkerSide | None:
        state = self._endpoints.get(endpoint_id)
        worker = state.workers.get(worker_id) if state is not None else None
        if state is None or worker is None or worker.token != token:
            return None
        return WorkerSide(state.jobs, worker)

    # ---------------------------------------------------------------------------------------
    # load balancer, workers list, logs

    def _add_lb_and_worker_routes(self) -> None:
        router = self.router

        @router.api_route(
            "/lb/{endpoint_id}/{path:path}",
            methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
        )
        async def load_balancer(endpoint_id: str, path: str, request: Request) -> Response:
            state = self._public(endpoint_id, request)
            ready = await self._ready_lb_workers(state, path == "ping")
            if ready is None:
                return Response(status_code=204)  # /ping while its workers start: initializing
            if not ready:
                return _problem(503, "no worker is ready")
            worker = ready[state.next_lb % len(ready)]
            state.next_lb += 1
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
            url = f"http://127.0.0.1:{worker.port}/{path}"
            try:
                answer = await self._client().request(
                    request.method,
                    url,
                    params=request.query_params,
                    content=await request.body(),
                    headers=headers,
                )
            except httpx.HTTPError as exc:
                return _problem(502, f"worker did not answer: {type(exc).__name__}")
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
            out.pop("content-encoding", None)
            return Response(answer.content, status_code=answer.status_code, headers=out)

        @router.get("/api/v2/serverless/{endpoint_id}/workers")
        async def workers(endpoint_id: str, request: Request) -> Response:
            state = self._public(endpoint_id, request)
            return JSONResponse(self._workers_body(state))

        @router.get("/api/v2/serverless/{endpoint_id}/workers/{worker_id}/logs")
        async def logs(
            endpoint_id: str,
            worker_id: str,
            request: Request,
            source: str | None = None,
            tail: int = 100,
            since: str | None = None,
        ) -> Response:
            state = self._public(endpoint_id, request)
            worker = state.workers.get(worker_id)
            if worker is None:
                return _problem(404, f"worker {worker_id} not found")
            if source not in (None, "container", "system") or not 0 <= tail <= 5000:
                return _problem(400, "source must be container or system; tail 0-5000")
            after = log_start(request.headers.get("last-event-id"), since)
            if after is None:
                return _problem(400, "since must be an RFC 3339 time")
            return StreamingResponse(
                log_events(worker, source, tail, after, request),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )

    async def _ready_lb_workers(self, state: _Endpoint, ping: bool) -> list[ImageWorker] | None:
        """The ready workers; a request waits for a starting one as the platform's load
        balancer does (up to `LB_WAIT`), a `/ping` does not (None: still initializing)."""
        deadline = asyncio.get_running_loop().time() + LB_WAIT
        while True:
            alive = [w for w in state.workers.values() if w.alive() and not w.stopping]
            ready = [w for w in alive if w.ready and w.port is not None]
            if ready or not alive:
                return ready
            if ping:
                return None
            if asyncio.get_running_loop().time() > deadline:
                return []
            await asyncio.sleep(0.05)

    def _workers_body(self, state: _Endpoint) -> dict[str, Any]:
        listed = []
        summary = dict.fromkeys(("running", "idle", "initializing", "throttled", "unhealthy"), 0)
        for worker in state.workers.values():
            status = self._worker_status(state, worker)
            summary[status.lower()] += 1
            listed.append(
                {
                    "id": worker.id,
                    "status": status,
                    "isStale": worker.version != state.view.version,
                    "version": worker.version,
                    "gpuCount": 0,
                    "image": worker.image,
                    "uptimeSeconds": int(max(0.0, worker.uptime())),
                    "gpuTypeId": None,
                    "dataCenterId": "FAKE-LOCAL-1",
                    "startedAt": rfc3339(worker.started_at),
                }
            )
        summary["total"] = len(listed)
        return {"endpointVersion": state.view.version, "summary": summary, "workers": listed}
