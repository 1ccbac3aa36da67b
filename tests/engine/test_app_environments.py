"""`Engine.environments()`: an app's environments on the target, each with its mothership, on
the real local cloud and on the RunPod contract fake (real emulated workers); and the name rule
the CLI's `--env` and the TUI's picker share."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fakes.runpod import FakeRunPod
from headless import cli_env, run_cli
from projectfiles import MOTHERSHIP_CHILDREN, MOTHERSHIP_PROJECT, write_files

from engine.app_environments import AppEnvironment, environment_name_problem
from engine.home import Home
from engine.identity import app_slug, canonical_path
from engine.localcloud.store import Store
from engine.operations import Engine, OpError, app_name
from engine.plan import Plan


async def _yes(_: Plan) -> bool:
    return True


@pytest.mark.parametrize("name", ["production", "staging", "dev-2", "eu.west_1", "A" * 128])
def test_good_environment_names_pass(name: str) -> None:
    assert environment_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "needs a name"),
        ("bad name!", "'bad name!' has ' ', '!'"),
        ("-dash", "'-dash' must start with a letter or a digit"),
        ("../up", "must start with a letter or a digit"),
        ("a/b", "'a/b' has '/'"),
        ("é", "must start with a letter or a digit"),
        ("x" * 129, "too long (129 characters; at most 128)"),
    ],
)
def test_bad_environment_names_say_why(name: str, reason: str) -> None:
    problem = environment_name_problem(name)
    assert problem is not None and reason in problem


def test_the_cli_refuses_a_bad_env_name_before_reaching_a_target(tmp_path: Path) -> None:
    project = write_files(tmp_path / "cliapp", MOTHERSHIP_PROJECT)
    home = tmp_path / "home"
    done = run_cli(["status", "--env", "bad name!"], cli_env(home), project=project)
    assert done.returncode == 2, done
    assert "--env: environment name 'bad name!' has ' ', '!'" in done.stderr
    assert not (home / "localcloud").exists()  # no cloud was started for it


def test_the_cli_refuses_an_env_too_long_for_the_app_on_the_local_cloud(tmp_path: Path) -> None:
    project = write_files(tmp_path / "cliapp", MOTHERSHIP_PROJECT)
    home = tmp_path / "home"
    app = app_name(project)
    env = "e" * (128 - len(app))  # a good name alone; `{app}.{env}` is 129 characters
    assert environment_name_problem(env) is None
    done = run_cli(["status", "--env", env], cli_env(home), project=project)
    assert done.returncode == 2, done
    said = " ".join(done.stderr.split())  # the console wraps long lines
    assert f"--env: environment name 'eeeeeeeeeeeeeeeeeeee'… is too long for app {app!r}" in said
    assert f"at most {127 - len(app)} for the environment" in said
    assert not (home / "localcloud").exists()  # no cloud was started for it


async def test_local_cloud_lists_the_mothership_environment(
    tmp_path: Path, localcloud_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASH_MOTHERSHIP_WAIT", "90")
    project = write_files(tmp_path / "localenv", MOTHERSHIP_PROJECT)
    async with Engine(project) as engine:
        assert await engine.environments() == []
    async with Engine(project, env="staging") as engine:
        report = await engine.deploy(None, confirm=_yes, mothership=True)
        assert report.ok, report
        assert await engine.environments() == [AppEnvironment("staging", "mothership")]
    # Direct deploys are the environment `local`, beside staging's, not over it.
    async with Engine(project) as engine:
        report = await engine.deploy(["worker"], confirm=_yes)
        assert report.ok, report
        assert await engine.environments() == [
            AppEnvironment("local"),
            AppEnvironment("staging", "mothership"),
        ]
        assert {e.name for e in (await engine.deployed()).values()} == {"worker"}
    async with Engine(project, env="staging") as engine:
        assert {e.name for e in (await engine.deployed()).values()} == {
            "mothership",
            *MOTHERSHIP_CHILDREN,
        }


@pytest.mark.parametrize("env", [None, "local"])
def test_a_mothership_needs_an_environment_on_the_local_cloud(
    tmp_path: Path, env: str | None
) -> None:
    """Without one (or with direct mode's, `local`) it would land among the direct deploys
    and replace them."""

    async def deploy() -> None:
        async with Engine(project, env=env) as engine:
            await engine.deploy(None, confirm=_yes, mothership=True)

    project = write_files(tmp_path / "noenv", MOTHERSHIP_PROJECT)
    with pytest.raises(OpError, match="a mothership deploys to an environment: pass --env NAME"):
        asyncio.run(deploy())


def _legacy_store(tmp_path: Path, localcloud_home: Path) -> Path:
    """A store written when an environment's (`old`) mothership and children lived under the
    plain app (with their `environment`), beside direct mode's `extra`; the project's path."""
    project = write_files(tmp_path / "oldapp", MOTHERSHIP_PROJECT)
    app = app_slug(canonical_path(project))
    store = Store(Home(localcloud_home).db_path)
    try:
        store.upsert_app(app, str(project))
        for name, role in (("mothership", "mothership"), ("gateway", "child"), ("extra", "")):
            store.upsert_endpoint(
                app,
                name,
                resource_type="CpuLiveServerless",
                status="stopped",
                role=role or "endpoint",
                mothership="mothership" if role == "child" else None,
                environment="old" if role else "local",
            )
    finally:
        store.close()
    return project


def test_records_from_before_environments_had_their_own_app_show_and_undeploy(
    tmp_path: Path, localcloud_home: Path
) -> None:
    """`status --env` shows the old records, `undeploy --env --all` removes them and nothing
    of direct mode."""
    project = _legacy_store(tmp_path, localcloud_home)
    env = cli_env(localcloud_home)

    def names(*args: str) -> set[str]:
        done = run_cli(["status", *args, "--no-probe", "--json"], env, project=project)
        assert done.returncode == 0, done.stderr
        return {e["name"] for e in json.loads(done.stdout)["endpoints"] if e["status"] == "stopped"}

    assert names("--env", "old") == {"mothership", "gateway"}
    done = run_cli(["status", "--no-probe"], env, project=project)
    assert "Also deployed, apart from these: --env old." in " ".join(done.stdout.split())
    done = run_cli(["undeploy", "--env", "old", "--all", "--yes"], env, project=project)
    assert done.returncode == 0, done.stderr
    assert names("--env", "old") == set()
    assert names() == {"extra"}  # direct mode's, untouched
    assert names("--env", "local") == {"extra"}  # direct mode's environment, by name


def test_records_from_before_environments_had_their_own_app_answer_logs_invoke_restart(
    tmp_path: Path, localcloud_home: Path
) -> None:
    """What `status --env old` lists, `logs`, `invoke` and `restart` reach (never a 404)."""
    project = _legacy_store(tmp_path, localcloud_home)
    env = cli_env(localcloud_home)
    done = run_cli(["logs", "--env", "old", "gateway"], env, project=project)
    assert done.returncode == 0, done.stderr
    done = run_cli(
        ["invoke", "--env", "old", "gateway:/hello", "--data", "{}"], env, project=project
    )
    assert "404" not in done.stderr, done.stderr
    assert "endpoint 'gateway' has no URL yet (status stopped)" in done.stderr
    done = run_cli(["restart", "--env", "old", "gateway", "--yes"], env, project=project)
    assert "404" not in done.stdout + done.stderr, done
    assert "its build copy is missing: deploy it again" in done.stderr  # reached; says why
    # An endpoint recorded nowhere is still named as unknown.
    done = run_cli(["logs", "--env", "old", "nosuch"], env, project=project)
    assert done.returncode != 0 and "nosuch" in done.stderr, done


@pytest.fixture
def fake(fake_runpod: FakeRunPod, monkeypatch: pytest.MonkeyPatch) -> FakeRunPod:
    """The fake RunPod account, a mothership given 90 s to converge."""
    monkeypatch.setenv("FLASH_MOTHERSHIP_WAIT", "90")
    return fake_runpod


async def test_runpod_lists_the_flash_apps_environments_and_their_mothership(
    tmp_path: Path, fake: FakeRunPod
) -> None:
    project = write_files(tmp_path / "rpapp", MOTHERSHIP_PROJECT)
    async with Engine(project, target="runpod", env="staging") as engine:
        assert await engine.environments() == []  # no Flash app yet
        report = await engine.deploy(None, confirm=_yes, mothership=True)
        assert report.ok, report
        provider = engine.provider
        flash_app = await provider.api.app_by_name(engine.app)  # type: ignore[attr-defined]
        assert flash_app is not None
        await provider.api.create_environment(flash_app.id, "dev")  # type: ignore[attr-defined]
        try:
            listed = await engine.environments()
        finally:
            await engine.undeploy(None, confirm=_yes, on_event=lambda _: None)
    assert listed == [AppEnvironment("dev"), AppEnvironment("staging", "mothership")]
    asked = [c.operation for c in fake.graphql_calls]
    assert "flashAppByName" in asked and "flashBuild" in asked
