"""Per-endpoint environments (engine.envs, engine.env_step): real uv, real venvs, real workers.

Packages come from wheels built here into a local find-links directory, and uv is told
`--no-index` (through `PIP_NO_INDEX`, as a user's pip setting would be), so nothing needs the
network and each install takes well under a second.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from inprocess import deploy, invoke
from projectfiles import env_worker, write_files
from wheels import make_wheel

import runtime
from engine.env_step import SYSTEM_DEPENDENCY_MISSING, env_step
from engine.envs import EnvCache, EnvContents, EnvError, endpoint_contents, project_requirements
from engine.envs.cache import MARKER, env_cache_dir
from engine.envs.indexes import local_cpu_torch, pip_settings, uv_index_args
from engine.home import Home
from engine.provider import EndpointSpec

OUR_RUNTIME = str(Path(runtime.__file__).resolve().parent)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wheels")
    make_wheel(directory, "flashtiny", "1.0", {"flashtiny/__init__.py": "VALUE = 'tiny-1.0'\n"})
    make_wheel(directory, "flashother", "2.0", {"flashother/__init__.py": "VALUE = 'other'\n"})
    # A package our runtime's install also has: the environment's pinned copy must win.
    make_wheel(directory, "sniffio", "0.0.1", {"sniffio/__init__.py": "__version__ = 'pinned'\n"})
    return directory


@pytest.fixture(scope="module")
def index_env(wheels: Path) -> dict[str, str]:
    """The environment a user with a local wheel directory and no index would have."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update({"PIP_FIND_LINKS": str(wheels), "PIP_NO_INDEX": "1"})
    return env


def _python_says(python: Path, code: str) -> str:
    done = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


# -- what an environment holds ----------------------------------------------------------------


def _resource(resource_type: str, *deps: str, system: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "resource_type": resource_type,
        "functions": [{"dependencies": list(deps), "system_dependencies": list(system)}],
    }


def test_contents_are_normalized_and_keyed(tmp_path: Path) -> None:
    project = project_requirements(tmp_path, {})
    a = endpoint_contents(_resource("CpuLiveServerless", "Flash_Tiny>=1.0", "b"), project)
    b = endpoint_contents(_resource("CpuLiveServerless", "b", "flash-tiny >= 1.0"), project)
    assert a is not None and b is not None
    assert a.requirements == ("b", "flash-tiny>=1.0")
    assert a.key(("x",)) == b.key(("x",))
    assert a.key(("x",)) != b.key(("y",))  # another install of our runtime: another env
    # no extra dependency: no environment (today's interpreter, nothing slower)
    assert endpoint_contents(_resource("CpuLiveServerless"), project) is None
    # upstream's SDK is served by our runtime, never installed
    assert (
        endpoint_contents(_resource("CpuLiveServerless", "tetra_rp", "runpod-flash"), project)
        is None
    )


def test_gpu_endpoints_get_torch_only_when_the_code_imports_it(tmp_path: Path) -> None:
    gpu = _resource("LiveServerless")
    nohome = {"HOME": str(tmp_path / "nohome")}  # no pip settings naming a CPU build
    # The quickstart's case: a GPU worker that never imports torch gets no torch (no
    # multi-GB download for a project that does not use it).
    write_files(tmp_path, {"gpu_worker.py": "import math\nfrom torchvision_like import x\n"})
    assert not project_requirements(tmp_path, nohome).gpu_torch
    assert endpoint_contents(gpu, project_requirements(tmp_path, nohome)) is None
    # `import torch` inside a function body, as upstream's examples do, counts; so does a
    # helper module with no Flash decorator at all.
    write_files(
        tmp_path,
        {
            "lib/helpers.py": (
                "def f():\n    try:\n        import torch.nn\n"
                "    except ImportError:\n        pass\n"
            )
        },
    )
    on = endpoint_contents(gpu, project_requirements(tmp_path, nohome))
    assert on is not None and on.requirements == ("torch",) and on.torch
    assert (
        endpoint_contents(_resource("CpuLiveServerless"), project_requirements(tmp_path, nohome))
        is None
    )
    # the environment variable turns it off for every project
    off = project_requirements(tmp_path, {**nohome, "FLASH_TUI_GPU_TORCH": "off"})
    assert endpoint_contents(gpu, off) is None
    # the project setting turns it off; the variable wins over it
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["flashother", "tetra-rp"]\n'
        "[tool.flash]\ngpu-torch = false\n"
    )
    (tmp_path / "requirements.txt").write_text("# a comment\nflashtiny==1.0  # pinned\n")
    settings = project_requirements(tmp_path, nohome)
    contents = endpoint_contents(gpu, settings)
    assert contents is not None and contents.requirements == ("flashother", "flashtiny==1.0")
    assert not contents.torch
    forced = endpoint_contents(
        gpu, project_requirements(tmp_path, {**nohome, "FLASH_TUI_GPU_TORCH": "1"})
    )
    assert forced is not None and "torch" in forced.requirements


def test_gpu_torch_setting_forces_torch_without_an_import(tmp_path: Path) -> None:
    nohome = {"HOME": str(tmp_path / "nohome")}
    write_files(tmp_path, {"w.py": "import os\n"})
    (tmp_path / "pyproject.toml").write_text("[tool.flash]\ngpu-torch = true\n")
    contents = endpoint_contents(
        _resource("LiveServerless"), project_requirements(tmp_path, nohome)
    )
    assert contents is not None and contents.requirements == ("torch",)
    # ignored files (a vendored copy, a virtual environment) say nothing about the project
    (tmp_path / "pyproject.toml").unlink()
    write_files(tmp_path, {".venv/lib/t.py": "import torch\n", ".gitignore": "old/\n"})
    write_files(tmp_path, {"old/t.py": "import torch\n"})
    assert not project_requirements(tmp_path, nohome).gpu_torch


def test_bad_gpu_torch_setting_is_named(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.flash]\ngpu-torch = "maybe"\n')
    settings = project_requirements(tmp_path, {})
    assert not settings.gpu_torch  # the default rule: nothing here imports torch
    [warning] = settings.diagnostics
    assert warning.file == "pyproject.toml" and "gpu-torch" in warning.message
    assert "'maybe'" in warning.message


def test_pip_settings_become_uv_options(tmp_path: Path) -> None:
    (tmp_path / "etc" / "pip").mkdir(parents=True)
    (tmp_path / "etc" / "pip" / "pip.conf").write_text(
        "[global]\nfind-links = /global/wheels\nconstraint = /c.txt\n"
    )
    (tmp_path / ".config" / "pip").mkdir(parents=True)
    (tmp_path / ".config" / "pip" / "pip.conf").write_text(
        "[global]\nfind-links = /opt/wheels\n"
        "extra-index-url = file:///a/simple\n  file:///b/simple\ncert = /ca.crt\n"
        "[install]\nindex-url = https://example.invalid/simple\n"
    )
    environ = {"HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path / "etc")}
    settings = pip_settings(environ, prefix=str(tmp_path / "prefix"))
    assert uv_index_args(settings) == [
        "--find-links",
        "/opt/wheels",  # the user's file wins over the global one
        "--index-url",
        "https://example.invalid/simple",
        "--extra-index-url",
        "file:///a/simple",
        "--extra-index-url",
        "file:///b/simple",
        "--constraint",
        "/c.txt",
    ]
    # the variables win over every file
    environ["PIP_FIND_LINKS"] = "/x /y"
    environ["PIP_NO_INDEX"] = "1"
    args = uv_index_args(pip_settings(environ, prefix=str(tmp_path / "prefix")))
    assert args[:5] == ["--find-links", "/x", "--find-links", "/y", "--index-url"]
    assert "--no-index" in args
    assert uv_index_args({"no-index": "0"}) == []


def test_gpu_torch_is_the_local_cpu_build_when_there_is_one(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("torch-9.0.0-py3-none-any.whl", "torch-2.1.0+cpu-py3-none-any.whl"):
        (wheels / name).write_bytes(b"")
    (wheels / "torch-2.2.0+cpu-cp27-cp27mu-linux_armv7l.whl").write_bytes(b"")  # not ours
    assert local_cpu_torch({"find-links": f"/nowhere file://{wheels}"}) == "torch==2.1.0+cpu"
    assert local_cpu_torch({"find-links": "https://example.invalid/wheels"}) is None
    write_files(tmp_path, {"gpu.py": "import torch\n"})
    project = project_requirements(tmp_path, {"PIP_FIND_LINKS": str(wheels), "HOME": "/none"})
    contents = endpoint_contents(_resource("LiveServerless"), project)
    assert contents is not None and contents.requirements == ("torch==2.1.0+cpu",)


def test_cache_dir_is_overridable(tmp_path: Path) -> None:
    assert env_cache_dir({"FLASH_TUI_ENV_CACHE": str(tmp_path)}) == tmp_path.resolve()
    assert env_cache_dir({}).name == "envs" and "flash-tui" in str(env_cache_dir({}))


# -- the cache ----------------------------------------------------------------------------------


def test_env_is_built_once_then_reused_without_the_installer(
    tmp_path: Path, index_env: dict[str, str]
) -> None:
    contents = EnvContents(("flashtiny",))
    first = EnvCache(tmp_path, environ=index_env).ensure(contents)
    assert first.built and (first.path / MARKER).is_file()
    assert _python_says(first.python, "import flashtiny; print(flashtiny.VALUE)") == "tiny-1.0"
    marker = (first.path / MARKER).stat().st_mtime_ns
    # A second cache (another project, another process) with no usable installer at all.
    second = EnvCache(tmp_path, uv="/nonexistent/uv", environ=index_env).ensure(contents)
    assert not second.built and second.path == first.path
    assert (first.path / MARKER).stat().st_mtime_ns == marker
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.key, f"{first.key}.lock"])


def test_runtime_in_the_env_is_ours_and_pinned_packages_win(
    tmp_path: Path, index_env: dict[str, str]
) -> None:
    env = EnvCache(tmp_path, environ=index_env).ensure(EnvContents(("sniffio==0.0.1",)))
    said = _python_says(
        env.python,
        "import os, runtime, sniffio, fastapi, cloudpickle; "
        "print(os.path.dirname(os.path.realpath(runtime.__file__))); print(sniffio.__version__)",
    )
    ours, pinned = said.splitlines()
    assert ours == OUR_RUNTIME
    assert pinned == "pinned"


def test_failed_install_leaves_nothing_taken_as_ready(
    tmp_path: Path, index_env: dict[str, str]
) -> None:
    cache = EnvCache(tmp_path, environ=index_env)
    contents = EnvContents(("flashtiny==9.9",))
    with pytest.raises(EnvError) as failure:
        cache.ensure(contents)
    assert "flashtiny" in str(failure.value) and "installing flashtiny==9.9 failed" in str(
        failure.value
    )
    assert cache.find(contents) is None
    assert not any(p.name.startswith(".staging-") for p in tmp_path.iterdir())
    assert not (tmp_path / cache.key(contents)).exists()


def test_half_built_env_is_not_ready_and_gets_rebuilt(
    tmp_path: Path, index_env: dict[str, str]
) -> None:
    cache = EnvCache(tmp_path, environ=index_env)
    contents = EnvContents(("flashother",))
    key = cache.key(contents)
    # What a SIGKILL mid-build leaves: a staging directory, and (older layouts) a final one
    # without its marker.
    (tmp_path / f".staging-{key}-dead").mkdir()
    (tmp_path / key / "bin").mkdir(parents=True)
    assert cache.find(contents) is None
    env = cache.ensure(contents)
    assert env.built
    assert _python_says(env.python, "import flashother; print(flashother.VALUE)") == "other"
    assert not (tmp_path / f".staging-{key}-dead").exists()


def test_concurrent_builds_of_one_key_build_once(tmp_path: Path, index_env: dict[str, str]) -> None:
    contents = EnvContents(("flashtiny", "flashother"))
    results: list[Any] = []

    def build() -> None:
        results.append(EnvCache(tmp_path, environ=index_env).ensure(contents))

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 2
    assert sorted(r.built for r in results) == [False, True]
    assert results[0].path == results[1].path


# -- the deploy step ----------------------------------------------------------------------------


def test_env_step_sets_interpreters_errors_and_warnings(
    tmp_path: Path, index_env: dict[str, str]
) -> None:
    manifest = {
        "resources": {
            "tiny": _resource(
                "CpuLiveServerless", "flashtiny", system=("sh", "flash-no-such-tool")
            ),
            "plain": _resource("CpuLiveServerless"),
            "broken": _resource("CpuLiveServerless", "flashmissing"),
        }
    }
    specs = [EndpointSpec(name=n) for n in ("tiny", "plain", "broken")]
    events: list[tuple[str, str, str | None]] = []

    def emit(step: str, message: str = "", **kw: Any) -> None:
        events.append((step, message, kw.get("name")))

    cache = EnvCache(tmp_path / "cache", environ=index_env)
    result = asyncio.run(env_step(tmp_path, manifest, specs, emit, cache=cache, environ=index_env))
    by_name = {s.name: s for s in result.specs}
    assert by_name["plain"].python is None and by_name["plain"].setup_error is None
    assert by_name["tiny"].python and Path(by_name["tiny"].python).exists()
    assert by_name["tiny"].setup_error is None
    assert by_name["broken"].python is None
    assert "flashmissing" in (by_name["broken"].setup_error or "")
    [warning] = result.diagnostics
    assert warning.code == SYSTEM_DEPENDENCY_MISSING and "flash-no-such-tool" in warning.message
    assert "sh," not in warning.message  # present on the machine: not named
    assert any(step == "envs" and name == "tiny" and "ready" in msg for step, msg, name in events)
    assert any(name == "broken" and "failed" in msg for _, msg, name in events)


# -- end to end: real local cloud, real workers --------------------------------------------------

PROJECT = {
    "workers/tiny.py": """
        from tetra_rp import CpuLiveServerless, remote

        tiny_config = CpuLiveServerless(name="uses_tiny")
        plain_config = CpuLiveServerless(name="plain")
        broken_config = CpuLiveServerless(name="broken")


        @remote(resource_config=tiny_config, dependencies=["flashtiny"])
        def tiny_info() -> dict:
            import os
            import sys

            import flashtiny
            import runtime

            where = os.path.dirname(os.path.realpath(runtime.__file__))
            return {
                "value": flashtiny.VALUE,
                "runtime": where,
                "prefix": sys.prefix,
                "pid": os.getpid(),
            }


        @remote(resource_config=plain_config)
        def plain_info() -> dict:
            import sys

            return {"prefix": sys.prefix}


        @remote(resource_config=broken_config, dependencies=["flashmissing==1.0"])
        def broken_info() -> str:
            return "never"
    """,
}


@pytest.fixture(scope="module")
def cloud_home(localcloud_home: Path) -> Home:
    return Home(localcloud_home)


@pytest.fixture(scope="module")
def deployed_projects(
    tmp_path_factory: pytest.TempPathFactory, cloud_home: Home, index_env: dict[str, str]
) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("envs-e2e")
    first = write_files(base / "first", PROJECT)
    second = base / "second"
    shutil.copytree(first, second)
    cache_dir = base / "cache"
    report, events = deploy(first, cloud_home, EnvCache(cache_dir, environ=index_env))
    envs_after_first = sorted(p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock"))
    # The second project finds the environment: uv is not even there to run.
    report2, events2 = deploy(
        second, cloud_home, EnvCache(cache_dir, uv="/nonexistent/uv", environ=index_env)
    )
    yield {
        "first": first,
        "second": second,
        "report": report,
        "events": events,
        "report2": report2,
        "events2": events2,
        "cache_dir": cache_dir,
        "envs_after_first": envs_after_first,
    }


def test_endpoint_with_dependencies_runs_on_its_env(
    deployed_projects: dict[str, Any], cloud_home: Home
) -> None:
    report = deployed_projects["report"]
    results = {r.name: r for r in report.outcome.results}
    assert results["uses_tiny"].ok and results["plain"].ok, report.to_dict()
    answer = invoke(deployed_projects["first"], cloud_home, "uses_tiny:tiny_info")
    assert answer.ok, answer.error
    assert answer.result["value"] == "tiny-1.0"
    assert answer.result["runtime"] == OUR_RUNTIME  # this project's runtime, inside the env
    cache_dir = deployed_projects["cache_dir"].resolve()
    assert Path(answer.result["prefix"]).resolve().parent == cache_dir
    # no dependencies: the local cloud's own interpreter, no environment
    plain = invoke(deployed_projects["first"], cloud_home, "plain:plain_info")
    assert plain.ok and Path(plain.result["prefix"]).resolve().parent != cache_dir
    steps = [e for e in deployed_projects["events"] if e.step == "envs"]
    assert any(e.name == "uses_tiny" and "ready" in e.message for e in steps)
    # Started through the pool: forked by the fork server of its environment's interpreter.
    worker = psutil.Process(answer.result["pid"])
    server = worker.parent()
    assert server is not None and "runtime.forkserver" in server.cmdline()
    assert Path(server.cmdline()[0]).parent.parent.parent.resolve() == cache_dir


def test_failed_install_marks_only_that_endpoint_failed(
    deployed_projects: dict[str, Any], cloud_home: Home
) -> None:
    from engine.localcloud.provider import LocalCloudProvider
    from engine.operations import Engine

    report = deployed_projects["report"]
    assert not report.ok
    [failed] = report.outcome.failed()
    assert failed.name == "broken" and "flashmissing" in (failed.error or "")

    async def records() -> dict[str, Any]:
        async with Engine(deployed_projects["first"], LocalCloudProvider(cloud_home)) as engine:
            return {e.name: e for e in await engine.provider.list_endpoints(engine.app)}

    deployed = asyncio.run(records())
    assert deployed["broken"].status == "failed"
    assert "flashmissing" in (deployed["broken"].last_error or "")
    assert deployed["broken"].pid is None
    assert deployed["uses_tiny"].status == "healthy" and deployed["plain"].status == "healthy"


def test_second_project_reuses_the_env_without_installing(
    deployed_projects: dict[str, Any], cloud_home: Home
) -> None:
    report2 = deployed_projects["report2"]
    results = {r.name: r for r in report2.outcome.results}
    assert results["uses_tiny"].ok, report2.to_dict()
    steps = [e for e in deployed_projects["events2"] if e.step == "envs"]
    assert any(e.name == "uses_tiny" and "reused" in e.message for e in steps)
    assert not any("installing flashtiny" in e.message for e in steps)
    cache_dir = deployed_projects["cache_dir"]
    now = sorted(p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock"))
    assert now == deployed_projects["envs_after_first"]
    answer = invoke(deployed_projects["second"], cloud_home, "uses_tiny:tiny_info")
    assert answer.ok and answer.result["value"] == "tiny-1.0"


def test_store_keeps_the_interpreter_and_upgrades_older_stores(tmp_path: Path) -> None:
    import sqlite3

    from engine.localcloud.store import MIGRATIONS, SCHEMA_VERSION, Store, add_python_column
    from engine.localcloud.workers import worker_interpreter

    db = tmp_path / "cloud.db"
    store = Store(db)
    try:
        record = store.upsert_endpoint("app", "tiny", python="/envs/k/bin/python")
        assert worker_interpreter(record) == "/envs/k/bin/python"
        plain = store.upsert_endpoint("app", "plain")
        assert plain["python"] is None and worker_interpreter(plain) == sys.executable
    finally:
        store.close()
    # A store of the version before the column: no column yet (the later migrations only add).
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE endpoints DROP COLUMN python")
    conn.execute(f"PRAGMA user_version = {MIGRATIONS.index(add_python_column)}")
    conn.commit()
    conn.close()
    store = Store(db)
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert store.get_endpoint("app", "tiny")["python"] is None  # type: ignore[index]
        assert store.upsert_endpoint("app", "tiny", python="/p")["python"] == "/p"
    finally:
        store.close()


def test_cli_deploy_shows_environment_progress_and_the_failure(
    deployed_projects: dict[str, Any], cloud_home: Home, index_env: dict[str, str]
) -> None:
    from headless import run_cli

    third = deployed_projects["first"].parent / "third"
    shutil.copytree(deployed_projects["first"], third, ignore=shutil.ignore_patterns(".flash"))
    env = {
        **index_env,
        "FLASH_TUI_HOME": str(cloud_home.root),
        "FLASH_TUI_ENV_CACHE": str(deployed_projects["cache_dir"]),
        "COLUMNS": "200",
    }
    proc = run_cli(["deploy", "--yes"], env, project=third)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # `broken` failed, the rest deployed
    said = " ".join(proc.stderr.split())
    assert "uses_tiny environment" in said and "reused" in said, said
    assert "broken environment failed: installing flashmissing==1.0 failed" in said, said
    assert "No solution found" in said, said  # uv's last lines: shown when it fails
    assert "✗ broken" in said and "flashmissing" in said, said


def test_changed_requirements_redeploy_onto_the_new_environment(
    deployed_projects: dict[str, Any], cloud_home: Home, index_env: dict[str, str]
) -> None:
    from engine.localcloud.provider import LocalCloudProvider
    from engine.operations import Engine

    project = deployed_projects["second"]
    cache = EnvCache(deployed_projects["cache_dir"], environ=index_env)

    async def plan() -> dict[str, Any]:
        async with Engine(project, LocalCloudProvider(cloud_home), env_cache=cache) as engine:
            return {i.name: i for i in (await engine.plan()).items}

    before = asyncio.run(plan())
    assert before["uses_tiny"].action == "unchanged" and before["plain"].action == "unchanged"
    # A project requirement goes into every endpoint's environment.
    (project / "requirements.txt").write_text("flashother\n")
    after = asyncio.run(plan())
    for name in ("uses_tiny", "plain"):
        assert after[name].action == "update", after[name]
        assert any("environment changed" in r for r in after[name].reasons)
    report, _ = deploy(project, cloud_home, cache)
    assert {r.name for r in report.outcome.results if r.ok} >= {"uses_tiny", "plain"}
    plain = invoke(project, cloud_home, "plain:plain_info")
    assert plain.ok and Path(plain.result["prefix"]).resolve().parent == cache.root.resolve()
    assert asyncio.run(plan())["plain"].action == "unchanged"


def test_worker_whose_environment_left_the_cache_fails_then_a_deploy_rebuilds_it(
    tmp_path: Path, cloud_home: Home, index_env: dict[str, str]
) -> None:
    import signal

    from waiting import wait_for

    from engine.localcloud.provider import LocalCloudProvider
    from engine.operations import Engine

    project = write_files(
        tmp_path / "gone",
        {"w.py": env_worker("gone_env", "flashother", "other")},
    )
    cache = EnvCache(tmp_path / "cache", environ=index_env)
    report, _ = deploy(project, cloud_home, cache)
    assert report.ok, report.to_dict()

    async def record() -> Any:
        async with Engine(project, LocalCloudProvider(cloud_home), env_cache=cache) as engine:
            return {e.name: e for e in await engine.provider.list_endpoints(engine.app)}["gone_env"]

    deployed = asyncio.run(record())
    assert deployed.python and deployed.pid
    shutil.rmtree(Path(deployed.python).parent.parent)
    os.killpg(deployed.pid, signal.SIGKILL)  # a crash: the supervisor restarts it
    failed = wait_for(
        lambda: (r := asyncio.run(record())).status == "failed" and r, 30, "gone_env failed"
    )
    assert "environment is missing" in (failed.last_error or "")
    report, _ = deploy(project, cloud_home, cache)
    assert report.ok, report.to_dict()
    answer = invoke(project, cloud_home, "gone_env:other")
    assert answer.ok and answer.result == "other"


def test_index_credentials_never_reach_the_message(tmp_path: Path) -> None:
    from engine.envs.cache import redact_urls

    assert redact_urls("see https://alice:s3cr3t@pypi.example/simple/x") == (
        "see https://***@pypi.example/simple/x"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    environ.update(
        {
            "HOME": str(tmp_path),  # no pip configuration file of this machine
            "PIP_INDEX_URL": "http://alice:s3cr3t@127.0.0.1:9/simple",
            "UV_HTTP_RETRIES": "0",
        }
    )
    cache = EnvCache(tmp_path / "cache", environ=environ)
    with pytest.raises(EnvError) as failure:
        cache.ensure(EnvContents(("flashtiny @ https://bob:hunter2@127.0.0.1:9/flashtiny.whl",)))
    message = str(failure.value)
    assert "flashtiny" in message
    assert "s3cr3t" not in message and "hunter2" not in message
    # no installer at all: said, not a crash
    with pytest.raises(EnvError, match="cannot run uv"):
        EnvCache(tmp_path / "c2", uv="/nonexistent/uv", environ=environ).ensure(
            EnvContents(("flashtiny",))
        )


def test_sandbox_reads_the_endpoints_environment_only_when_it_runs_on_one(tmp_path: Path) -> None:
    from engine.localcloud.sandboxing import worker_policy

    home = Home(tmp_path / "home")
    env = tmp_path / "cache" / "k"
    build = tmp_path / "home" / "apps" / "a" / "builds" / "b"
    policy = worker_policy(home, "a", "n", build, None, str(env / "bin" / "python"))
    assert str(env) in policy.read
    assert not any(p.startswith(str(env)) for p in policy.write)  # read and execute, no write
    assert str(env) not in worker_policy(home, "a", "n", build, None).read
    assert str(env) not in worker_policy(home, "a", "n", build, None, sys.executable).read


def test_quickstart_gets_no_torch_and_torch_examples_do(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    environ = {"HOME": str(tmp_path)}  # no override, no pip settings
    # The README's first deploy: its gpu_worker never imports torch, so nothing big installs.
    assert not project_requirements(examples / "quickstart", environ).gpu_torch
    assert project_requirements(examples / "flash_dev", environ).gpu_torch
    assert project_requirements(examples / "tetra_app", environ).gpu_torch
