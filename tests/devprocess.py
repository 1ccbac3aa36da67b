"""`flash-tui dev` in a subprocess for the dev tests: its output lines, its port, HTTP to it.

No tests here; the dev tests import it (`from devprocess import DevProcess`), as pytest puts
this directory on `sys.path`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from headless import run_cli, start_cli
from projectfiles import copy_example
from waiting import wait_for

from engine.localcloud.ports import free_port

__all__ = ["DevProcess", "copy_example"]


class DevProcess:
    """A running `flash-tui dev PROJECT --port P [extra]`, its stdout and stderr collected."""

    def __init__(self, project: Path, home: Path, *extra: str) -> None:
        self.project = project
        self.port = free_port()
        self.env = {**os.environ, "FLASH_TUI_HOME": str(home)}
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.process = start_cli(["dev", str(project), "--port", str(self.port), *extra], self.env)
        self._readers = [
            threading.Thread(target=self._pump, args=(self.process.stdout, self.lines)),
            threading.Thread(target=self._pump, args=(self.process.stderr, self.errors)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    @classmethod
    @contextlib.contextmanager
    def serving(cls, project: Path, home: Path, *extra: str) -> Iterator[DevProcess]:
        """One started and serving; stopped on leaving, whatever happened."""
        process = cls(project, home, *extra)
        try:
            process.wait_serving()
            yield process
        finally:
            process.stop()

    @staticmethod
    def _pump(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    @property
    def url(self) -> str:
        """The dev server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def wait_line(self, needle: str, timeout: float = 120.0, start: int = 0) -> str:
        """The first output line from index `start` on containing `needle`."""

        def found() -> str | None:
            if self.process.poll() is not None and not any(needle in x for x in self.lines):
                raise AssertionError(
                    f"dev exited {self.process.returncode}: {self.lines} {self.errors[-20:]}"
                )
            return next((x for x in self.lines[start:] if needle in x), None)

        return wait_for(found, timeout, f"dev output line with {needle!r}")

    def save(self, path: Path, text: str, answer: str) -> str:
        """Write `text` to the project's file `path` and wait for the first line holding `answer`
        after it (returned)."""
        start = len(self.lines)
        path.write_text(text, encoding="utf-8")
        return self.wait_line(answer, start=start)

    def wait_serving(self) -> None:
        """Until the server says it serves."""
        self.wait_line("serving http://127.0.0.1:")

    def post(self, path: str, body: Any, timeout: float = 60.0) -> httpx.Response:
        """POST JSON to the dev server."""
        return httpx.post(self.url + path, json=body, timeout=timeout, trust_env=False)

    def get(self, path: str, timeout: float = 30.0) -> httpx.Response:
        """GET from the dev server."""
        return httpx.get(self.url + path, timeout=timeout, trust_env=False)

    def interrupt(self, timeout: float = 60.0) -> int:
        """Ctrl+C (SIGINT) and the exit status."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    def stop(self) -> None:
        """End it whatever state it is in (finalizers)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def status(self) -> Mapping[str, Mapping[str, Any]]:
        """`flash-tui status --json` of the project, by endpoint name."""
        import json

        done = run_cli(["status", "--json"], self.env, project=self.project)
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        rows = data["endpoints"] if isinstance(data, dict) else data
        return {row["name"]: row for row in rows}
