"""The build's import check runs each handler on the interpreter its endpoint will run on
(engine.build.interpreters), and the deploy's `envs` step checks the ones whose environment did
not exist yet (engine.env_step): real uv, real environments, real local cloud and workers.

Packages come from tiny wheels built here into a find-links directory, with `--no-index`.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from inprocess import deploy, invoke
from projectfiles import env_worker, write_files
from wheels import make_wheel

from engine.build.interpreters import handler_interpreters, provides_module
from engine.build.model import BuildError
from engine.build.project import build_project
from engine.envs import EnvCache, EnvContents
from engine.home import Home


@pytest.fixture(scope="module")
def index_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A user with a local wheel directory and no index."""
    wheels = tmp_path_factory.mktemp("wheels")
    make_wheel(wheels, "flashtiny", "1.0", {"flashtiny/__init__.py": "VALUE = 'tiny-1.0'\n"})
    make_wheel(wheels, "flashother", "2.0", {"flashother/__init__.py": "VALUE = 'other'\n"})
    # Named like the module the worker imports, yet holding another one.
    make_wheel(wheels, "flashmisnamed", "1.0", {"flashreal/__init__.py": "X = 1\n"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update({"PIP_FIND_LINKS": str(wheels), "PIP_NO_INDEX": "1"})
    return env


def _worker(name: str, module: str, deps: list[str]) -> dict[str, str]:
    return {
        "w.py": f"""
            import {module}

            from tetra_rp import CpuLiveServerless, remote

            cfg = CpuLiveServerless(name="{name}")


            @remote(resource_config=cfg, dependencies={deps!r})
            def value() -> str:
                return str(getattr({module}, "VALUE", "?"))
        """
    }


def test_environment_provides_modules_by_name_alias_url_and_torch() -> None:
    assert provides_module(EnvContents(("flash-tiny>=1",)), "flash_tiny.sub")
    assert provides_module(EnvContents(("pillow",)), "PIL.Image")
    assert provides_module(EnvContents(("opencv-python-headless==4.9",)), "cv2")
    assert provides_module(EnvContents(("torch==2.1.0+cpu",), torch=True), "torch")
    assert provides_module(EnvContents(("./vendor/pkg",)), "anything")  # unknown until built
    assert not provides_module(EnvContents(("flashtiny",)), "numpyy")
    assert not provides_module(EnvContents(("pillow",)), "cv2")


def test_module_level_dependency_import_builds_deploys_and_answers(
    tmp_path: Path,
    localcloud_home: Path,
    index_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = write_files(tmp_path / "modlevel", _worker("modtiny", "flashtiny", ["flashtiny"]))
    cache = EnvCache(tmp_path / "cache", environ=index_env)
    home = Home(localcloud_home)
    report, events = deploy(project, home, cache)
    assert report.ok, report.to_dict()
    answer = invoke(project, home, "modtiny:value")
    assert answer.ok and answer.result == "tiny-1.0", answer.error
    # Now that its environment is in the cache, the build checks the handler on it.
    monkeypatch.setenv("FLASH_TUI_ENV_CACHE", str(cache.root))
    where = handler_interpreters(project, report_manifest(project))
    [(handler, interpreter)] = where.items()
    assert interpreter.pending is None
    assert interpreter.python and Path(interpreter.python).parent.parent.parent == cache.root
    (project / "w.py").write_text((project / "w.py").read_text() + "\n# edited\n")
    assert build_project(project).handlers == [handler]


def report_manifest(project: Path) -> dict[str, Any]:
    """The manifest of the project's scan (what the build checks handlers of)."""
    from engine.scan import scan_project

    return dict(scan_project(project).manifest)


def test_module_nothing_provides_fails_the_build_naming_file_and_module(
    tmp_path: Path, index_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASH_TUI_ENV_CACHE", str(tmp_path / "cache"))
    project = write_files(
        tmp_path / "nothing", _worker("nothing", "flash_nothing_here", ["flashtiny"])
    )
    with pytest.raises(BuildError) as failure:
        build_project(project)
    said = str(failure.value) + " ".join(d.message for d in failure.value.diagnostics)
    assert "flash_nothing_here" in said and "w.py" in said, said
    first = failure.value.diagnostics[0]  # said first: the project's file, line and module
    assert (first.file, first.line) == ("w.py", 2), first
    assert "'flash_nothing_here'" in first.message and "dependencies" in first.message
    # and with no environment at all, on our own interpreter, the same
    plain = write_files(tmp_path / "plain", _worker("plain", "flash_nothing_here", []))
    with pytest.raises(BuildError, match="handler"):
        build_project(plain)


def test_deferred_check_fails_on_the_new_environment_and_marks_that_endpoint_failed(
    tmp_path: Path, localcloud_home: Path, index_env: dict[str, str]
) -> None:
    files = _worker("misnamed", "flashmisnamed", ["flashmisnamed"])
    files["ok.py"] = env_worker("fine", "flashother", "fine")
    project = write_files(tmp_path / "deferred", files)
    home = Home(localcloud_home)
    report, events = deploy(project, home, EnvCache(tmp_path / "cache", environ=index_env))
    [failed] = report.outcome.failed()
    assert failed.name == "misnamed"
    assert "No module named 'flashmisnamed'" in (failed.error or ""), failed.error
    assert invoke(project, home, "fine:fine").result == "other"
    assert any(e.name == "misnamed" and "does not import" in e.message for e in events)


def _two_environments(tmp_path: Path) -> Path:
    files = _worker("one", "flashtiny", ["flashtiny"])
    files["two.py"] = """
        from tetra_rp import CpuLiveServerless, remote

        cfg = CpuLiveServerless(name="two")


        @remote(resource_config=cfg, dependencies=["flashother", "flashtiny"])
        def two() -> str:
            import flashother

            return flashother.VALUE
    """
    return write_files(tmp_path, files)


def test_cli_shows_one_line_per_environment_and_no_uv_output(
    tmp_path: Path, localcloud_home: Path, index_env: dict[str, str]
) -> None:
    from headless import run_cli

    project = _two_environments(tmp_path / "cli")
    env = {
        **index_env,
        "FLASH_TUI_HOME": str(localcloud_home),
        "FLASH_TUI_ENV_CACHE": str(tmp_path / "cache"),
        "COLUMNS": "200",
    }
    proc = run_cli(["deploy", "--yes"], env, project=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = proc.stderr
    lines = [line for line in said.splitlines() if "environment " in line and "ready" in line]
    assert len(lines) == 2, said
    assert any("one" in line and "ready (1 package," in line for line in lines), said
    assert any("two" in line and "ready (2 packages," in line for line in lines), said
    # uv's own lines stay out of a successful deploy's progress
    for noise in ("+ flashtiny", "Resolved", "Installed", "Prepared", "installing"):
        assert noise not in said, said


def test_distinct_environments_of_one_deploy_build_side_by_side(
    tmp_path: Path, index_env: dict[str, str]
) -> None:
    from engine.env_step import env_step
    from engine.provider import EndpointSpec
    from engine.scan import scan_project

    real_uv = EnvCache(tmp_path)._uv_binary()
    # A thin shim over the real uv: each install announces itself, then waits (with a
    # deadline) until the other install has started too. Built one after the other, the first
    # would give up waiting and see only itself.
    marks = tmp_path / "marks"
    marks.mkdir()
    shim = tmp_path / "uv"
    shim.write_text(
        "#!/bin/sh\n"
        'if [ "$1 $2" = "pip install" ]; then\n'
        f'  touch "{marks}/started.$$"\n'
        "  i=0\n"
        f'  while [ "$(ls {marks} | grep -c started)" -lt 2 ] && [ $i -lt 300 ]; do\n'
        "    sleep 0.1; i=$((i+1))\n"
        "  done\n"
        f'  ls {marks} | grep -c started > "{marks}/seen.$$"\n'
        "fi\n"
        f'exec "{real_uv}" "$@"\n'
    )
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    project = _two_environments(tmp_path / "side")
    manifest = dict(scan_project(project).manifest)
    specs = [EndpointSpec(name=n) for n in ("one", "two")]
    cache = EnvCache(tmp_path / "cache", uv=str(shim), environ=index_env)
    result = asyncio.run(
        env_step(project, manifest, specs, lambda *a, **k: None, cache=cache, environ=index_env)
    )
    assert all(s.python and s.setup_error is None for s in result.specs), result.specs
    seen = sorted(p.read_text().strip() for p in marks.glob("seen.*"))
    assert seen == ["2", "2"], seen
