"""A project's own FastAPI app (`main.py`'s `app`), served for `flash-tui dev` in its own process.

    python -m runtime.devapp --project DIR --port P [--module main] [--attr app]

Upstream's `flash init` skeleton (tetra_rp era) is a `main.py` with `app = FastAPI()` and
routers awaiting `@remote` functions; upstream's `flash run` serves it with uvicorn. Here the
user's code runs on this runtime: the import shims make `tetra_rp` / `runpod_flash` ours, and
no `FLASH_RESOURCE_NAME` is set, so every `@remote` call goes to its deployed endpoint through
the service registry the environment names (`FLASH_ENDPOINTS_FILE`: the local cloud's table).

Binds the port first, prints `listening on http://127.0.0.1:P`, then imports the app: an
import error is printed on stderr as `error: FILE:LINE: ...` with its traceback, exit 1.
Requests whose `Host` is not loopback get 400. SIGTERM/SIGINT end it (exit 0), and so does
its parent's death (checked every second): a killed `dev` leaves no app holding a port.
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["load_app", "main"]


def load_app(project: Path, module: str, attr: str) -> Any:
    """Import `module` from `project` with the shims installed and return its `attr`."""
    from runtime import shims

    shims.install()
    sys.path.insert(0, str(project))
    loaded = importlib.import_module(module)
    app = getattr(loaded, attr, None)
    if app is None:
        raise AttributeError(f"{module}.py has no `{attr}`")
    return app


def _exit_with_parent() -> None:
    """End this process when the one that started it is gone (we get re-parented)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _error_location(exc: BaseException, project: Path) -> str:
    """`main.py:12` for the deepest frame in the project (or the syntax error's line)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_relative(exc.filename, project)}:{exc.lineno}"
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve().is_relative_to(project):
            where = f"{_relative(frame.filename, project)}:{frame.lineno}"
    return where


def _relative(filename: str, project: Path) -> str:
    path = Path(filename).resolve()
    return str(path.relative_to(project)) if path.is_relative_to(project) else filename


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the app; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m runtime.devapp")
    parser.add_argument("--project", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--module", default="main")
    parser.add_argument("--attr", default="app")
    args = parser.parse_args(argv)
    _exit_with_parent()
    project = args.project.resolve()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by its connections: the dev server keeps one alive, and without it each
    # response written in two parts waits ~40 ms for a delayed ACK (see runtime.worker).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", args.port))
    # Listening before "ready" is said: a connection made then waits in the backlog until the
    # server runs, instead of being refused.
    sock.listen(2048)
    port = sock.getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    try:
        app = load_app(project, args.module, args.attr)
    except Exception as exc:
        where = _error_location(exc, project) or f"{args.module}.py"
        sys.stderr.write(f"error: {where}: {type(exc).__name__}: {exc}\n")
        traceback.print_exc()
        return 1
    import uvicorn

    from runtime.hostcheck import LoopbackHostMiddleware

    config = uvicorn.Config(
        LoopbackHostMiddleware(app), log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    print(f"ready: {args.module}:{args.attr}", flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
