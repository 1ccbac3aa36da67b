"""Fixtures the TUI tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from projectfiles import copy_example


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A copy of examples/quickstart for one test."""
    return copy_example("quickstart", tmp_path / "quickstart")


@pytest.fixture(scope="module")
def shared_quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/quickstart shared by one module's tests (which only read it)."""
    return copy_example("quickstart", tmp_path_factory.mktemp("shared") / "quickstart")


@pytest.fixture
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary flash-tui home (never the user's); a local cloud started in it is stopped."""
    home = tmp_path / "home"
    monkeypatch.setenv("FLASH_TUI_HOME", str(home))
    yield home
    if (home / "localcloud").exists():
        from engine.home import Home
        from engine.localcloud.discovery import stop_cloud

        stop_cloud(Home(home))
