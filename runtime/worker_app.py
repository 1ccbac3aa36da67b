"""The worker's ASGI app: `/ping` while the handler module imports, then the endpoint's app
(`runtime.queue_server` for queue-based resources, the handler's FastAPI app for load-balanced
ones) with the limits read from the environment, and the watchdog that recycles a worker whose
stuck calls make it useless. The process around it (arguments, socket, signals, exit) and the
environment it reads are described in `runtime.worker`.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import os
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runtime.asgi import send_json
from runtime.envnumbers import env_int, env_number
from runtime.exitcodes import RECYCLE_EXIT_CODE
from runtime.logline import StampedWriter
from runtime.payload import DEFAULT_MAX_DEPTH
from runtime.queue_server import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_QUEUE_BYTES,
    DEFAULT_MAX_QUEUE_JOBS,
    DEFAULT_MAX_RESULT_BYTES,
    DEFAULT_RETENTION,
    DEFAULT_RUNSYNC_WAIT,
    QueueLimits,
    QueueServer,
)
from runtime.sandbox import ISOLATION_HEADER

__all__ = [
    "RequestLogMiddleware",
    "WorkerApp",
    "err_line",
    "out_line",
    "resource_is_load_balanced",
]

DEFAULT_EXECUTION_TIMEOUT = 600.0  # RunPod's default executionTimeout
DEFAULT_REQUEST_TIMEOUT = 330.0  # RunPod's load balancer: 5.5 minutes per request
DEFAULT_RECYCLE_DELAY = 2.0
_HEALTH_CHECK_INTERVAL = 0.2
# anyio's default thread limiter (runtime.lb_app.DEFAULT_MAX_STUCK; not imported: a QB worker
# does not load FastAPI).
_LB_MAX_STUCK = 40
_LB_TYPES = frozenset(
    {
        "LoadBalancerSlsResource",
        "LiveLoadBalancer",
        "CpuLoadBalancerSlsResource",
        "CpuLiveLoadBalancer",
    }
)


def out_line(line: str) -> None:
    """Write a line on stdout, flushed (the supervisor reads it)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def err_line(line: str) -> None:
    """Write a line on stderr, flushed."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class _CountingExecutor(ThreadPoolExecutor):
    """A thread pool that knows how many of its threads are running a call right now."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._busy = 0
        self._busy_lock = threading.Lock()

    @property
    def busy(self) -> int:
        """Threads running a call."""
        return self._busy

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run `fn` in a thread, counted while it runs."""

        def counted() -> Any:
            with self._busy_lock:
                self._busy += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._busy_lock:
                    self._busy -= 1

        return super().submit(counted)


def resource_is_load_balanced(resource: dict[str, Any]) -> bool:
    """Whether a manifest resource is served as LB (CPU load balancers too, unlike upstream)."""
    return str(resource.get("resource_type")) in _LB_TYPES or bool(resource.get("is_load_balanced"))


class RequestLogMiddleware:
    """Writes `<METHOD> <path> <status> <ms>ms` to stdout after each HTTP request.

    The query string is left out of the line: it is user data and may be long or sensitive.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        sys.stdout.flush()  # earlier buffered lines first: the log lines bypass the buffer
        self._fd = sys.stdout.fileno()
        # In a log file the line goes through the stamping stdout (it carries its time).
        self._stamped = sys.stdout if isinstance(sys.stdout, StampedWriter) else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_logged(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            self.log(scope["method"], scope["path"], status, time.perf_counter() - start)

    def log(self, method: str, path: str, status: int, seconds: float) -> None:
        """Write one request's line (also for requests that came another way than HTTP)."""
        line = f"{method} {path} {status} {seconds * 1000:.1f}ms"
        if self._stamped is not None:
            self._stamped.write_line(line)
        else:
            try:
                # One write(2) per line: unbuffered, so it is "flushed" at no extra cost.
                os.write(self._fd, (line + "\n").encode("utf-8", "replace"))
            except (OSError, ValueError):
                pass  # a closed log pipe must not fail the request


class _Lifespan:
    """Drives an inner ASGI app's lifespan protocol (startup now, shutdown later)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        sys.stdout.flush()  # earlier buffered lines first: the log lines bypass the buffer
        self._fd = sys.stdout.fileno()
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            await self.app(
                {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                self._to_app.get,
                self._from_app.put,
            )
        except Exception:
            # An app without lifespan support raises on the unknown scope type: that is fine.
            pass
        finally:
            await self._from_app.put({"type": "_ended"})

    async def startup(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._to_app.put({"type": "lifespan.startup"})
        message = await self._from_app.get()
        if message["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"startup failed: {message.get('message', '')}")

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        await self._from_app.get()


def _with_header(send: Any, header: tuple[bytes, bytes]) -> Any:
    """`send` adding `header` to the response start."""

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), header]}
        await send(message)

    return sending


class WorkerApp:
    """The worker's ASGI app: answers /ping while the handler imports, then delegates."""

    def __init__(
        self,
        build_dir: Path,
        resource_name: str,
        resource: dict[str, Any],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        on_fatal: Callable[[], None] | None = None,
        isolation: str | None = None,
    ) -> None:
        self.build_dir = build_dir
        # What this process applied (runtime.sandbox); its /ping says so to the supervisor.
        self._isolation_header = (
            None if isolation is None else (ISOLATION_HEADER.encode(), isolation.encode())
        )
        self.resource_name = resource_name
        self.resource = resource
        self.load_balanced = resource_is_load_balanced(resource)
        self.module_name = str(resource.get("handler_file") or f"handler_{resource_name}.py")
        self.module_name = self.module_name.removesuffix(".py")
        self.concurrency = concurrency
        self.on_fatal = on_fatal
        self.inner: Any = None
        self.ready = False
        self.exit_code = 0
        self.max_stuck = env_int(
            "FLASH_MAX_STUCK", _LB_MAX_STUCK if self.load_balanced else concurrency
        )
        self._lifespan: _Lifespan | None = None
        self._boot: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        # Sync QB functions run here: `concurrency` threads for running jobs plus room for the
        # stuck threads tolerated before a recycle, so stuck code never starves later jobs.
        self.executor = _CountingExecutor(concurrency + self.max_stuck, "job")

    def _import_handler(self) -> Any:
        try:
            from runtime import shims
        except ImportError:  # the build stream's shims are optional for the worker
            pass
        else:
            shims.install()
        return importlib.import_module(self.module_name)

    def _config_timeout(self) -> float | None:
        """The manifest's `executionTimeoutMs` in seconds, None when unset or 0."""
        config = self.resource.get("config") or {}
        timeout_ms = config.get("executionTimeoutMs") if isinstance(config, dict) else None
        if isinstance(timeout_ms, (int, float)) and timeout_ms > 0:
            return timeout_ms / 1000
        return None

    def _make_inner(self, module: Any) -> Any:
        if self.load_balanced:
            app = getattr(module, "app", None)
            if app is None:
                raise RuntimeError(f"{self.module_name} defines no `app` (load-balanced handler)")
            guard = getattr(getattr(app, "state", None), "flash_calls", None)
            if guard is not None:  # an app from create_lb_app (a hand-made app has none)
                # 0 means no timeout (None), as for FLASH_EXECUTION_TIMEOUT.
                guard.timeout = (
                    self._config_timeout()
                    or env_number("FLASH_REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT)
                    or None
                )
                guard.max_stuck = self.max_stuck
                guard.max_body_bytes = env_int(
                    "FLASH_MAX_BODY_BYTES", guard.max_body_bytes, minimum=1
                )
                guard.max_depth = env_int("FLASH_JSON_MAX_DEPTH", DEFAULT_MAX_DEPTH)
            return app
        handler = getattr(module, "handler", None)
        if handler is None or not callable(handler):
            raise RuntimeError(f"{self.module_name} defines no `handler` (queue-based handler)")
        job_handler: Callable[[dict[str, Any]], Awaitable[Any] | Any] = handler
        if not inspect.iscoroutinefunction(handler):
            # A plain sync handler (e.g. hand-written for runpod) must not block the loop.
            async def job_handler(job: dict[str, Any]) -> Any:
                return await asyncio.get_running_loop().run_in_executor(None, handler, job)

        body_cap = os.environ.get("FLASH_MAX_BODY_BYTES", "").strip()
        journal = os.environ.get("FLASH_JOB_JOURNAL", "").strip()
        return QueueServer(
            job_handler,
            concurrency=self.concurrency,
            retention=env_number("FLASH_JOB_RETENTION", DEFAULT_RETENTION),
            runsync_wait=env_number("FLASH_RUNSYNC_WAIT", DEFAULT_RUNSYNC_WAIT),
            execution_timeout=self._config_timeout()
            or env_number("FLASH_EXECUTION_TIMEOUT", DEFAULT_EXECUTION_TIMEOUT),
            worker_id=f"{self.resource_name}-{os.getpid()}",
            shutdown_grace=1.0,
            limits=QueueLimits(
                max_queue_jobs=env_int("FLASH_QUEUE_MAX_JOBS", DEFAULT_MAX_QUEUE_JOBS),
                max_queue_bytes=env_int("FLASH_QUEUE_MAX_BYTES", DEFAULT_MAX_QUEUE_BYTES),
                max_result_bytes=env_int("FLASH_RESULTS_MAX_BYTES", DEFAULT_MAX_RESULT_BYTES),
                max_body_bytes=env_int("FLASH_MAX_BODY_BYTES", 1) if body_cap else None,
                max_depth=env_int("FLASH_JSON_MAX_DEPTH", DEFAULT_MAX_DEPTH),
                max_stuck=self.max_stuck,
            ),
            busy_threads=lambda: self.executor.busy,
            journal=Path(journal) if journal else None,
        )

    async def _boot_handler(self) -> None:
        try:
            module = await asyncio.to_thread(self._import_handler)
            inner = self._make_inner(module)
            lifespan = _Lifespan(inner)
            await lifespan.startup()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            err_line(
                f"error: cannot start resource {self.resource_name!r}: failed to load "
                f"{self.module_name} from {self.build_dir}: {type(exc).__name__}: {exc}"
            )
            err_line(traceback.format_exc().rstrip())
            self.exit_code = 1
            if self.on_fatal is not None:
                self.on_fatal()
            return
        self.inner, self._lifespan, self.ready = inner, lifespan, True
        # Everything imported so far (frameworks, user libraries) lives as long as the
        # process: freezing it keeps full garbage collections from walking it on every run.
        gc.collect()
        gc.freeze()
        kind = "load-balanced" if self.load_balanced else "queue-based"
        out_line(f"ready: resource {self.resource_name} ({kind}, {self.module_name})")
        self._watchdog = asyncio.get_running_loop().create_task(self._watch_health())

    def job_runner(self) -> QueueServer | None:
        """The queue that runs this worker's jobs, once the handler is loaded (else None)."""
        inner = self.inner
        return inner if self.ready and isinstance(inner, QueueServer) else None

    def unhealthy(self) -> str | None:
        """Why the served app cannot serve any more (stuck calls), or None."""
        inner = self.inner
        check = getattr(inner, "unhealthy", None)
        if check is None:
            check = getattr(
                getattr(getattr(inner, "state", None), "flash_calls", None), "unhealthy", None
            )
        return check() if check is not None else None

    async def _watch_health(self) -> None:
        """Recycle the worker once stuck calls make it useless (threads cannot be killed)."""
        while True:
            await asyncio.sleep(_HEALTH_CHECK_INTERVAL)
            reason = self.unhealthy()
            if reason is None:
                continue
            delay = env_number("FLASH_RECYCLE_DELAY", DEFAULT_RECYCLE_DELAY)
            err_line(f"error: worker unhealthy: {reason}; recycling in {delay:g}s")
            # /ping answers 503 meanwhile, so health probes and `status` see it.
            deadline = time.monotonic() + delay
            while reason is not None and time.monotonic() < deadline:
                await asyncio.sleep(_HEALTH_CHECK_INTERVAL)
                reason = self.unhealthy()
            if reason is None:  # the stuck calls returned after all
                err_line("warning: worker recovered (stuck calls returned); not recycling")
                continue
            err_line(f"error: worker recycled: {reason}")
            if isinstance(self.inner, QueueServer):
                self.inner.stop_reason = f"worker recycled: {reason}"
            self.exit_code = RECYCLE_EXIT_CODE
            if self.on_fatal is not None:
                self.on_fatal()
            return

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/ping" and self._isolation_header is not None:
            send = _with_header(send, self._isolation_header)
        if self.ready:
            await self.inner(scope, receive, send)
            return
        if scope["path"] == "/ping":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b'{"error":"worker is starting"}'
        await send_json(send, 503, body, [(b"retry-after", b"1")])

    async def _serve_lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                loop = asyncio.get_running_loop()
                loop.set_default_executor(self.executor)
                self._boot = loop.create_task(self._boot_handler())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._boot is not None and not self._boot.done():
                    self._boot.cancel()
                if self._watchdog is not None:
                    self._watchdog.cancel()
                if self._lifespan is not None:
                    try:
                        await self._lifespan.shutdown()
                    except Exception as exc:  # shutdown must finish regardless
                        err_line(f"warning: handler shutdown failed: {exc}")
                await send({"type": "lifespan.shutdown.complete"})
                return
