"""With the real Flash SDK (tetra-rp 0.20.0, from the `dev` extra) installed next to us, as real
users have it, user code in workers and in the build's import check still runs on our runtime:
a cross-endpoint call stays on the local cloud instead of trying to reach RunPod."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from headless import cli_env, cli_for, json_of
from projectfiles import copy_example

REPO = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_real_sdk_is_installed() -> None:
    # The rest of this module means nothing without it: `pip install -e ".[dev]"` brings it.
    assert importlib.util.find_spec("tetra_rp") is not None, 'pip install -e ".[dev]"'
    assert importlib.metadata.version("tetra-rp") == "0.20.0"


def test_shims_serve_our_sdk_over_the_installed_one() -> None:
    proc = _python(
        """
        from runtime import shims
        shims.install()
        import runtime, tetra_rp, runpod_flash
        from tetra_rp import remote, CpuLoadBalancerSlsResource
        from tetra_rp.core.resources import LiveServerless
        from tetra_rp.client import remote as r2
        from runpod_flash import Endpoint
        assert shims.is_shim(tetra_rp) and shims.is_shim(runpod_flash)
        assert remote is r2 is runtime.remote and Endpoint is runtime.Endpoint
        assert CpuLoadBalancerSlsResource is runtime.CpuLoadBalancerSlsResource
        assert LiveServerless is runtime.LiveServerless
        print("ours")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ours"


def test_shims_replace_a_real_sdk_imported_before_them() -> None:
    proc = _python(
        """
        import tetra_rp.core.resources  # the real one, e.g. pulled in by a library
        from runtime import shims
        assert not shims.is_shim(tetra_rp)
        shims.install()
        import runtime
        import tetra_rp
        from tetra_rp.core.resources import LoadBalancerSlsResource
        assert shims.is_shim(tetra_rp), tetra_rp
        assert LoadBalancerSlsResource is runtime.LoadBalancerSlsResource
        print("ours")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ours"


# -- the local-cloud flow -------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_example("quickstart", tmp_path_factory.mktemp("realsdk") / "realsdkapp")


@pytest.fixture(scope="module")
def cli(
    localcloud_home: Path, project: Path
) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    # No RunPod credentials anywhere: a call that leaves the local cloud must fail loudly.
    env = cli_env(localcloud_home)
    env.pop("RUNPOD_API_KEY", None)

    run = cli_for(env, project)
    yield run
    run("undeploy", "--all", "--yes")


def test_build_import_check_passes(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    proc = cli("build", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cross_endpoint_calls_stay_on_the_local_cloud(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    deployed = cli("deploy", "--yes", "--json")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    stats = json_of(
        cli("invoke", "POST /stats", "--data", '{"text": "the cat and the hat"}', "--json")
    )
    assert stats["ok"], stats
    assert stats["status_code"] == 200
    assert stats["result"] == {"words": 5, "chars": 19, "unique": 4}
    found = json_of(
        cli("invoke", "POST /keywords", "--data", '{"text": "b a b c b c", "top": 2}', "--json")
    )
    assert found["ok"], found
    assert found["result"] == {"keywords": ["b", "c"]}
