"""The build's incremental import check: real builds, handlers imported in real subprocesses."""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import pytest
from projectfiles import write_files

from engine.build import BuildError, build_project
from engine.build.checks import RECORD_NAME

TWO_WORKERS = {
    "alpha.py": """
        from tetra_rp import CpuLiveServerless, remote

        from shared import alpha_helper

        cfg = CpuLiveServerless(name="alpha")


        @remote(cfg)
        async def a(x: int = 1) -> dict:
            return {"a": alpha_helper(x)}
        """,
    "beta.py": """
        from tetra_rp import CpuLiveServerless, remote

        cfg = CpuLiveServerless(name="beta")


        @remote(cfg)
        async def b(x: int = 1) -> dict:
            return {"b": x}
        """,
    "shared/__init__.py": "from shared.helpers import alpha_helper\n",
    "shared/helpers.py": "def alpha_helper(x):\n    return x + 1\n",
}


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return write_files(tmp_path / "two", TWO_WORKERS)


def test_unchanged_handlers_are_not_checked_again(project: Path) -> None:
    first = build_project(project)
    assert first.handlers_checked == ["handler_alpha.py", "handler_beta.py"]
    second = build_project(project)
    assert second.handlers_checked == []
    record = project / ".flash" / RECORD_NAME
    saved = json.loads(record.read_text())
    # what alpha's import loaded from the project is recorded; beta never loaded shared/
    assert "shared/helpers.py" in saved["handlers"]["handler_alpha.py"]["files"]
    assert "shared/helpers.py" not in saved["handlers"]["handler_beta.py"]["files"]
    # the record stays out of the build and its archive
    with tarfile.open(second.archive) as tar:
        assert not any(RECORD_NAME in name for name in tar.getnames())


def test_changing_an_imported_file_rechecks_exactly_its_handler(project: Path) -> None:
    build_project(project)
    (project / "shared" / "helpers.py").write_text("def alpha_helper(x):\n    return x + 2\n")
    assert build_project(project).handlers_checked == ["handler_alpha.py"]
    (project / "beta.py").write_text((project / "beta.py").read_text() + "\nVALUE = 2\n")
    assert build_project(project).handlers_checked == ["handler_beta.py"]


def test_a_new_broken_import_is_still_caught(project: Path) -> None:
    build_project(project)
    (project / "shared" / "helpers.py").write_text(
        "import nonexistent_module_for_flash_checks\n\ndef alpha_helper(x):\n    return x\n"
    )
    with pytest.raises(BuildError) as caught:
        build_project(project)
    assert "handler_alpha.py" in str(caught.value)
    assert "nonexistent_module_for_flash_checks" in caught.value.diagnostics[0].message
    # a failed check leaves no record: the next build checks it again, and still refuses
    with pytest.raises(BuildError):
        build_project(project)
    (project / "shared" / "helpers.py").write_text("def alpha_helper(x):\n    return x\n")
    assert build_project(project).handlers_checked == ["handler_alpha.py"]


def test_a_new_file_in_the_build_rechecks_everything(project: Path) -> None:
    # A new module may satisfy an import that failed over to a fallback, or shadow another.
    build_project(project)
    (project / "extra.py").write_text("X = 1\n")
    assert build_project(project).handlers_checked == ["handler_alpha.py", "handler_beta.py"]


def test_a_damaged_record_means_checking_everything(project: Path) -> None:
    build_project(project)
    (project / ".flash" / RECORD_NAME).write_text("{not json")
    assert build_project(project).handlers_checked == ["handler_alpha.py", "handler_beta.py"]
    assert build_project(project).handlers_checked == []


def test_another_interpreter_rechecks_everything(project: Path, tmp_path: Path) -> None:
    build_project(project)
    other = tmp_path / "python-link"
    other.symlink_to(sys.executable)
    assert build_project(project, python=str(other)).handlers_checked == [
        "handler_alpha.py",
        "handler_beta.py",
    ]
