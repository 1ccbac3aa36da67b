"""engine.build end to end: real scans, real copies, handlers imported in real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from projectfiles import UPSTREAM_GPU_WORKER, copy_example, write_files

from engine.build import (
    ARCHIVE_NAME,
    BUILD_DIR,
    MANIFEST_NAME,
    STEPS,
    BuildError,
    BuildProgress,
    build_project,
    collect_requirements,
    generated_at,
)


def _members(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


SIMPLE = {
    "main.py": """
        from tetra_rp import CpuLiveServerless, remote

        cfg = CpuLiveServerless(name="worker")


        @remote(cfg)
        async def hello(name: str = "x") -> dict:
            return {"hello": name}
        """,
    "lib/util.py": "VALUE = 1\n",
}


@pytest.fixture()
def simple_project(tmp_path: Path) -> Path:
    return write_files(tmp_path / "simple", SIMPLE)


def test_quickstart_builds_and_its_handlers_import(tmp_path: Path) -> None:
    project = copy_example("quickstart", tmp_path / "quickstart")
    events: list[BuildProgress] = []
    result = build_project(project, on_progress=events.append)
    assert result.resources == ["api", "cpu_worker", "gateway", "gpu_worker"]
    assert result.handlers == [
        "handler_api.py",
        "handler_cpu_worker.py",
        "handler_gateway.py",
        "handler_gpu_worker.py",
    ]
    members = _members(result.archive)
    assert result.archive == project / ".flash" / ARCHIVE_NAME
    for name in [*result.handlers, MANIFEST_NAME, "main.py", "workers/cpu/endpoint.py"]:
        assert name in members
    # .flashignore'd files stay out
    assert "README.md" not in members and ".env.example" not in members
    manifest = json.loads((result.build_dir / MANIFEST_NAME).read_text())
    assert manifest["generated_at"] == generated_at() == "1980-01-01T00:00:00Z"
    assert manifest["resources"]["gateway"]["resource_type"] == "CpuLoadBalancerSlsResource"
    gateway = (result.build_dir / "handler_gateway.py").read_text()
    assert "include_execute=False" in gateway
    assert "include_execute=True" in (result.build_dir / "handler_api.py").read_text()
    # progress: every step reported, in order, ending complete
    order = [e.step for e in events]
    assert [s for s in STEPS if s in order] == sorted(set(order), key=order.index)
    assert events[-1] == BuildProgress("archive", 1, 1, events[-1].message)
    assert result.to_json()["counts"]["copied"] == result.files_copied > 0


def test_endpoint_api_example_builds(tmp_path: Path) -> None:
    project = copy_example("endpoint_api", tmp_path / "endpoint_api")
    result = build_project(project)
    assert result.resources == ["api", "summarizer", "tokenizer"]
    registry = (result.build_dir / "handler_tokenizer.py").read_text()
    assert 'importlib.import_module("workers.text").Tokenizer' in registry


def test_same_sources_give_identical_archives(tmp_path: Path) -> None:
    first = copy_example("quickstart", tmp_path / "one" / "quickstart")
    second = copy_example("quickstart", tmp_path / "two" / "quickstart")
    for path in second.rglob("*"):
        os.utime(path, (1_600_000_000, 1_600_000_000))  # another checkout, other mtimes
    # the import check is covered elsewhere; skipping it keeps this test fast
    a = build_project(first, import_check=False)
    a_bytes = a.archive.read_bytes()
    again = build_project(first, import_check=False)
    b = build_project(second, import_check=False)
    assert a.build_id == again.build_id == b.build_id
    assert again.archive.read_bytes() == a_bytes == b.archive.read_bytes()


def test_secrets_vcs_venvs_and_escaping_symlinks_are_excluded(
    tmp_path: Path, simple_project: Path
) -> None:
    root = simple_project
    write_files(
        root,
        {
            ".env": "RUNPOD_API_KEY=secret\n",
            ".env.local": "X=1\n",
            ".env.example": "RUNPOD_API_KEY=\n",
            ".git/config": "[core]\n",
            ".venv/lib/site.py": "x = 1\n",
            "myenv/pyvenv.cfg": "home = /usr\n",
            "myenv/lib/thing.py": "x = 1\n",
            "node_modules/a.js": "",
            ".runpod/resources.pkl": "",
            "lib/__pycache__/util.cpython-311.pyc": "",
            "target.txt": "inside\n",
        },
    )
    outside = tmp_path / "outside"
    write_files(outside, {"secret.txt": "outside\n", "pkg/mod.py": "x = 1\n"})
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "escape_dir").symlink_to(outside / "pkg", target_is_directory=True)
    (root / "inside_link.txt").symlink_to(root / "target.txt")
    (root / "dangling.txt").symlink_to(root / "missing.txt")
    (root / "loop").symlink_to(root, target_is_directory=True)

    result = build_project(root)
    members = set(_members(result.archive))
    assert {"main.py", "lib/util.py", "target.txt", "inside_link.txt", ".env.example"} <= members
    for banned in (
        ".env",
        ".env.local",
        ".git/config",
        ".venv/lib/site.py",
        "myenv/pyvenv.cfg",
        "myenv/lib/thing.py",
        "node_modules/a.js",
        ".runpod/resources.pkl",
        "escape.txt",
        "escape_dir/mod.py",
        "dangling.txt",
    ):
        assert banned not in members, banned
    assert not any(m.startswith((".flash", "loop/")) or "__pycache__" in m for m in members)
    copied_link = result.build_dir / "inside_link.txt"
    assert not copied_link.is_symlink() and copied_link.read_text() == "inside\n"
    codes = {(w.code, w.file) for w in result.warnings}
    assert ("build-symlink-escape", "escape.txt") in codes
    assert ("build-symlink-escape", "escape_dir") in codes
    assert ("build-symlink-broken", "dangling.txt") in codes


def test_incremental_copy(simple_project: Path) -> None:
    root = simple_project
    first = build_project(root, import_check=False)
    assert first.files_copied == 2 and first.files_unchanged == 0
    second = build_project(root, import_check=False)
    assert (second.files_copied, second.files_unchanged, second.files_removed) == (0, 2, 0)
    assert second.build_id == first.build_id

    (root / "lib" / "util.py").write_text("VALUE = 2\n")
    third = build_project(root, import_check=False)
    assert (third.files_copied, third.files_unchanged) == (1, 1)
    assert (third.build_dir / "lib" / "util.py").read_text() == "VALUE = 2\n"
    assert third.build_id != first.build_id

    # touched but identical: not copied again
    os.utime(root / "main.py", (1_000_000_000, 1_000_000_000))
    assert build_project(root, import_check=False).files_copied == 0

    (root / "lib" / "util.py").unlink()
    fourth = build_project(root, import_check=False)
    assert fourth.files_removed == 1
    assert not (fourth.build_dir / "lib").exists()
    assert "lib/util.py" not in _members(fourth.archive)
    # generated files survive pruning
    assert {MANIFEST_NAME, "handler_worker.py"} <= {p.name for p in fourth.build_dir.iterdir()}


def test_stray_files_in_build_dir_are_removed(simple_project: Path) -> None:
    build_project(simple_project)
    stray = simple_project / BUILD_DIR / "old" / "gone.py"
    stray.parent.mkdir()
    stray.write_text("")
    result = build_project(simple_project)
    assert result.files_removed == 1 and not stray.parent.exists()


def test_handler_import_failure_names_the_handler(simple_project: Path) -> None:
    # AST scanning cannot see this; only importing the handler does.
    (simple_project / "main.py").write_text(
        (simple_project / "main.py").read_text() + "\nraise RuntimeError('broken at import')\n"
    )
    with pytest.raises(BuildError) as info:
        build_project(simple_project)
    error = info.value
    assert error.step == "check"
    assert "handler_worker.py" in str(error)
    (diagnostic,) = error.diagnostics
    assert diagnostic.file == "handler_worker.py"
    assert "RuntimeError: broken at import" in diagnostic.message


def test_upstream_style_project_builds(tmp_path: Path) -> None:
    root = tmp_path / "upstream_app"
    write_files(
        root,
        {
            **UPSTREAM_GPU_WORKER,
            "03_advanced_workers/__init__.py": "",
            "03_advanced_workers/configs.py": """
                from tetra_rp.core.resources import CpuInstanceType, CpuLiveServerless

                shared_cpu = CpuLiveServerless(
                    name="advanced_cpu", instanceIds=[CpuInstanceType.CPU3G_2_8]
                )
                """,
            "03_advanced_workers/endpoint.py": """
                import tetra_rp as tr

                from .configs import shared_cpu


                @tr.remote(shared_cpu)
                class Counter:
                    def __init__(self, start: int = 0) -> None:
                        self.value = start

                    def add(self, n: int) -> int:
                        self.value += n
                        return self.value
                """,
            "04_lb/__init__.py": "",
            "04_lb/routes.py": """
                from tetra_rp import LiveLoadBalancer, remote

                lb = LiveLoadBalancer(name="lb_api")


                @remote(lb, method="POST", path="/sum")
                def add(a: int, b: int) -> int:
                    return a + b
                """,
            "requirements.txt": "tetra_rp\n",
        },
    )
    result = build_project(root)
    assert result.resources == ["advanced_cpu", "gpu_worker", "lb_api"]
    text = (result.build_dir / "handler_advanced_cpu.py").read_text()
    assert 'importlib.import_module("03_advanced_workers.endpoint").Counter' in text
    assert '("POST", "/sum")' in (result.build_dir / "handler_lb_api.py").read_text()


def test_error_diagnostics_refuse_the_build(tmp_path: Path) -> None:
    project = copy_example("broken", tmp_path / "broken")
    with pytest.raises(BuildError) as info:
        build_project(project)
    assert info.value.step == "scan"
    assert any(d.severity == "error" for d in info.value.diagnostics)
    assert not (project / ".flash" / ARCHIVE_NAME).exists()


def test_requirements_collection(simple_project: Path) -> None:
    (simple_project / "requirements.txt").write_text("# c\nnumpy>=1.0  # pinned\n\nrich\n")
    manifest = {
        "resources": {
            "b": {"functions": [{"name": "f", "dependencies": ["rich", "torch"]}]},
            "a": {"functions": [{"name": "g", "dependencies": ["pillow"]}]},
        }
    }
    expected = ["numpy>=1.0", "rich", "pillow", "torch"]
    assert collect_requirements(simple_project, manifest) == expected


def test_deps_failure_is_a_build_error(
    simple_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (simple_project / "requirements.txt").write_text("flash-tui-no-such-package-xyz==9.9.9\n")
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no network on this machine: fail fast, offline
    with pytest.raises(BuildError) as info:
        build_project(simple_project, deps=True, deps_timeout=120)
    assert info.value.step == "deps"
    assert "flash-tui-no-such-package-xyz" in info.value.diagnostics[0].message


def _wheel(directory: Path) -> None:
    """A minimal pure-Python wheel `flashdemo 1.0`, so --deps can be tested offline."""
    import base64
    import hashlib
    import zipfile

    files = {
        "flashdemo/__init__.py": "VALUE = 42\n",
        "flashdemo-1.0.dist-info/METADATA": (
            "Metadata-Version: 2.1\nName: flashdemo\nVersion: 1.0\n"
        ),
        "flashdemo-1.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append("flashdemo-1.0.dist-info/RECORD,,")
    files["flashdemo-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(directory / "flashdemo-1.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)


def test_deps_are_installed_into_the_build(
    tmp_path: Path, simple_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _wheel(tmp_path / "wheels")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    (simple_project / "requirements.txt").write_text("flashdemo==1.0\n")
    # user code imports the dependency: the import check only passes if it was installed
    (simple_project / "lib" / "__init__.py").write_text("import flashdemo  # noqa: F401\n")
    main = simple_project / "main.py"
    main.write_text("import lib\n" + main.read_text())
    first = build_project(simple_project, deps=True)
    members = _members(first.archive)
    assert "flashdemo/__init__.py" in members and "requirements.txt" in members
    assert not any("__pycache__" in m for m in members)
    second = build_project(simple_project, deps=True)  # from the cache, nothing copied
    assert second.files_copied == 0 and second.build_id == first.build_id
    third = build_project(simple_project, deps=False, import_check=False)
    assert "flashdemo/__init__.py" not in _members(third.archive)


def test_deps_with_nothing_to_install_is_a_no_op(simple_project: Path) -> None:
    result = build_project(simple_project, deps=True)
    assert result.files_copied == 2
    assert not (simple_project / ".flash" / ".deps").exists()


def test_project_without_functions_is_refused_and_nothing_written(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    write_files(root, {"main.py": "print('no flash here')\n"})
    with pytest.raises(BuildError, match="no Flash code") as raised:
        build_project(root)
    assert raised.value.step == "scan"
    assert sorted(p.name for p in root.iterdir()) == ["main.py"]


def test_project_file_named_like_a_generated_file_is_replaced(simple_project: Path) -> None:
    (simple_project / "handler_worker.py").write_text("raise SystemExit('stale handler')\n")
    (simple_project / MANIFEST_NAME).write_text("{}\n")
    result = build_project(simple_project)
    assert {w.file for w in result.warnings if w.code == "build-shadow"} == {
        "handler_worker.py",
        MANIFEST_NAME,
    }
    assert "create_handler" in (result.build_dir / "handler_worker.py").read_text()
    assert json.loads((result.build_dir / MANIFEST_NAME).read_text())["resources"]


def test_concurrent_builds_of_one_project_are_serialised(simple_project: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(
            pool.map(lambda _: build_project(simple_project, import_check=False), range(3))
        )
    assert len({r.build_id for r in results}) == 1
    assert sorted(r.files_copied for r in results) == [0, 0, 2]


def test_file_and_directory_swaps_between_builds(simple_project: Path) -> None:
    build_project(simple_project, import_check=False)
    util = simple_project / "lib" / "util.py"
    util.unlink()
    util.mkdir()  # lib/util.py is now a directory with a module in it
    (util / "inner.py").write_text("Y = 1\n")
    result = build_project(simple_project, import_check=False)
    assert (result.build_dir / "lib" / "util.py" / "inner.py").read_text() == "Y = 1\n"
    shutil.rmtree(util)
    util.write_text("VALUE = 3\n")  # and back to a file
    result = build_project(simple_project, import_check=False)
    assert (result.build_dir / "lib" / "util.py").read_text() == "VALUE = 3\n"


def test_top_level_runtime_package_is_refused(simple_project: Path) -> None:
    write_files(simple_project, {"runtime/__init__.py": "", "runtime/helpers.py": "X = 1\n"})
    with pytest.raises(BuildError) as info:
        build_project(simple_project)
    assert info.value.step == "copy"
    assert info.value.diagnostics[0].code == "build-runtime-shadow"


def test_the_build_packs_its_archive_at_the_fast_gzip_level(simple_project: Path) -> None:
    # Every build (each dev save) writes the archive; gzip's header says how it was packed
    # (XFL 4: the fastest level).
    result = build_project(simple_project)
    assert result.archive.read_bytes()[8] == 4
