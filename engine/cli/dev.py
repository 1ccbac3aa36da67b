"""`flash-tui dev [PATH] [--port 8888] [--down]`: deploy locally, serve, redeploy on save.

Serves the project on 127.0.0.1:PORT the way upstream's `flash run` does (routes by
`engine.dev.routes`, `/docs` lists them), with the project's own `main.py` app mounted. Deploys
without asking (it is the dev loop) but prints the plan's summary; on every save redeploys the
endpoints that changed and prints one line per reload. Ctrl+C (or SIGTERM) stops the server
and asks nothing; the endpoints keep running unless `--down`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn
from rich.markup import escape

from engine.cli.arguments import add_command
from engine.cli.plan import err_console, progress_printer
from engine.dev.routes import route_table
from engine.dev.session import DevSession
from engine.localcloud.ports import listening_socket
from engine.operation_results import OpError
from engine.operations import Engine
from engine.wording import plural

DEFAULT_PORT = 8888


def register(subparsers: Any) -> None:
    """Add the `dev` subcommand."""
    parser = add_command(
        subparsers,
        "dev",
        run=run,
        path=True,
        help="deploy to the local cloud and serve the project's routes, redeploying on save",
        description="Deploy the project to the local cloud and serve it on 127.0.0.1:PORT "
        "like upstream's `flash run`: /{file}/runsync for queue functions, /{file}{path} for "
        "load-balanced routes, the project's main.py app, /docs. Every save redeploys the "
        "endpoints that changed. Ctrl+C stops the server; endpoints keep running unless --down.",
    )
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--down", action="store_true", help="undeploy the project's endpoints on exit"
    )


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range (0-65535): {port}")
    return port


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: `dev` owns Ctrl+C (no re-raised SIGINT)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _bind(port: int) -> socket.socket:
    try:
        return listening_socket(port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise OpError(f"port {port} is in use: pick another with --port") from None
        raise OpError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None


async def _serve(args: argparse.Namespace, stop: asyncio.Event) -> int:
    sock = _bind(args.port)
    port = sock.getsockname()[1]
    console = err_console()
    async with Engine(Path(args.path)) as engine:
        session = DevSession(engine, say=_say, on_event=progress_printer(console, False))
        server: _QuietServer | None = None
        serving: asyncio.Task[None] | None = None
        watching: asyncio.Task[None] | None = None
        try:
            first = await session.start()
            if first.plan_summary:
                _say(f"plan: {first.plan_summary}")
            _say(first.line(verb="deployed"))
            for line in route_table(session.routes):
                _say(f"  {line}")
            if session.app is not None:
                for method, path, _summary in session.app.routes():
                    _say(f"  {method:<6} {path}  main.py")
            config = uvicorn.Config(
                session.server, log_level="warning", access_log=False, lifespan="on"
            )
            server = _QuietServer(config)
            serving = asyncio.ensure_future(server.serve(sockets=[sock]))
            watching = asyncio.ensure_future(session.watch(stop))
            _say(
                f"serving http://127.0.0.1:{port} (docs: /docs); watching for changes, Ctrl+C stops"
            )
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({serving, watching, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            for task in (serving, watching):
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            stop.set()
            if server is not None:
                server.should_exit = True
            for task in (serving, watching):
                if task is not None:
                    with contextlib.suppress(BaseException):
                        await asyncio.wait_for(task, 10)
            await session.close()
            sock.close()
        return await _leave(engine, args.down)


async def _leave(engine: Engine, down: bool) -> int:
    if down:
        report = await engine.undeploy()
        removed = len(report.plan.items)
        _say(f"stopped: {plural(removed, 'endpoint')} undeployed")
        return 0 if report.outcome is None or report.outcome.ok else 1
    running = len(await engine.health_targets())
    if running:
        _say(
            f"stopped: {plural(running, 'endpoint')} keep running on the local cloud "
            "— `flash-tui undeploy --all` stops them"
        )
    else:
        _say("stopped")
    return 0


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl+C."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await _serve(args, stop)

    try:
        return asyncio.run(main())
    except OpError as exc:
        err_console().print(f"[bold red]error[/]: {escape(str(exc))}", soft_wrap=True)
        return 1
    except KeyboardInterrupt:  # Ctrl+C before the handlers were in place
        return 0
