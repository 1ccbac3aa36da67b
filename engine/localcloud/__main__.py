"""`python -m engine.localcloud [--home PATH] [--port N]`: run the local cloud service.

Normally started detached by the engine (`engine.localcloud.discovery.ensure_cloud`). Binds
127.0.0.1 only (the API controls processes on this machine: it is never exposed), on a free
port unless `--port` is given (requests' headers must arrive within `$FLASH_HEADER_TIMEOUT`
seconds, default 5), publishes itself in the home's state file, and holds the home's
service lock so a second instance for the same home exits at once.

Exit status: 0 after a normal shutdown, 3 when a service already runs for this home, 4 when it
failed at start (a damaged cloud.db, a port that cannot be bound, a startup error); the
reason is on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import sys
import time

import uvicorn

from engine.home import Home
from engine.localcloud.discovery import claim_service_lock, load_or_create_token, write_state
from engine.localcloud.ports import listening_socket
from engine.localcloud.service import create_app
from engine.localcloud.store import StoreError, check_database
from runtime.header_timeout import header_timeout_from_env, header_timeout_protocol

EXIT_ALREADY_RUNNING = 3
EXIT_FAILED_AT_START = 4


def main(argv: list[str] | None = None) -> int:
    """Run the service until shut down; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m engine.localcloud",
        description="Run the local cloud service of a flash-tui home.",
        epilog=f"exit status: 0 stopped normally, {EXIT_ALREADY_RUNNING} already running for "
        f"this home, {EXIT_FAILED_AT_START} failed at start (reason on stderr)",
    )
    parser.add_argument("--home", default=None, help="flash-tui home (default: $FLASH_TUI_HOME)")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: free)")
    args = parser.parse_args(argv)

    try:
        header_timeout = header_timeout_from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    home = Home(args.home)
    lock_fd = claim_service_lock(home)
    if lock_fd is None:
        print(f"local cloud already running for {home.root}", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    try:
        return _serve(home, args.port, header_timeout)
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)


def _serve(home: Home, port_wanted: int, header_timeout: float) -> int:
    """Bind, serve until shut down; the exit status."""
    # A damaged database is reported as such and left untouched, before anything is started.
    try:
        check_database(home.db_path)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED_AT_START
    token = load_or_create_token(home)
    host = "127.0.0.1"
    try:
        sock = listening_socket(port_wanted)
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port_wanted}: {exc}", file=sys.stderr)
        return EXIT_FAILED_AT_START
    port = int(sock.getsockname()[1])
    started_at = time.time()

    server: uvicorn.Server | None = None

    def request_exit() -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(
        home, token, on_shutdown_request=request_exit, service_url=f"http://{host}:{port}"
    )
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        # slowloris: a client whose headers never end does not hold a connection forever
        http=header_timeout_protocol("auto", header_timeout),
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        # The state file is written once startup (recovery included) has completed, so a
        # client that finds it can use the API at once.
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            write_state(home, host=host, port=port, started_at=started_at)
            print(json.dumps({"event": "started", "pid": os.getpid(), "port": port}), flush=True)
        await task

    try:
        asyncio.run(serve())
    except SystemExit as exc:
        # uvicorn exits with its own status 3 when startup (our lifespan) fails: keep that
        # distinct from "already running".
        if not server.started:
            print("error: the local cloud failed at start (see above)", file=sys.stderr)
            return EXIT_FAILED_AT_START
        return int(exc.code or 0) if isinstance(exc.code, int) else 1
    finally:
        # Remove the state file only if it is still ours.
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(home.state_file.read_text())
            if state.get("pid") == os.getpid():
                home.state_file.unlink()
    if not server.started:
        return EXIT_FAILED_AT_START
    return 0


if __name__ == "__main__":
    sys.exit(main())
