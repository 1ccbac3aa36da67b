"""Helpers for the worker tests: build an example into a temp dir, run real worker processes.

No tests here; the worker test modules import this one (`from worker_harness import ...`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import uvicorn
from projectfiles import copy_example

if TYPE_CHECKING:
    from engine.localcloud.discovery import CloudInfo

REPO = Path(__file__).resolve().parents[1]
START_DEADLINE = 30.0


def lb_build_archive(
    root: Path, name: str, handler: str, files: dict[str, str] | None = None
) -> tuple[Path, str, dict[str, Any]]:
    """A one-endpoint LB build `name` whose handler is `handler` (source), plus `files`, packed
    as a local-cloud build archive: (archive, build id, manifest)."""
    build = root / f"build-{name}"
    build.mkdir(parents=True)
    (build / f"handler_{name}.py").write_text(textwrap.dedent(handler))
    for rel, text in (files or {}).items():
        (build / rel).parent.mkdir(parents=True, exist_ok=True)
        (build / rel).write_text(text)
    resource = {
        "resource_type": "LoadBalancerSlsResource",
        "handler_file": f"handler_{name}.py",
        "functions": [],
        "is_load_balanced": True,
    }
    manifest = {"version": "1.0", "resources": {name: resource}}
    (build / "flash_manifest.json").write_text(json.dumps(manifest))
    archive = root / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(build, arcname=".")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest(), manifest


async def deploy_lb_build(
    info: CloudInfo,
    app: str,
    build: tuple[Path, str, dict[str, Any]],
    env: dict[str, str],
    config_hash: str = "h",
) -> None:
    """Deploy the one LB endpoint of an `lb_build_archive` build to `app` on the local cloud
    `info`, with the user settings `env`; fails unless the deploy's result is ok."""
    from engine.localcloud.client import CloudClient
    from engine.localcloud.wire import DeployRequest

    archive, build_id, manifest = build
    request = DeployRequest.model_validate(
        {
            "endpoints": [
                {
                    "name": next(iter(manifest["resources"])),
                    "resource_type": "LoadBalancerSlsResource",
                    "is_load_balanced": True,
                    "config": {"env": env},
                    "config_hash": config_hash,
                }
            ],
            "build": {"build_id": build_id, "archive": str(archive), "manifest": manifest},
        }
    )
    async with CloudClient(info) as client:
        events = [event async for event in client.deploy(app, request)]
    assert events[-1].type == "result" and events[-1].ok, events


def build_example(example: str, dest: Path) -> Path:
    """Copy `examples/<example>` under `dest`, build it with engine.build; the build dir.

    The copy keeps the build's output (.flash/) out of the repository's examples.
    """
    from engine.build import build_project

    project = copy_example(example, dest / example)
    # The workers import every handler themselves, so the build's import check is skipped.
    return build_project(project, import_check=False).build_dir


class Worker:
    """A real `python -m runtime.worker` process, its output collected line by line."""

    def __init__(
        self,
        build_dir: Path,
        resource: str,
        *,
        key: str | None = "test-key",
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.resource = resource
        self.key = key
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("FLASH_")}
        child_env["PYTHONPATH"] = str(REPO)
        child_env["PYTHONUNBUFFERED"] = "1"
        if key is not None:
            child_env["FLASH_ENDPOINT_KEY"] = key
        child_env.update(env or {})
        args = [sys.executable, "-m", "runtime.worker", "--build-dir", str(build_dir)]
        args += ["--resource", resource, "--port", "0", *(extra_args or [])]
        self.proc = subprocess.Popen(
            args,
            env=child_env,
            cwd=str(REPO),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=self._pump, args=(self.proc.stdout, self.stdout, True), daemon=True
        ).start()
        threading.Thread(
            target=self._pump, args=(self.proc.stderr, self.stderr, False), daemon=True
        ).start()
        self.url = ""

    def _pump(self, stream: Any, sink: list[str], forward: bool) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))
            if forward:
                self._lines.put(line)

    def wait_listening(self, deadline: float = START_DEADLINE) -> str:
        """The URL from the `listening on ...` line (raises if the process exits first)."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                line = self._lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"worker exited {self.proc.returncode}: {self.stderr}"
                    ) from None
                continue
            if line.startswith("listening on "):
                self.url = line.split(" ", 2)[2].strip()
                return self.url
        raise TimeoutError(f"worker did not print its URL within {deadline}s: {self.stderr}")

    def wait_ready(self, deadline: float = START_DEADLINE) -> str:
        """Wait until /ping answers 200; returns the base URL."""
        url = self.url or self.wait_listening(deadline)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}: {self.stderr}")
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"worker not ready within {deadline}s: {self.stderr}")

    @property
    def headers(self) -> dict[str, str]:
        """Authorization header with this worker's key."""
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit within `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def wait_for_output(self, predicate: Any, deadline: float = 10.0) -> str:
        """The first stdout line matching `predicate`, waiting up to `deadline` seconds."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            for line in list(self.stdout):
                if predicate(line):
                    return line
            time.sleep(0.02)
        raise TimeoutError(f"no matching output line; got {self.stdout[-20:]}")


def home_workers(home: Path) -> list[psutil.Process]:
    """The live worker processes (zombies left out) running from a build copy of the flash-tui
    home whose root is `home`."""
    root = str(home / "apps") + os.sep
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info.get("cmdline") or []
        if "runtime.worker" not in cmdline or process.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(ValueError, IndexError):
            if cmdline[cmdline.index("--build-dir") + 1].startswith(root):
                found.append(process)
    return found


def home_worker_pids(home: Path) -> set[int]:
    """The pids of `home_workers(home)`."""
    return {process.pid for process in home_workers(home)}


@contextlib.contextmanager
def serve_workers(
    build_dir: Path, callees: Sequence[str], callers: Sequence[str], endpoints_file: Path
) -> Iterator[dict[str, Worker]]:
    """Workers of `build_dir` by name, ready: `callees` first, then `callers`, told where the
    callees are (a FLASH_ENDPOINTS_FILE written at `endpoints_file`); all stopped after."""
    started: dict[str, Worker] = {}
    try:
        for name in callees:
            started[name] = Worker(build_dir, name, key=f"key-{name}")
        for worker in started.values():
            worker.wait_listening()
        endpoints = str(write_endpoints(endpoints_file, dict(started)))
        for name in callers:
            env = {"FLASH_ENDPOINTS_FILE": endpoints}
            started[name] = Worker(build_dir, name, key=f"key-{name}", env=env)
        for worker in started.values():
            worker.wait_ready()
        yield started
    finally:
        for worker in started.values():
            worker.stop()


def write_endpoints(path: Path, workers: dict[str, Worker]) -> Path:
    """Write a FLASH_ENDPOINTS_FILE for `workers` (mode 0600)."""
    table = {name: {"url": w.url, "key": w.key} for name, w in workers.items()}
    path.write_text(json.dumps({"endpoints": table}))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def serve_asgi(app: Any, *, lifespan: str = "on", http: Any = "auto") -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread; yields its URL.
    `http`: uvicorn's HTTP protocol (a name or a protocol class)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan=lifespan, http=http, access_log=False, log_level="warning"
    )
    server = uvicorn.Server(config)
    # Signal handlers can only be installed from the main thread: the server runs in a thread.
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + START_DEADLINE
    while not server.started:
        if time.monotonic() > end or not thread.is_alive():
            raise RuntimeError("in-process server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def write_qb_build(root: Path, user_code: str, functions: Sequence[str]) -> Path:
    """A hand-made build at `root` of one QB endpoint `sq` serving `functions` of `user_code`
    (written as `userfns.py`): its handler file and manifest."""
    (root / "userfns.py").write_text(textwrap.dedent(user_code))
    table = ", ".join(f"{name!r}: userfns.{name}" for name in functions)
    (root / "handler_sq.py").write_text(
        "from runtime.qb_handler import create_handler\n"
        "import userfns\n"
        f"handler = create_handler({{{table}}})\n"
    )
    (root / "flash_manifest.json").write_text(json.dumps(qb_manifest(functions)))
    return root


def qb_manifest(functions: Sequence[str]) -> dict[str, Any]:
    """The manifest of `write_qb_build`'s build."""
    resource = {
        "resource_type": "LiveServerless",
        "handler_file": "handler_sq.py",
        "functions": [{"name": name} for name in functions],
    }
    return {"version": "1.0", "resources": {"sq": resource}}
