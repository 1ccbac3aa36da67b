"""The headless CLI in a subprocess, as a user runs it: for the tests that drive `flash-tui`.

No tests here; test modules import it (`from headless import CLI, run_cli`), as pytest puts
this directory on `sys.path`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# `flash-tui` with this interpreter, whether or not the console script is installed.
CLI = [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main())"]

# Crash loops restart fast so failure tests stay short; the rules are the same.
FAST_BACKOFF = {"FLASH_LOCALCLOUD_BACKOFF_BASE": "0.1", "FLASH_LOCALCLOUD_BACKOFF_MAX": "1"}

# Subcommands that take the project as their PATH argument, or no project at all.
_PATH_COMMANDS = frozenset({"build", "scan"})
_NO_PROJECT = frozenset({"cloud"})


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment for a CLI run on the flash-tui home `home`: wide output (no
    wrapped tables), and `extra` (e.g. `**FAST_BACKOFF`) on top."""
    return {**os.environ, "FLASH_TUI_HOME": str(home), "COLUMNS": "200", **extra}


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    project: Path | None = None,
    cwd: Path | None = None,
    timeout: float = 180.0,
) -> subprocess.CompletedProcess[str]:
    """`flash-tui ARGS` with no stdin, its output captured as text; with `project`, passed the
    way the subcommand takes it (`build`/`scan`: PATH, `cloud`: not at all, others: --project)."""
    return subprocess.run(
        _command(args, project),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(
    args: Sequence[str], env: Mapping[str, str], *, project: Path | None = None, **popen: Any
) -> subprocess.Popen[str]:
    """`flash-tui ARGS` started in the background, as `run_cli` runs it (no stdin, stdout and
    stderr piped as text; `popen` overrides, e.g. `stderr=subprocess.STDOUT`). The caller waits
    for it, and kills it when a test fails first."""
    options: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        **popen,
    }
    return subprocess.Popen(_command(args, project), env=dict(env), text=True, **options)


@contextlib.contextmanager
def killed_at_exit(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """`process` (a started CLI), killed and reaped on the way out if it still runs: a test
    that fails first leaves no command behind."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


class Lines:
    """A child's output stream read line by line in a thread, as it comes."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        for line in stream or ():
            self._queue.put(line)

    def wait_for(self, needle: str, seconds: float) -> str:
        """The first line (seen so far or to come) holding `needle`; fails at the deadline."""
        deadline = time.monotonic() + seconds
        while True:
            found = next((line for line in self.seen if needle in line), None)
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} within {seconds:g}s in {self.seen}")
            with contextlib.suppress(queue.Empty):
                self.seen.append(self._queue.get(timeout=left))

    def text(self) -> str:
        """Every line, once the stream has ended (the child exited), as one text."""
        self._reader.join(timeout=10)
        while not self._queue.empty():
            self.seen.append(self._queue.get())
        return "".join(self.seen)


@dataclass(frozen=True)
class ProjectCli:
    """`flash-tui` on one project with one environment: `cli(*args)` runs a command to its end,
    `cli.start(*args)` starts one in the background."""

    env: Mapping[str, str]
    project: Path
    timeout: float = 120.0

    def __call__(
        self, *args: str, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`run_cli(args)` on the project (within `timeout`, else the default)."""
        limit = self.timeout if timeout is None else timeout
        return run_cli(args, self.env, project=self.project, timeout=limit)

    def start(self, *args: str, **popen: Any) -> subprocess.Popen[str]:
        """`start_cli(args)` on the project (`popen` as there)."""
        return start_cli(args, self.env, project=self.project, **popen)


def cli_for(env: Mapping[str, str], project: Path, *, timeout: float = 120.0) -> ProjectCli:
    """`cli(*args, timeout=...)` and `cli.start(*args)` on one project with one environment."""
    return ProjectCli(env, project, timeout)


def json_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """A `--json` command's output; an AssertionError showing both streams when it is not JSON."""
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(
            f"not JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        ) from None


def _command(args: Sequence[str], project: Path | None) -> list[str]:
    """The command line of `flash-tui ARGS`, the project passed the way the subcommand takes it."""
    command = [*CLI, *args]
    if project is not None and args[0] in _PATH_COMMANDS:
        command.append(str(project))
    elif project is not None and args[0] not in _NO_PROJECT:
        command += ["--project", str(project)]
    return command


def python_json(
    script: str,
    env: Mapping[str, str] | None = None,
    *,
    cwd: Path | None = None,
    args: Sequence[str] = (),
    timeout: float = 120.0,
) -> Any:
    """Run `script` with this Python (no terminal); the JSON on its last line of output. An
    AssertionError with the end of stderr when it exits non-zero or prints no JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        raise AssertionError(
            f"no JSON line (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        ) from None
