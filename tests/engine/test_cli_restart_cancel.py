"""`flash-tui restart NAME` and Ctrl+C during `flash-tui deploy --yes`, as subprocesses on a real
local cloud: the restart gives a new worker; SIGINT mid-deploy exits 130 with the endpoints it
started deployed, the others not, and `plan` showing exactly the rest."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from headless import CLI, run_cli
from projectfiles import gated_project
from waiting import wait_for


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The CLI's environment: a private home whose cloud starts one endpoint at a time."""
    from engine.home import Home
    from engine.localcloud.discovery import kill_home_workers, stop_cloud

    home = tmp_path / "home"
    environ = {
        **os.environ,
        "FLASH_TUI_HOME": str(home),
        "FLASH_LOCALCLOUD_DEPLOY_CONCURRENCY": "1",
    }
    yield environ
    stop_cloud(Home(home), timeout=10.0)
    kill_home_workers(Home(home))


def status(project: Path, env: dict[str, str]) -> dict[str, dict[str, object]]:
    done = run_cli(["status", "--json"], env, project=project)
    assert done.returncode == 0, done.stderr
    return {e["name"]: e for e in json.loads(done.stdout)["endpoints"]}


def test_restart_command(tmp_path: Path, env: dict[str, str]) -> None:
    project = gated_project(tmp_path / "p", ["alpha"], gated="", port=0)
    assert run_cli(["deploy", "--yes"], env, project=project).returncode == 0
    before = status(project, env)["alpha"]

    refused = run_cli(["restart", "alpha"], env, project=project)
    assert refused.returncode == 1 and "Pass --yes" in " ".join(refused.stderr.split())
    assert status(project, env)["alpha"]["pid"] == before["pid"]

    done = run_cli(["restart", "alpha", "--yes", "--json"], env, project=project)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
    after = status(project, env)["alpha"]
    assert after["pid"] != before["pid"] and after["status"] == "healthy"
    assert after["restarts"] == int(before["restarts"]) + 1  # type: ignore[call-overload]

    missing = run_cli(["restart", "nope", "--yes"], env, project=project)
    assert missing.returncode == 1 and "not deployed: nope" in missing.stderr


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


def _wait_line(lines: queue.Queue[str], seen: list[str], needle: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not any(needle in line for line in seen):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {needle!r} in {seen}")
        try:
            seen.append(lines.get(timeout=left))
        except queue.Empty:
            continue


def test_ctrl_c_cancels_deploy_midway(tmp_path: Path, env: dict[str, str]) -> None:
    gate = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    gate.bind(("127.0.0.1", 0))
    project = gated_project(
        tmp_path / "p", ["alpha", "beta", "gamma"], gated="alpha", port=gate.getsockname()[1]
    )
    process = subprocess.Popen(
        [*CLI, "deploy", "--yes", "--project", str(project)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(process.stderr, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        _wait_line(lines, seen, "alpha create starting", 120)
        process.send_signal(signal.SIGINT)
        # The service has it: no more endpoints start. Only now may alpha become ready.
        _wait_line(lines, seen, "• cancelling", 30)
        gate.listen()
        assert process.wait(timeout=120) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        gate.close()
    reader.join(timeout=10)
    while not lines.empty():
        seen.append(lines.get())
    output = " ".join("".join(seen).split())  # as said, whatever the console's width
    assert "beta, gamma" in output and "not started" in output, output

    endpoints = status(project, env)
    assert endpoints["alpha"]["status"] == "healthy"
    assert endpoints["beta"]["status"] == endpoints["gamma"]["status"] == "not_deployed"
    plan = run_cli(["plan", "--json"], env, project=project)
    actions = {i["name"]: i["action"] for i in json.loads(plan.stdout)["items"]}
    assert actions == {"alpha": "unchanged", "beta": "create", "gamma": "create"}


def test_second_ctrl_c_stops_waiting(tmp_path: Path, env: dict[str, str]) -> None:
    gate = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    gate.bind(("127.0.0.1", 0))
    project = gated_project(
        tmp_path / "p", ["alpha", "beta"], gated="alpha", port=gate.getsockname()[1]
    )
    process = subprocess.Popen(
        [*CLI, "deploy", "--yes", "--project", str(project)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(process.stderr, lines), daemon=True).start()
    seen: list[str] = []
    try:
        _wait_line(lines, seen, "alpha create starting", 120)
        process.send_signal(signal.SIGINT)
        _wait_line(lines, seen, "• cancelling", 30)
        process.send_signal(signal.SIGINT)  # alpha still waits for the gate: stop waiting
        assert process.wait(timeout=30) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader_left = [lines.get() for _ in range(lines.qsize())]
    output = " ".join("".join(seen + reader_left).split())
    assert "interrupted" in output and "Traceback" not in output, output
    # The cloud goes on: alpha (started) finishes once it can, beta was never started.
    gate.listen()
    try:
        wait_for(lambda: status(project, env)["alpha"]["status"] == "healthy", 60, "alpha healthy")
        assert status(project, env)["beta"]["status"] == "not_deployed"
    finally:
        gate.close()
