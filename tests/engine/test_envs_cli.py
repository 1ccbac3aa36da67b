"""`flash-tui envs` and `flash-tui envs prune`: the real CLI on a real cache (uv, tiny wheels)
and a real local cloud whose deployed endpoint keeps its environment from being pruned."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from headless import run_cli
from projectfiles import env_worker, write_files
from wheels import make_wheel

from engine.envs import EnvCache, EnvContents


@pytest.fixture(scope="module")
def index_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    wheels = tmp_path_factory.mktemp("wheels")
    make_wheel(wheels, "flashtiny", "1.0", {"flashtiny/__init__.py": "VALUE = 'tiny-1.0'\n"})
    make_wheel(wheels, "flashother", "2.0", {"flashother/__init__.py": "VALUE = 'other'\n"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update({"PIP_FIND_LINKS": str(wheels), "PIP_NO_INDEX": "1"})
    return env


def test_envs_lists_and_prunes_only_what_no_deployed_endpoint_uses(
    tmp_path: Path, localcloud_home: Path, index_env: dict[str, str]
) -> None:
    cache_dir = tmp_path / "cache"
    env = {
        **index_env,
        "FLASH_TUI_HOME": str(localcloud_home),
        "FLASH_TUI_ENV_CACHE": str(cache_dir),
        "COLUMNS": "200",
    }
    project = write_files(
        tmp_path / "kept",
        {"w.py": env_worker("kept", "flashtiny")},
    )
    deployed = run_cli(["deploy", "--yes"], env, project=project)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    unused = EnvCache(cache_dir, environ=index_env).ensure(EnvContents(("flashother",)))

    listed = run_cli(["envs", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    envs = {e["key"]: e for e in json.loads(listed.stdout)["environments"]}
    assert len(envs) == 2
    assert envs[unused.key]["requirements"] == ["flashother"] and envs[unused.key]["used_by"] == []
    [kept] = [e for k, e in envs.items() if k != unused.key]
    [user] = kept["used_by"]
    assert kept["requirements"] == ["flashtiny"] and user.endswith("/kept"), kept
    assert all(e["size_bytes"] > 0 and e["last_used"] >= e["built_at"] for e in envs.values())

    table = run_cli(["envs"], env)
    assert table.returncode == 0 and "flashother" in table.stdout and user in table.stdout

    # Both were used just now: nothing is older than a day.
    young = run_cli(["envs", "prune", "--older-than", "1", "--json"], env)
    assert young.returncode == 0 and json.loads(young.stdout)["removed"] == []
    pruned = run_cli(["envs", "prune"], env)
    assert pruned.returncode == 0, pruned.stderr
    assert "1 environment removed" in pruned.stdout and "1 kept" in pruned.stdout
    assert not unused.path.exists()
    assert (cache_dir / kept["key"]).is_dir()
    answer = run_cli(["invoke", "kept:value", "--json"], env, project=project)
    assert answer.returncode == 0 and json.loads(answer.stdout)["result"] == "tiny-1.0"

    bad = run_cli(["envs", "prune", "--older-than", "-3"], env)
    assert bad.returncode == 2 and "--older-than" in bad.stderr and "-3" in bad.stderr
