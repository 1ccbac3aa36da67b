"""The worker process: serves one endpoint (resource) of a build directory over HTTP.

    python -m runtime.worker --build-dir DIR --resource NAME --port P [--host 127.0.0.1]
                             [--insecure]

- Reads `DIR/flash_manifest.json`, sets `FLASH_RESOURCE_NAME=NAME` (and `FLASH_MANIFEST_PATH`
  unless given) for itself, makes DIR the working directory and the first `sys.path` entry,
  installs the import shims, then imports `handler_<NAME>` (the manifest's `handler_file`).
- Binds the socket first and prints `listening on http://HOST:PORT` (port 0 picks a free port,
  the line tells which), so a supervisor can poll `/ping` at once: 204 while the handler is
  importing, 200 when ready; other routes answer 503 until then. The import runs in a thread
  because user modules (torch...) can take long; if it fails the worker prints the error on
  stderr and exits with status 1.
- Queue-based resources get the RunPod queue API (`runtime.queue_server`), load-balanced ones
  the handler module's FastAPI `app` (`runtime.lb_app`).
- Every route except `/ping` needs `Authorization: Bearer $FLASH_ENDPOINT_KEY`; without a key
  the worker refuses to start unless `--insecure`.
- Requests whose `Host` is not `127.0.0.1` or `localhost` (optional port; or the `--host`
  address) get 400 (DNS rebinding); a request's headers must arrive within
  `FLASH_HEADER_TIMEOUT` seconds or the connection is closed (slowloris).
- Stdout: `listening on http://HOST:PORT`, then `ready: resource NAME (kind, module)` once
  the handler is imported, then one line per request, flushed:
  `<METHOD> <path> <status> <ms>ms` (no query string, never a key). Errors go to stderr.
  When stdout is a regular file (the local cloud's per-endpoint log) every stdout/stderr line,
  the program's own included, is stamped with the time it was written (`runtime.logline`).
- SIGTERM/SIGINT: stop accepting, let in-flight requests and jobs finish, bounded; a watchdog
  ends the process after `FLASH_SHUTDOWN_TIMEOUT` seconds (default 4) whatever happens.
- Exit status: 0 after a shutdown, 1 when the build/manifest/resource/port/handler is bad,
  2 when no key is set and `--insecure` was not given.

Environment: `FLASH_ENDPOINT_KEY`, `FLASH_WORKER_CONCURRENCY` (QB jobs at a time, default 8),
`FLASH_JOB_RETENTION` (seconds a finished /run job stays readable, default 600; /runsync jobs
at most 60), `FLASH_RUNSYNC_WAIT` (seconds /runsync waits, default 90),
`FLASH_SHUTDOWN_TIMEOUT`, `FLASH_ENDPOINTS_FILE` / `FLASH_ENDPOINTS_URL` /
`FLASH_ENDPOINTS_TOKEN` / `FLASH_ENDPOINTS_TTL` (service registry, see `runtime.registry`),
`FLASH_CALL_TIMEOUT` (cross-endpoint calls, see `runtime.calls`), `FLASH_HEADER_TIMEOUT`
(seconds a request's headers may take, default 5; see `runtime.header_timeout`). A QB resource's
`config.executionTimeoutMs` in the manifest (when > 0) bounds each job, else
`FLASH_EXECUTION_TIMEOUT` (seconds, default 600 like RunPod; a job's own
`policy.executionTimeout` wins).

Limits (a worker must survive stuck code and floods):
- `FLASH_MAX_STUCK`: calls that timed out or were cancelled but whose sync code still holds a
  thread; at this many the worker is unhealthy (`/ping` 503), waits `FLASH_RECYCLE_DELAY`
  seconds (default 2) so probes see it, fails its queued jobs with the reason and exits with
  RECYCLE_EXIT_CODE (75), which the supervisor restarts at once. Default: the job concurrency
  (QB), anyio's thread limit, 40 (LB).
- `FLASH_REQUEST_TIMEOUT`: seconds an LB route may take before a 504 (default 330, RunPod's
  5.5 minutes; the manifest's `executionTimeoutMs` when set; 0: no timeout).
- `FLASH_MAX_BODY_BYTES`: request body cap (default: QB /run 10 MB, /runsync 20 MB, LB 30 MB)
  -> 413; `FLASH_JSON_MAX_DEPTH` (default 64) -> 400.
- `FLASH_QUEUE_MAX_JOBS` (default 1000 waiting) and `FLASH_QUEUE_MAX_BYTES` (default 128 MiB of
  unfinished input) -> 429 with `Retry-After`; `FLASH_RESULTS_MAX_BYTES` (default 128 MiB) of
  kept results, the oldest evicted.
- `FLASH_JOB_JOURNAL`: a file where a stopping QB worker leaves its kept /run job statuses
  (those it failed at a recycle included) for the next worker on the same endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import inspect
import json
import os
import socket
import stat
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uvicorn

from runtime import logline
from runtime.asgi import send_json
from runtime.auth import BearerAuthMiddleware, endpoint_key
from runtime.exitcodes import RECYCLE_EXIT_CODE
from runtime.header_timeout import header_timeout_from_env, header_timeout_protocol
from runtime.hostcheck import LOOPBACK_HOSTS, LoopbackHostMiddleware
from runtime.logline import StampedWriter
from runtime.payload import DEFAULT_MAX_DEPTH
from runtime.queue_server import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_QUEUE_BYTES,
    DEFAULT_MAX_QUEUE_JOBS,
    DEFAULT_MAX_RESULT_BYTES,
    DEFAULT_RETENTION,
    DEFAULT_RUNSYNC_WAIT,
    QueueServer,
)

__all__ = [
    "RequestLogMiddleware",
    "WorkerApp",
    "main",
    "resource_is_load_balanced",
]

MANIFEST_FILE = "flash_manifest.json"
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
DEFAULT_SHUTDOWN_TIMEOUT = 4.0
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


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _env_number(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return max(minimum, float(raw))
    except ValueError:
        _err(f"warning: ignoring {name}={raw!r} (not a number)")
        return default


def _env_int(name: str, default: int, *, minimum: int = 1) -> int:
    return int(_env_number(name, default, minimum=minimum))


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
            ms = (time.perf_counter() - start) * 1000
            line = f"{scope['method']} {scope['path']} {status} {ms:.1f}ms"
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
    ) -> None:
        self.build_dir = build_dir
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
        self.max_stuck = _env_int(
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
                    or _env_number("FLASH_REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT)
                    or None
                )
                guard.max_stuck = self.max_stuck
                guard.max_body_bytes = _env_int(
                    "FLASH_MAX_BODY_BYTES", guard.max_body_bytes, minimum=1
                )
                guard.max_depth = _env_int("FLASH_JSON_MAX_DEPTH", DEFAULT_MAX_DEPTH)
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
            retention=_env_number("FLASH_JOB_RETENTION", DEFAULT_RETENTION),
            runsync_wait=_env_number("FLASH_RUNSYNC_WAIT", DEFAULT_RUNSYNC_WAIT),
            execution_timeout=self._config_timeout()
            or _env_number("FLASH_EXECUTION_TIMEOUT", DEFAULT_EXECUTION_TIMEOUT),
            worker_id=f"{self.resource_name}-{os.getpid()}",
            shutdown_grace=1.0,
            max_queue_jobs=_env_int("FLASH_QUEUE_MAX_JOBS", DEFAULT_MAX_QUEUE_JOBS),
            max_queue_bytes=_env_int("FLASH_QUEUE_MAX_BYTES", DEFAULT_MAX_QUEUE_BYTES),
            max_result_bytes=_env_int("FLASH_RESULTS_MAX_BYTES", DEFAULT_MAX_RESULT_BYTES),
            max_body_bytes=_env_int("FLASH_MAX_BODY_BYTES", 1) if body_cap else None,
            max_depth=_env_int("FLASH_JSON_MAX_DEPTH", DEFAULT_MAX_DEPTH),
            busy_threads=lambda: self.executor.busy,
            max_stuck=self.max_stuck,
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
            _err(
                f"error: cannot start resource {self.resource_name!r}: failed to load "
                f"{self.module_name} from {self.build_dir}: {type(exc).__name__}: {exc}"
            )
            _err(traceback.format_exc().rstrip())
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
        _out(f"ready: resource {self.resource_name} ({kind}, {self.module_name})")
        self._watchdog = asyncio.get_running_loop().create_task(self._watch_health())

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
            delay = _env_number("FLASH_RECYCLE_DELAY", DEFAULT_RECYCLE_DELAY)
            _err(f"error: worker unhealthy: {reason}; recycling in {delay:g}s")
            # /ping answers 503 meanwhile, so health probes and `status` see it.
            deadline = time.monotonic() + delay
            while reason is not None and time.monotonic() < deadline:
                await asyncio.sleep(_HEALTH_CHECK_INTERVAL)
                reason = self.unhealthy()
            if reason is None:  # the stuck calls returned after all
                _err("warning: worker recovered (stuck calls returned); not recycling")
                continue
            _err(f"error: worker recycled: {reason}")
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
                        _err(f"warning: handler shutdown failed: {exc}")
                await send({"type": "lifespan.shutdown.complete"})
                return


class _Server(uvicorn.Server):
    """uvicorn's server plus a watchdog that bounds shutdown after the first signal."""

    shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            timer = threading.Timer(self.shutdown_timeout, _hard_exit)
            timer.daemon = True
            timer.start()
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals after shutdown (exit status -15); a graceful
        # shutdown is a normal exit for a supervised worker, so it exits 0 instead.
        self._captured_signals.clear()


def _stamps_lines() -> bool:
    # A log gets stamped lines: the local cloud says so (its log writer reads a pipe), and a
    # plain file is one; a terminal or another program's pipe gets them plain.
    if os.environ.get(logline.STAMP_ENV) == "1":
        return True
    try:
        return stat.S_ISREG(os.fstat(sys.stdout.fileno()).st_mode)
    except (OSError, ValueError):
        return False


def _hard_exit() -> None:
    _err("error: shutdown did not finish in time; exiting")
    os._exit(1)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit TCP_NODELAY from the listener on Linux. uvloop does not
    # set it on connections of a socket passed in, and without it Nagle + delayed ACKs add
    # ~40 ms to every response written in two parts (headers, then body).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.worker", description="Serve one Flash endpoint of a build."
    )
    parser.add_argument("--build-dir", required=True, help="the build directory")
    parser.add_argument("--resource", required=True, help="the resource (endpoint) name")
    parser.add_argument("--port", type=int, required=True, help="TCP port (0: pick a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="serve without FLASH_ENDPOINT_KEY (no authentication)",
    )
    return parser


def _load_manifest(build_dir: Path) -> dict[str, Any]:
    path = build_dir / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SystemExit(f"error: no {MANIFEST_FILE} in {build_dir} (run a build first)") from exc
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("resources"), dict):
        raise SystemExit(f"error: {path} is not a Flash manifest (no 'resources' object)")
    return data


def main(argv: list[str] | None = None) -> int:
    """Run the worker; returns the exit status (the process exits through `os._exit`)."""
    args = _parser().parse_args(argv)
    key = endpoint_key()
    if key is None and not args.insecure:
        _err("error: FLASH_ENDPOINT_KEY is not set; refusing to serve without authentication")
        _err("       (set the key, or pass --insecure for a local unauthenticated worker)")
        return 2
    build_dir = Path(args.build_dir).resolve()
    if not build_dir.is_dir():
        _err(f"error: build directory {build_dir} does not exist")
        return 1
    try:
        manifest = _load_manifest(build_dir)
    except SystemExit as exc:
        _err(str(exc))
        return 1
    resource = manifest["resources"].get(args.resource)
    if not isinstance(resource, dict):
        known = ", ".join(sorted(manifest["resources"])) or "none"
        _err(f"error: resource {args.resource!r} is not in the manifest (known: {known})")
        return 1

    os.environ["FLASH_RESOURCE_NAME"] = args.resource
    os.environ.setdefault("FLASH_MANIFEST_PATH", str(build_dir / MANIFEST_FILE))
    os.chdir(build_dir)
    sys.path.insert(0, str(build_dir))

    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        _err(f"error: cannot bind {args.host}:{args.port}: {exc}")
        return 1
    port = sock.getsockname()[1]
    host_text = f"[{args.host}]" if ":" in args.host else args.host

    concurrency = int(_env_number("FLASH_WORKER_CONCURRENCY", DEFAULT_CONCURRENCY, minimum=1))
    try:
        header_timeout = header_timeout_from_env()
    except ValueError as exc:
        _err(f"error: {exc}")
        return 1
    server: _Server | None = None

    def fatal() -> None:
        if server is not None:
            server.should_exit = True

    worker = WorkerApp(build_dir, args.resource, resource, concurrency=concurrency, on_fatal=fatal)
    app: Any = worker
    if key is not None:
        app = BearerAuthMiddleware(app, key)
    # DNS rebinding: only loopback names (and the address bound, when it is another one);
    # a wildcard bind serves whatever name the network uses, so it cannot be checked.
    if args.host not in _WILDCARD_HOSTS:
        app = LoopbackHostMiddleware(app, LOOPBACK_HOSTS | {args.host, host_text})
    app = RequestLogMiddleware(app)
    grace = _env_number("FLASH_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT, minimum=0.5)
    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=False,
        log_level="warning",
        # In-flight requests get most of the budget; the watchdog ends whatever is left.
        timeout_graceful_shutdown=max(0.2, grace - 1.5),
        timeout_keep_alive=30,
        http=header_timeout_protocol("auto", header_timeout),
    )
    server = _Server(config)
    server.shutdown_timeout = grace
    if args.insecure and key is None:
        _err("warning: --insecure: serving WITHOUT authentication")
    _out(f"listening on http://{host_text}:{port}")
    # Not asyncio.run(): its final executor shutdown would join pool threads, and a sync user
    # function stuck in one would hold the exit hostage; `_run` ends with os._exit instead.
    # uvicorn's own choice of loop (uvloop when installed), as `uvicorn.run` would make.
    loop_factory = config.get_loop_factory()
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        pass
    return worker.exit_code


def _run() -> None:
    if _stamps_lines():
        logline.install()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: a sync user function still running in a pool thread must not hold the
    # process open after shutdown (threads are joined at normal interpreter exit).
    os._exit(code)


if __name__ == "__main__":
    _run()
