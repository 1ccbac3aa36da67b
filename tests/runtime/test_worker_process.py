"""The worker process contract: key requirement, startup states, failures, graceful shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest
from waiting import wait_for
from worker_harness import REPO, Worker

USER_CODE = """
import os
import time
from pathlib import Path


def marker(name):
    Path(os.environ["MARKER_DIR"], name).write_text("x")


async def hello(name: str = "world") -> dict:
    return {"hello": name, "resource": os.environ.get("FLASH_RESOURCE_NAME")}


def slow(seconds: float = 1.0) -> dict:
    marker("slow-started")
    time.sleep(seconds)
    return {"slept": seconds}


def stuck() -> None:
    marker("stuck-started")
    time.sleep(120)


def shout(text: str) -> str:
    return text.upper()
"""

LB_HANDLER = """
from runtime.lb_app import create_lb_app
import userfns
app = create_lb_app({("GET", "/hello"): userfns.hello, ("POST", "/slow"): userfns.slow,
                     ("POST", "/stuck"): userfns.stuck})
"""

QB_HANDLER = """
from runtime.qb_handler import create_handler
import userfns
handler = create_handler({"shout": userfns.shout, "slow": userfns.slow})
"""

SLOW_IMPORT_HANDLER = """
import os, time
from pathlib import Path
while not Path(os.environ["MARKER_DIR"], "go").exists():  # held until the test says go
    time.sleep(0.02)
from runtime.lb_app import create_lb_app
import userfns
app = create_lb_app({("GET", "/hello"): userfns.hello})
"""

BROKEN_HANDLER = "import this_module_does_not_exist_anywhere\n"


def _resource(rtype: str, name: str) -> dict:
    return {"resource_type": rtype, "handler_file": f"handler_{name}.py", "functions": []}


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("build")
    (root / "userfns.py").write_text(USER_CODE)
    handlers = {
        "web": (LB_HANDLER, "LoadBalancerSlsResource"),
        "jobs": (QB_HANDLER, "LiveServerless"),
        "sleepy": (SLOW_IMPORT_HANDLER, "CpuLoadBalancerSlsResource"),
        "broken": (BROKEN_HANDLER, "LiveServerless"),
    }
    resources = {}
    for name, (text, rtype) in handlers.items():
        (root / f"handler_{name}.py").write_text(textwrap.dedent(text))
        resources[name] = _resource(rtype, name)
    (root / "flash_manifest.json").write_text(
        json.dumps({"version": "1.0", "resources": resources})
    )
    return root


@pytest.fixture
def marker_dir(tmp_path: Path) -> Path:
    return tmp_path


def wait_path(path: Path, deadline: float = 10.0) -> None:
    wait_for(path.exists, deadline, f"{path} to appear", interval=0.02)


def run_worker_cli(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runtime.worker", *args],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_refuses_to_start_without_a_key(build_dir: Path) -> None:
    result = run_worker_cli(["--build-dir", str(build_dir), "--resource", "web", "--port", "0"])
    assert result.returncode == 2 and "FLASH_ENDPOINT_KEY" in result.stderr
    assert "--insecure" in result.stderr


def test_unknown_resource_and_missing_build_dir(build_dir: Path, tmp_path: Path) -> None:
    env = {"FLASH_ENDPOINT_KEY": "k"}
    result = run_worker_cli(
        ["--build-dir", str(build_dir), "--resource", "nope", "--port", "0"], env
    )
    assert result.returncode == 1 and "'nope' is not in the manifest" in result.stderr
    assert "web" in result.stderr
    result = run_worker_cli(["--build-dir", str(tmp_path), "--resource", "web", "--port", "0"], env)
    assert result.returncode == 1 and "flash_manifest.json" in result.stderr


def test_import_failure_exits_non_zero_with_a_clear_message(build_dir: Path) -> None:
    worker = Worker(build_dir, "broken")
    try:
        assert worker.proc.wait(30) == 1
        text = "\n".join(worker.stderr)
        assert "cannot start resource 'broken'" in text
        assert "this_module_does_not_exist_anywhere" in text
    finally:
        worker.stop()


def test_insecure_serves_without_auth(build_dir: Path, marker_dir: Path) -> None:
    worker = Worker(
        build_dir, "web", key=None, env={"MARKER_DIR": str(marker_dir)}, extra_args=["--insecure"]
    )
    try:
        url = worker.wait_ready()
        assert httpx.get(f"{url}/hello").json() == {"hello": "world", "resource": "web"}
        assert any("WITHOUT authentication" in line for line in worker.stderr)
    finally:
        worker.stop()


def test_ping_204_while_importing_then_200(build_dir: Path, marker_dir: Path) -> None:
    worker = Worker(build_dir, "sleepy", env={"MARKER_DIR": str(marker_dir)})
    try:
        url = worker.wait_listening()
        assert httpx.get(f"{url}/ping").status_code == 204
        starting = httpx.get(f"{url}/hello", headers=worker.headers)
        assert starting.status_code == 503 and "starting" in starting.text
        assert httpx.get(f"{url}/hello").status_code == 401  # auth applies while starting too
        (marker_dir / "go").write_text("go")
        worker.wait_ready()
        assert httpx.get(f"{url}/hello", headers=worker.headers).status_code == 200
        assert any(line.startswith("ready: resource sleepy") for line in worker.stdout)
    finally:
        worker.stop()


def test_qb_worker_with_an_explicit_port(build_dir: Path, marker_dir: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["--build-dir", str(build_dir), "--resource", "jobs", "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.worker", *args],
        cwd=REPO,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "FLASH_ENDPOINT_KEY": "k",
            "MARKER_DIR": str(marker_dir),
        },
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"listening on http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_sigterm_lets_in_flight_requests_finish(build_dir: Path, marker_dir: Path) -> None:
    worker = Worker(build_dir, "web", env={"MARKER_DIR": str(marker_dir)})
    try:
        url = worker.wait_ready()
        result: dict[str, httpx.Response] = {}

        def request() -> None:
            result["r"] = httpx.post(
                f"{url}/slow", json={"seconds": 1.0}, headers=worker.headers, timeout=15
            )

        thread = threading.Thread(target=request)
        thread.start()
        wait_path(marker_dir / "slow-started")
        started = time.monotonic()
        code = worker.stop(timeout=10)
        thread.join(10)
        assert result["r"].status_code == 200 and result["r"].json() == {"slept": 1.0}
        assert code == 0 and time.monotonic() - started < 5.0
    finally:
        worker.stop()


def test_sigterm_is_bounded_even_with_stuck_user_code(build_dir: Path, marker_dir: Path) -> None:
    worker = Worker(build_dir, "web", env={"MARKER_DIR": str(marker_dir)})
    try:
        url = worker.wait_ready()
        thread = threading.Thread(
            target=lambda: httpx.post(f"{url}/stuck", headers=worker.headers, timeout=15),
            daemon=True,
        )
        thread.start()
        wait_path(marker_dir / "stuck-started")
        started = time.monotonic()
        code = worker.stop(timeout=10)
        elapsed = time.monotonic() - started
        assert elapsed < 5.0, elapsed
        assert code == 0, worker.stderr  # in-flight requests were cut, but the exit is clean
    finally:
        worker.stop()


def test_qb_job_in_flight_finishes_on_sigterm(build_dir: Path, marker_dir: Path) -> None:
    from runtime.serialization import deserialize, serialize_args

    worker = Worker(build_dir, "jobs", env={"MARKER_DIR": str(marker_dir)})
    try:
        url = worker.wait_ready()
        shout = httpx.post(
            f"{url}/runsync",
            json={"input": {"function_name": "shout", "args": serialize_args(["hi"])}},
            headers=worker.headers,
        ).json()
        assert deserialize(shout["output"]["result"]) == "HI"
        result: dict[str, httpx.Response] = {}

        def request() -> None:
            result["r"] = httpx.post(
                f"{url}/runsync",
                json={"input": {"function_name": "slow", "args": serialize_args([0.8])}},
                headers=worker.headers,
                timeout=15,
            )

        thread = threading.Thread(target=request)
        thread.start()
        wait_path(marker_dir / "slow-started")
        started = time.monotonic()
        assert worker.stop(timeout=10) == 0
        thread.join(10)
        assert result["r"].json()["status"] == "COMPLETED"
        assert time.monotonic() - started < 5.0
    finally:
        worker.stop()


def test_the_port_accepts_connections_once_listening_is_printed(
    build_dir: Path, marker_dir: Path
) -> None:
    # Frozen right after it says so (before its event loop runs), the worker must already
    # listen: a client that connects at once is queued, not refused.
    worker = Worker(build_dir, "sleepy", env={"MARKER_DIR": str(marker_dir)})
    try:
        url = worker.wait_listening()
        os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5):
                pass
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
        (marker_dir / "go").write_text("go")
        worker.wait_ready()
    finally:
        worker.stop()
