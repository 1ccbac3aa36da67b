"""`flash-tui build`: JSON output, human output, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _copy(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(ROOT / "examples" / name, dest, ignore=shutil.ignore_patterns(".flash"))
    return dest


def test_build_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = _copy("endpoint_api", tmp_path)
    assert main(["build", str(project), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True
    assert out["resources"] == ["api", "summarizer", "tokenizer"]
    assert out["handlers"] == ["handler_api.py", "handler_summarizer.py", "handler_tokenizer.py"]
    assert Path(out["archive"]) == project / ".flash" / "archive.tar.gz"
    assert len(out["build_id"]) == 64 and out["duration_ms"] > 0
    assert set(out["counts"]) == {"copied", "unchanged", "removed"}


def test_build_refuses_broken_example_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = _copy("broken", tmp_path)
    assert main(["build", str(project), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["step"] == "scan"
    codes = {d["code"] for d in out["diagnostics"] if d["severity"] == "error"}
    assert {"manifest-duplicate-route", "manifest-reserved-path"} <= codes
    assert not (project / ".flash" / "archive.tar.gz").exists()


def test_console_script_human_output(tmp_path: Path) -> None:
    project = _copy("broken", tmp_path)
    exe = Path(sys.executable).with_name("flash-tui")
    result = subprocess.run(
        [str(exe), "build", str(project)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "Build failed" in result.stderr and "reserved path /ping" in result.stderr
