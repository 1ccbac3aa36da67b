"""The plan's call-graph warnings in the headless CLI, on the real local cloud.

A gateway calls `process` on a CPU worker. Deploying the gateway alone, or undeploying the
worker while the gateway stays, warns before anything changes (and before the prompt); the tests
run in file order like a user session, on one home and one project.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from headless import run_cli
from projectfiles import CALLS_PROJECT, write_files

MISSING = "gateway calls cpu_worker (process), which is not deployed and not in this deploy"
LEFT = "gateway stays deployed and calls cpu_worker (process)"


@pytest.fixture(scope="module")
def env(localcloud_home: Path) -> dict[str, str]:
    """Environment for CLI subprocesses (and the cloud they start)."""
    return {**os.environ, "FLASH_TUI_HOME": str(localcloud_home), "COLUMNS": "200"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two-endpoint project."""
    return write_files(tmp_path_factory.mktemp("calls") / "callsapp", CALLS_PROJECT)


def test_plan_of_the_gateway_alone_warns_that_its_callee_is_missing(
    env: dict[str, str], project: Path
) -> None:
    done = run_cli(["plan", "gateway", "--json"], env, project=project)
    assert done.returncode == 0, done.stderr
    (warning,) = json.loads(done.stdout)["warnings"]
    assert warning["kind"] == "callee_missing"
    assert (warning["caller"], warning["callee"], warning["functions"]) == (
        "gateway",
        "cpu_worker",
        ["process"],
    )
    full = run_cli(["plan", "--json"], env, project=project)
    assert full.returncode == 0, full.stderr
    assert json.loads(full.stdout)["warnings"] == []


def test_deploy_of_the_gateway_alone_warns_before_the_prompt(
    env: dict[str, str], project: Path
) -> None:
    done = run_cli(["deploy", "gateway"], env, project=project)  # no terminal, no --yes
    assert done.returncode == 1
    assert MISSING in done.stderr
    assert done.stderr.index(MISSING) < done.stderr.index("refusing to deploy")


def test_no_warning_once_the_callee_is_deployed(env: dict[str, str], project: Path) -> None:
    done = run_cli(["deploy", "--yes"], env, project=project)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    again = run_cli(["plan", "gateway", "--force", "--json"], env, project=project)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["warnings"] == []


def test_undeploying_the_callee_while_its_caller_stays_warns(
    env: dict[str, str], project: Path
) -> None:
    refused = run_cli(["undeploy", "cpu_worker"], env, project=project)
    assert refused.returncode == 1
    assert LEFT in refused.stderr
    assert refused.stderr.index(LEFT) < refused.stderr.index("refusing to undeploy")
    # Undeploying both: no caller is left behind.
    both = run_cli(["undeploy", "cpu_worker", "gateway", "--json"], env, project=project)
    assert both.returncode == 1  # still no terminal: refused, but the plan is in the JSON
    assert json.loads(both.stdout)["plan"]["warnings"] == []
    done = run_cli(["undeploy", "cpu_worker", "--yes", "--json"], env, project=project)
    assert done.returncode == 0, done.stdout + done.stderr
    (warning,) = json.loads(done.stdout)["plan"]["warnings"]
    assert (warning["kind"], warning["caller"], warning["callee"]) == (
        "caller_left",
        "gateway",
        "cpu_worker",
    )
    assert run_cli(["undeploy", "--all", "--yes"], env, project=project).returncode == 0
