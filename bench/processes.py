"""Processes the benchmarks start: free ports, a clean environment, a timed CLI command,
readiness and stopping.

Imported by the scripts in this folder (`python bench/X.py` puts it on `sys.path`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

import httpx

# `flash-tui` with this interpreter, whether or not the console script is installed.
CLI = [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main())"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This process's environment without `FLASH_*` settings (a benchmark sets its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FLASH_")}


def run_cli(
    args: list[str],
    env: dict[str, str],
    project: Path | None,
    ok: tuple[int, ...] = (0,),
    timeout: float = 900.0,
) -> tuple[float, str]:
    """Run one CLI command (in `project`); returns (seconds, stdout). Exits the benchmark, with
    the command's output, on an exit status not in `ok`."""
    command = [*CLI, *args] + (["--project", str(project)] if project else [])
    started = time.perf_counter()
    proc = subprocess.run(
        command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    elapsed = time.perf_counter() - started
    if proc.returncode not in ok:
        raise SystemExit(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
        )
    return elapsed, proc.stdout


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    *,
    timeout: float = 60.0,
    statuses: Collection[int] | None = None,
) -> None:
    """Poll `url` until it answers (with one of `statuses`, when given); fail if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the process exited with {proc.returncode}; see its log")
        try:
            status = httpx.get(url, timeout=1).status_code
            if statuses is None or status in statuses:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    stop_process(proc)
    raise SystemExit(f"{url} did not become ready within {timeout:g} s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
