"""The project's own FastAPI app (upstream's `flash init` `main.py`) as a child process of `dev`.

The engine never imports user code: the app runs in `python -m runtime.devapp` on this
project's runtime, its `@remote` calls routed to the deployed endpoints through the local
cloud's endpoint table (`FLASH_ENDPOINTS_FILE`). Detection is static (AST): a module-level
`app = FastAPI(...)` in the project's `main.py`.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = ["AppProcess", "DevAppError", "find_app", "start_app"]

# How long the app may take to import (FastAPI + user modules) before it counts as failed.
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 5.0


class DevAppError(Exception):
    """The app did not start: the message names the file and line when the child said them."""


def find_app(root: Path) -> tuple[str, str] | None:
    """(module, attribute) of the project's FastAPI app (`main`, `app`), or None."""
    main = root / "main.py"
    try:
        tree = ast.parse(main.read_text(encoding="utf-8"), filename=str(main))
    except (OSError, SyntaxError, ValueError):
        # A main.py that does not parse yet is the scan's diagnostic; the app is still "there".
        return ("main", "app") if main.is_file() and _mentions_app(main) else None
    for node in tree.body:
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Call):
            continue
        func = node.value.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if called != "FastAPI":
            continue
        for target in node.targets:
            if isinstance(target, ast.Name):
                return "main", target.id
    return None


def _mentions_app(path: Path) -> bool:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return "FastAPI(" in path.read_text(encoding="utf-8")
    return False


def _child_env(endpoints_file: Path | None) -> dict[str, str]:
    """The environment of the app: ours minus the flash-tui settings (home, tokens)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASH_")}
    env.pop("PYTHONSTARTUP", None)
    if endpoints_file is not None:
        env["FLASH_ENDPOINTS_FILE"] = str(endpoints_file)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class AppProcess:
    """A running app child: its port, its OpenAPI document and its output."""

    process: asyncio.subprocess.Process
    port: int
    openapi: dict[str, Any] = field(default_factory=dict)
    on_line: Callable[[str], None] | None = None
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        """Where the app answers."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.process.pid

    def routes(self) -> list[tuple[str, str, str]]:
        """(METHOD, path, summary) of every operation the app's OpenAPI lists."""
        out = []
        for path, operations in sorted((self.openapi.get("paths") or {}).items()):
            for method, op in (operations or {}).items():
                if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                    summary = str((op or {}).get("summary") or "")
                    out.append((method.upper(), str(path), summary))
        return out

    async def stop(self) -> None:
        """Terminate the child (kill after a grace) and reap it."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), _STOP_TIMEOUT)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _pump(stream: asyncio.StreamReader, sink: Callable[[str], None]) -> None:
    while True:
        raw = await stream.readline()
        if not raw:
            return
        sink(raw.decode("utf-8", "replace").rstrip("\n"))


async def start_app(
    root: Path,
    module: str,
    attr: str,
    *,
    endpoints_file: Path | None,
    on_line: Callable[[str], None] | None = None,
    timeout: float = _START_TIMEOUT,
) -> AppProcess:
    """Start the app child and wait until its OpenAPI answers; DevAppError when it fails
    (its error line first: `main.py:12: NameError: ...`)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runtime.devapp",
        "--project",
        str(root),
        "--port",
        "0",
        "--module",
        module,
        "--attr",
        attr,
        cwd=str(root),
        env=_child_env(endpoints_file),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    errors: list[str] = []
    out_sink: Callable[[str], None] = on_line or (lambda _line: None)

    def err_sink(line: str) -> None:
        if not child.openapi:  # starting: kept for the failure message
            errors.append(line)
        elif on_line is not None:
            on_line(line)

    child = AppProcess(process, 0, on_line=on_line)
    stderr_task = asyncio.ensure_future(_pump(process.stderr, err_sink))
    child._readers.append(stderr_task)

    async def failed() -> DevAppError:
        code = await _exit_code(process)
        # The error line may still be in the pipe when stdout closes: read stderr to its end.
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(stderr_task), _STOP_TIMEOUT)
        return DevAppError(_failure(module, errors, code))

    async def boot() -> None:
        first = (await process.stdout.readline()).decode("utf-8", "replace").strip()
        if not first.startswith("listening on http://127.0.0.1:"):
            raise await failed()
        child.port = int(first.rsplit(":", 1)[1])
        ready = (await process.stdout.readline()).decode("utf-8", "replace").strip()
        if not ready.startswith("ready:"):
            raise await failed()
        child._readers.append(asyncio.ensure_future(_pump(process.stdout, out_sink)))
        child.openapi = await _openapi(child)

    try:
        await asyncio.wait_for(boot(), timeout)
    except asyncio.TimeoutError:
        await child.stop()
        raise DevAppError(f"{module}.py: the app did not start within {timeout:g} s") from None
    except BaseException:
        await child.stop()
        raise
    return child


async def _exit_code(process: asyncio.subprocess.Process) -> int | None:
    with contextlib.suppress(asyncio.TimeoutError):
        return await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)
    return None


def _failure(module: str, errors: list[str], code: int | None) -> str:
    # The child prints `error: FILE:LINE: Type: message` first, then the traceback.
    headline = next((e[len("error: ") :] for e in errors if e.startswith("error: ")), None)
    if headline is not None:
        return headline
    tail = "\n".join(errors[-5:]) or f"exit status {code}"
    return f"{module}.py: the app did not start: {tail}"


async def _openapi(child: AppProcess) -> dict[str, Any]:
    """The app's OpenAPI document ({} when the app has none: its routes are still served)."""
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as http:
        for _ in range(100):
            try:
                response = await http.get(f"{child.base_url}/openapi.json")
            except httpx.TransportError:
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 200:
                data = response.json()
                return data if isinstance(data, dict) and data else {"paths": {}}
            return {"paths": {}}
    return {"paths": {}}
