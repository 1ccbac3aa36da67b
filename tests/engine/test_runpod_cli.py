"""`flash-tui ... --target runpod [--env NAME]` as a user runs it (subprocesses) against the
contract fake: a missing or rejected key is one line naming where the key was looked for, a
deploy/status/plan/undeploy round trip works, and the key appears in no output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes.runpod import FakeRunPod
from headless import killed_at_exit, run_cli, start_cli
from projectfiles import copy_example
from waiting import wait_for

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeRunPod]:
    with FakeRunPod(tmp_path_factory.mktemp("fake"), data_plane=False) as running:
        yield running


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_example("quickstart", tmp_path_factory.mktemp("cli") / "quickstart")


@pytest.fixture(scope="module")
def ai_keys() -> list[str]:
    """The endpoint keys the fake handed out in this module."""
    return []


@pytest.fixture(scope="module")
def outputs() -> list[str]:
    """Every stdout and stderr the CLI wrote in this module."""
    return []


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update({"HOME": str(home), "COLUMNS": "200", "FLASH_RUNPOD_HEALTH_WAIT": "0"})
    return env


@pytest.fixture(scope="module")
def run(
    fake: FakeRunPod, project: Path, outputs: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Run:
    home = tmp_path_factory.mktemp("home")

    def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        environ = {**_base_env(home), **fake.env(), **(env or {})}
        done = run_cli(args, environ, project=project)
        outputs.extend([done.stdout, done.stderr])
        return done

    return cli


def test_missing_key_is_one_line_naming_where_it_was_looked_for(
    project: Path, tmp_path: Path
) -> None:
    done = run_cli(["plan", "--target", "runpod"], _base_env(tmp_path), project=project)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "RUNPOD_API_KEY" in lines[0]
    assert str(tmp_path / ".runpod" / "config.toml") in lines[0]
    assert "Traceback" not in done.stderr


def test_key_from_the_credentials_file(
    fake: FakeRunPod, project: Path, tmp_path: Path, outputs: list[str]
) -> None:
    (tmp_path / ".runpod").mkdir()
    (tmp_path / ".runpod" / "config.toml").write_text(f'[default]\napi_key = "{fake.api_key}"\n')
    env = {**_base_env(tmp_path), **fake.env()}
    del env["RUNPOD_API_KEY"]
    done = run_cli(["plan", "--target", "runpod", "--json"], env, project=project)
    outputs.extend([done.stdout, done.stderr])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["create"] == 4


def test_rejected_key_names_its_source(run: Run) -> None:
    done = run("plan", "--target", "runpod", env={"RUNPOD_API_KEY": "rpa_REJECTED_0000000"})
    assert done.returncode == 1
    assert "rejected the API key from RUNPOD_API_KEY (HTTP 401)" in done.stderr
    assert "rpa_REJECTED_0000000" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_env_is_only_for_runpod(run: Run) -> None:
    done = run("plan", "--env", "staging")
    assert done.returncode == 2 and "--env is for --target runpod" in done.stderr


def test_deploy_status_plan_undeploy(run: Run, fake: FakeRunPod, ai_keys: list[str]) -> None:
    done = run("deploy", "--target", "runpod", "--yes")
    assert done.returncode == 0, done.stderr
    assert len(fake.endpoints()) == 4
    ai_keys.extend(e.aiKey for e in fake.endpoints())
    status = run("status", "--target", "runpod", "--json", "--no-probe")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    rows = body["endpoints"] if isinstance(body, dict) else body
    assert sorted(r["name"] for r in rows if r["deployed"]) == [
        "api",
        "cpu_worker",
        "gateway",
        "gpu_worker",
    ]
    plan = run("plan", "--target", "runpod", "--json")
    assert json.loads(plan.stdout)["counts"]["unchanged"] == 4
    staging = run("plan", "--target", "runpod", "--env", "staging", "--json")
    assert json.loads(staging.stdout)["counts"]["create"] == 4  # another environment
    gone = run("undeploy", "--all", "--yes", "--target", "runpod")
    assert gone.returncode == 0, gone.stderr
    assert fake.endpoints() == [] and fake.templates() == []


def test_ctrl_c_mid_deploy_loses_nothing(
    run: Run, fake: FakeRunPod, project: Path, outputs: list[str], tmp_path: Path
) -> None:
    """Ctrl+C while endpoints are being created: the command exits 130, what was created is
    recorded in the environment's state (or found by its environment id), and the next deploy
    completes the rest without creating anything twice."""
    fake.fail_next("saveEndpoint", delay=4.0, times=3)  # three slow creates, one quick
    environ = {**_base_env(tmp_path), **fake.env()}
    deploy = start_cli(["deploy", "--target", "runpod", "--yes"], environ, project=project)
    with killed_at_exit(deploy) as process:
        wait_for(lambda: len(fake.endpoints()) >= 1, 120, "the quick endpoint to be created")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    outputs.extend([stdout, stderr])
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    (environment,) = [e for e in fake.environments() if e.name == "production"]
    build = next(b for b in fake.builds() if b.id == environment.activeBuildId)
    recorded = {s["endpoint_id"] for s in build.manifest.get("deployments", {}).values()}
    # Each endpoint created before Ctrl+C is in the record, or (when Ctrl+C came between the
    # server's create and its answer reaching the CLI) findable by this environment's id.
    created = {e.id: e for e in fake.endpoints()}
    assert recorded <= set(created)
    assert all(i in recorded or e.flashEnvironmentId == environment.id for i, e in created.items())
    # The slow creates were sent before Ctrl+C: the server may still apply them, as a real
    # API may. Wait for them: the next deploy must adopt them rather than create twins.
    wait_for(lambda: len(fake.endpoints()) == 4, 60, "the creates sent before Ctrl+C")
    done = run("deploy", "--target", "runpod", "--yes")
    assert done.returncode == 0, done.stderr
    names = [e.name for e in fake.endpoints()]
    assert sorted(names) == ["api", "cpu_worker", "gateway", "gpu_worker"]  # none twice
    plan = run("plan", "--target", "runpod", "--json")
    assert json.loads(plan.stdout)["counts"]["unchanged"] == 4
    gone = run("undeploy", "--all", "--yes", "--target", "runpod")
    assert gone.returncode == 0, gone.stderr
    assert fake.endpoints() == [] and fake.templates() == []


def test_no_key_in_any_output(fake: FakeRunPod, outputs: list[str], ai_keys: list[str]) -> None:
    """Runs last in this module: nothing any command printed holds the account key, nor
    any endpoint's key."""
    assert outputs and len(ai_keys) == 4
    for text in outputs:
        assert fake.api_key not in text
        assert not [k for k in ai_keys if k in text]
