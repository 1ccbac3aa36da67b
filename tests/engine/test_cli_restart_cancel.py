"""`flash-tui restart NAME` and Ctrl+C during `flash-tui deploy --yes`, as subprocesses on a real
local cloud: the restart gives a new worker; SIGINT mid-deploy exits 130 with the endpoints it
started deployed, the others not, and `plan` showing exactly the rest."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from headless import Lines, cli_env, killed_at_exit, run_cli, start_cli
from projectfiles import gated_project
from waiting import wait_for


@pytest.fixture
def env(cloud_home: Path) -> dict[str, str]:
    """The CLI's environment: a private home whose cloud starts one endpoint at a time."""
    return cli_env(cloud_home, FLASH_LOCALCLOUD_DEPLOY_CONCURRENCY="1")


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


@contextlib.contextmanager
def _interrupted_deploy(
    project: Path, env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    """`deploy --yes` of a gated project, sent SIGINT once alpha starts; yields (the process,
    its stderr lines) once the service is cancelling. Killed afterwards if still running."""
    with killed_at_exit(start_cli(["deploy", "--yes"], env, project=project)) as process:
        lines = Lines(process.stderr)
        lines.wait_for("alpha create starting", 120)
        process.send_signal(signal.SIGINT)
        lines.wait_for("• cancelling", 30)  # the service has it: no more endpoints start
        yield process, lines


def test_ctrl_c_cancels_deploy_midway(
    tmp_path: Path, env: dict[str, str], gate: socket.socket
) -> None:
    project = gated_project(
        tmp_path / "p", ["alpha", "beta", "gamma"], gated="alpha", port=gate.getsockname()[1]
    )
    with _interrupted_deploy(project, env) as (process, lines):
        gate.listen()  # only now may alpha become ready
        assert process.wait(timeout=120) == 130
    output = " ".join(lines.text().split())  # as said, whatever the console's width
    assert "beta, gamma" in output and "not started" in output, output

    endpoints = status(project, env)
    assert endpoints["alpha"]["status"] == "healthy"
    assert endpoints["beta"]["status"] == endpoints["gamma"]["status"] == "not_deployed"
    plan = run_cli(["plan", "--json"], env, project=project)
    actions = {i["name"]: i["action"] for i in json.loads(plan.stdout)["items"]}
    assert actions == {"alpha": "unchanged", "beta": "create", "gamma": "create"}


def test_second_ctrl_c_stops_waiting(
    tmp_path: Path, env: dict[str, str], gate: socket.socket
) -> None:
    project = gated_project(
        tmp_path / "p", ["alpha", "beta"], gated="alpha", port=gate.getsockname()[1]
    )
    with _interrupted_deploy(project, env) as (process, lines):
        process.send_signal(signal.SIGINT)  # alpha still waits for the gate: stop waiting
        assert process.wait(timeout=30) == 130
    output = " ".join(lines.text().split())
    assert "interrupted" in output and "Traceback" not in output, output
    # The cloud goes on: alpha (started) finishes once it can, beta was never started.
    gate.listen()
    wait_for(lambda: status(project, env)["alpha"]["status"] == "healthy", 60, "alpha healthy")
    assert status(project, env)["beta"]["status"] == "not_deployed"
