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
- With `FLASH_IS_MOTHERSHIP=true` the worker is its environment's mothership
  (`runtime.mothership`): it provisions the other resources of its build through the control
  plane described by `FLASH_STATE_URL`, `FLASH_STATE_TOKEN` (scoped to one app and environment),
  `FLASH_APP_NAME`, `FLASH_ENV` and `FLASH_BUILD_ID`, and serves `GET /manifest`
  (`FLASH_MANIFEST_TTL`, default 300 s). NAME need not be in the manifest then: a generated
  mothership serves `/ping` and `/manifest` only.
- Exit status: 0 after a shutdown, 1 when the build/manifest/resource/port/handler is bad,
  2 when no key is set and `--insecure` was not given.

Environment: `FLASH_ENDPOINT_KEY`, `FLASH_WORKER_CONCURRENCY` (QB jobs at a time, default 8),
`FLASH_JOB_RETENTION` (seconds a finished /run job stays readable, default 600; /runsync jobs
at most 60), `FLASH_RUNSYNC_WAIT` (seconds /runsync waits, default 90),
`FLASH_SHUTDOWN_TIMEOUT`, `FLASH_ENDPOINTS` / `FLASH_ENDPOINTS_FILE` / `FLASH_ENDPOINTS_URL` /
`FLASH_ENDPOINTS_TOKEN` / `FLASH_ENDPOINTS_TTL` (service registry, see `runtime.registry`),
`FLASH_CALL_TIMEOUT` (cross-endpoint calls, see `runtime.calls`), `FLASH_HEADER_TIMEOUT`
(seconds a request's headers may take, default 5; see `runtime.header_timeout`),
`FLASH_WORKER_SOCKET=off` (no Unix socket for same-machine callers, nor a QB worker's frame
socket; see `runtime.worker_socket` and `runtime.local_frames`). A QB resource's
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
- `FLASH_SANDBOX_READ` / `FLASH_SANDBOX_WRITE`: the paths (os.pathsep lists) this worker may
  read / write; when given, the worker restricts itself to them with Landlock before it
  imports the handler (`runtime.sandbox`), or says once on its `flash` stream that it cannot.
  Its `/ping` answers carry the isolation it applied (header `x-flash-isolation`).
- `FLASH_JOB_JOURNAL`: a file where a stopping QB worker leaves its kept /run job statuses
  (those it failed at a recycle included) for the next worker on the same endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import uvicorn

from runtime import logline, sandbox
from runtime.auth import BearerAuthMiddleware, endpoint_key
from runtime.envnumbers import env_number
from runtime.header_timeout import header_timeout_from_env, header_timeout_protocol
from runtime.hostcheck import LOOPBACK_HOSTS, LoopbackHostMiddleware
from runtime.local_frames import FrameServer
from runtime.queue_server import DEFAULT_CONCURRENCY
from runtime.worker_app import RequestLogMiddleware, WorkerApp, err_line, out_line
from runtime.worker_socket import (
    FRAMES_HEADER,
    FRAMES_KIND,
    SOCKET_ENV,
    SOCKET_HEADER,
    WorkerSocket,
    bind_worker_socket,
)
from runtime.write_coalescing import coalescing_protocol

__all__ = ["main", "run"]

MANIFEST_FILE = "flash_manifest.json"
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
DEFAULT_SHUTDOWN_TIMEOUT = 4.0


class _Server(uvicorn.Server):
    """uvicorn's server plus a watchdog that bounds shutdown after the first signal."""

    shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT
    local_sockets: tuple[WorkerSocket, ...] = ()
    # Called once at the first signal (from the signal handler: it must only schedule work).
    on_exit: Callable[[], None] | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            timer = threading.Timer(self.shutdown_timeout, _hard_exit)
            timer.daemon = True
            timer.start()
            for local in self.local_sockets:
                # Gone from the directory at once (new callers use TCP), even if the watchdog
                # ends the process before the socket is closed; open connections carry on.
                with contextlib.suppress(OSError):
                    os.unlink(local.path)
            if self.on_exit is not None:
                self.on_exit()
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


def _sandbox(build_dir: Path) -> str | None:
    """Apply the sandbox policy the supervisor passed, if any; the isolation in force
    (`landlock-vN` or `none`), None when it cannot be applied."""
    policy = sandbox.SandboxPolicy.from_env(os.environ)
    os.environ.pop(sandbox.READ_ENV, None)  # the user's code and children need not see them
    os.environ.pop(sandbox.WRITE_ENV, None)
    if policy is None:
        return "none"
    # Its own build is always readable, whatever the policy lists.
    policy = sandbox.SandboxPolicy((*policy.read, str(build_dir)), policy.write)
    try:
        result = sandbox.apply(policy)
    except OSError as exc:
        err_line(f"error: cannot apply the sandbox: {exc} (FLASH_SANDBOX=off runs without)")
        return None
    if result.isolation == "none":
        _flash_line(f"isolation: none ({result.reason}): this worker can read any file you can")
    return result.isolation


def _flash_line(text: str) -> None:
    """A line of the local cloud's own stream (`flash`) in the log, plain elsewhere."""
    if _stamps_lines():
        sys.stdout.flush()
        os.write(sys.stdout.fileno(), logline.format_line(text, "flash").encode())
    else:
        out_line(text)


def _hard_exit() -> None:
    err_line("error: shutdown did not finish in time; exiting")
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
    # Listening before `listening on` is printed: a client connecting at once waits in the
    # backlog until the server runs, instead of being refused while the app starts up.
    sock.listen(2048)
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
        err_line("error: FLASH_ENDPOINT_KEY is not set; refusing to serve without authentication")
        err_line("       (set the key, or pass --insecure for a local unauthenticated worker)")
        return 2
    build_dir = Path(args.build_dir).resolve()
    if not build_dir.is_dir():
        err_line(f"error: build directory {build_dir} does not exist")
        return 1
    try:
        manifest = _load_manifest(build_dir)
    except SystemExit as exc:
        err_line(str(exc))
        return 1
    resource = manifest["resources"].get(args.resource)
    # A mothership generated for a project that has none runs no user code: its resource is
    # not in the manifest.
    mothership = os.environ.get("FLASH_IS_MOTHERSHIP", "").strip().lower() == "true"
    if not isinstance(resource, dict) and not mothership:
        known = ", ".join(sorted(manifest["resources"])) or "none"
        err_line(f"error: resource {args.resource!r} is not in the manifest (known: {known})")
        return 1

    # Before any user code is imported: from here on the kernel holds the worker to its policy.
    isolation = _sandbox(build_dir)
    if isolation is None:
        return 1
    os.environ["FLASH_RESOURCE_NAME"] = args.resource
    os.environ.setdefault("FLASH_MANIFEST_PATH", str(build_dir / MANIFEST_FILE))
    os.chdir(build_dir)
    sys.path.insert(0, str(build_dir))

    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        err_line(f"error: cannot bind {args.host}:{args.port}: {exc}")
        return 1
    port = sock.getsockname()[1]
    # Calls from workers on this machine come over a Unix socket when they can (cheaper).
    local = None
    if os.environ.get(SOCKET_ENV, "").strip().lower() not in ("off", "0", "false", "no"):
        local = bind_worker_socket(port)
    host_text = f"[{args.host}]" if ":" in args.host else args.host

    concurrency = int(env_number("FLASH_WORKER_CONCURRENCY", DEFAULT_CONCURRENCY, minimum=1))
    try:
        header_timeout = header_timeout_from_env()
    except ValueError as exc:
        err_line(f"error: {exc}")
        return 1
    server: _Server | None = None

    def fatal() -> None:
        if server is not None:
            server.should_exit = True

    worker = (
        WorkerApp(
            build_dir,
            args.resource,
            resource,
            concurrency=concurrency,
            on_fatal=fatal,
            isolation=isolation,
        )
        if isinstance(resource, dict)
        else None
    )
    app: Any = worker
    if mothership:
        try:
            app = _mothership_app(build_dir, args.resource, manifest, worker)
        except ValueError as exc:
            err_line(f"error: cannot start mothership {args.resource!r}: {exc}")
            return 1
    # A queue-based worker's jobs, as frames for same-machine callers (runtime.local_frames).
    frames = frame_server = None
    if local is not None and worker is not None and not worker.load_balanced and not mothership:
        frames = bind_worker_socket(port, kind=FRAMES_KIND)
    advertised = [(SOCKET_HEADER, local.path)] if local is not None else []
    if key is not None:
        # The frame socket is named to key holders only (not on /ping, not on a 401): its
        # hello checks the key, but the name alone is no business of another project's.
        named = [(FRAMES_HEADER.encode(), frames.path.encode())] if frames is not None else []
        app = BearerAuthMiddleware(app, key, answer_headers=named)
    elif frames is not None:  # --insecure: anyone may call it anyway
        advertised.append((FRAMES_HEADER, frames.path))
    # DNS rebinding: only loopback names (and the address bound, when it is another one);
    # a wildcard bind serves whatever name the network uses, so it cannot be checked.
    if args.host not in _WILDCARD_HOSTS:
        app = LoopbackHostMiddleware(app, LOOPBACK_HOSTS | {args.host, host_text})
    app = logged = RequestLogMiddleware(app)
    grace = env_number("FLASH_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT, minimum=0.5)
    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=False,
        log_level="warning",
        # In-flight requests get most of the budget; the watchdog ends whatever is left.
        timeout_graceful_shutdown=max(0.2, grace - 1.5),
        timeout_keep_alive=30,
        http=header_timeout_protocol(coalescing_protocol("auto"), header_timeout),
        headers=advertised,
    )
    server = _Server(config)
    server.shutdown_timeout = grace
    server.local_sockets = tuple(s for s in (local, frames) if s is not None)
    if args.insecure and key is None:
        err_line("warning: --insecure: serving WITHOUT authentication")
    out_line(f"listening on http://{host_text}:{port}")
    # Not asyncio.run(): its final executor shutdown would join pool threads, and a sync user
    # function stuck in one would hold the exit hostage; `run` ends with os._exit instead.
    # uvicorn's own choice of loop (uvloop when installed), as `uvicorn.run` would make.
    loop_factory = config.get_loop_factory()
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        if frames is not None and worker is not None:
            runner = worker.job_runner
            # Its calls in flight hold the shutdown as HTTP requests do (same grace).
            served = FrameServer(runner, logged.log, key, server.server_state.tasks)
            # Held until the end: a server object that is collected closes its socket.
            frame_server = loop.run_until_complete(
                loop.create_unix_server(served.protocol, sock=frames.sock)
            )
            listening = frame_server

            def stop_frames() -> None:
                # As uvicorn with HTTP: no new connections, idle ones closed, busy ones after
                # their last answer; callers go over HTTP, which finds the port closed.
                listening.close()
                served.stop()

            server.on_exit = lambda: loop.call_soon_threadsafe(stop_frames)
        sockets = [sock] if local is None else [sock, local.sock]
        loop.run_until_complete(server.serve(sockets=sockets))
    except KeyboardInterrupt:
        pass
    finally:
        if frame_server is not None:
            frame_server.close()
        for bound in server.local_sockets:
            bound.close()
    return worker.exit_code if worker is not None else 0


def _mothership_app(
    build_dir: Path, name: str, manifest: dict[str, Any], worker: WorkerApp | None
) -> Any:
    """The mothership around the endpoint's own app (None: a generated mothership)."""
    # Imported here: no other worker pays for the provisioner's imports at start.
    from runtime.control_plane import LocalControlPlane
    from runtime.mothership import DEFAULT_MANIFEST_TTL, Mothership, MothershipApp

    build_id = os.environ.get("FLASH_BUILD_ID", "").strip()
    plane = LocalControlPlane.from_env(os.environ, build_id)
    ttl = env_number("FLASH_MANIFEST_TTL", DEFAULT_MANIFEST_TTL)
    ship = Mothership(name, build_dir, manifest, plane, build_id=build_id, ttl=ttl, log=out_line)
    out_line(f"mothership of environment {plane.environment}: {len(ship.children)} children")
    return MothershipApp(ship, worker)


def run(argv: list[str] | None = None) -> NoReturn:
    """Run the worker as a process does (`python -m`, or a child of `runtime.forkserver`)."""
    if _stamps_lines():
        logline.install()
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: a sync user function still running in a pool thread must not hold the
    # process open after shutdown (threads are joined at normal interpreter exit).
    os._exit(code)


if __name__ == "__main__":
    run()
