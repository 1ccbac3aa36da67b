"""Serve an ASGI app with uvicorn on a free 127.0.0.1 port, in a thread with its own loop.

`ThreadedServer(app).start()` returns once the server accepts connections; `.url` is its root
and `.call(coroutine)` runs a coroutine on the server's loop (objects such as the data plane
keep asyncio state that belongs to that loop) and returns its result.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn

from fakes.runpod_workers import free_port

__all__ = ["ThreadedServer"]

T = TypeVar("T")


class ThreadedServer:
    """One uvicorn server in a daemon thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="asgi-thread", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._server.serve())

    def start(self, timeout: float = 30.0) -> ThreadedServer:
        """Start serving; raise if the server is not up within `timeout` seconds."""
        self._thread.start()
        started = threading.Event()

        async def check() -> None:
            while not self._server.started:
                await asyncio.sleep(0.01)
            started.set()

        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(check()))
        if not started.wait(timeout):
            raise RuntimeError(f"server on port {self.port} did not start within {timeout}s")
        return self

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        """Run `coroutine` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving and join the thread."""
        self._server.should_exit = True
        self._thread.join(timeout)
