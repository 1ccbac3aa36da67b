"""`flash-tui` entry point: mistyped commands and a missing terminal fail fast with exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from flash_tui import main as entry

FLASH_TUI = Path(sys.executable).with_name("flash-tui")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the console script with stdout piped (not a terminal) and no textual serve driver."""
    env = {k: v for k, v in os.environ.items() if k != "TEXTUAL_DRIVER"}
    # The timeout turns a TUI that opens by mistake into a test failure, not a hang.
    return subprocess.run(
        [str(FLASH_TUI), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    result = _run(["events"], tmp_path)
    assert result.returncode == 2
    assert "'events' is neither a command nor an existing project path" in result.stderr
    assert "'status'" in result.stderr and "'deploy'" in result.stderr
    assert result.stdout == ""


def test_tui_refuses_without_a_terminal(tmp_path: Path) -> None:
    result = _run([str(tmp_path)], tmp_path)
    assert result.returncode == 2
    assert "needs a terminal" in result.stderr and "textual serve" in result.stderr


def test_known_command_still_runs(tmp_path: Path) -> None:
    result = _run(["--help"], tmp_path)
    assert result.returncode == 0
    assert "status" in result.stdout


def test_textual_serve_driver_opens_the_tui(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `textual serve` pipes stdout but sets TEXTUAL_DRIVER: the TUI must still open.
    import flash_tui.app

    opened: list[list[str]] = []

    def fake_run(argv: Sequence[str]) -> int:
        opened.append(list(argv))
        return 0

    monkeypatch.setattr(flash_tui.app, "run", fake_run)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    monkeypatch.setenv("TEXTUAL_DRIVER", "textual.drivers.web_driver:WebDriver")
    with pytest.raises(SystemExit) as exit_info:
        entry.main([str(tmp_path)])
    assert exit_info.value.code == 0
    assert opened == [[str(tmp_path)]]


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = _run(["--version"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"flash-tui {version('flash-tui')}"


@pytest.mark.parametrize("args", [["--help"], ["-h"], [".", "--help"]])
def test_help_shows_the_tui_form_and_the_subcommands(tmp_path: Path, args: list[str]) -> None:
    result = _run(args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "flash-tui [PATH] [--target local|runpod] [--env NAME]" in result.stdout
    assert "--env NAME" in result.stdout and "deploy" in result.stdout
    assert "needs a terminal" not in result.stderr
