"""Shared pytest fixtures (each stream appends its own, with unique names)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# --- localcloud stream ------------------------------------------------------------------------
# Every flash-tui home a test module used; the session fixture stops their local clouds and kills
# any worker left over, whatever happened in the tests.
_LOCALCLOUD_HOMES: list[Path] = []


def _localcloud_cleanup(root: Path) -> None:
    from engine.home import Home
    from engine.localcloud.discovery import kill_home_workers, stop_cloud

    home = Home(root)
    with contextlib.suppress(Exception):
        stop_cloud(home, timeout=10.0)
    with contextlib.suppress(Exception):
        kill_home_workers(home)


@pytest.fixture(scope="session", autouse=True)
def localcloud_session_cleanup() -> Iterator[None]:
    """At the end of the session: no local cloud and no worker of a test home survives."""
    yield
    for root in _LOCALCLOUD_HOMES:
        _localcloud_cleanup(root)


@pytest.fixture(scope="module")
def localcloud_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh FLASH_TUI_HOME for one test module (set in os.environ while the module runs);
    its cloud and workers are stopped afterwards."""
    root = tmp_path_factory.mktemp("flash-home")
    _LOCALCLOUD_HOMES.append(root)
    previous = os.environ.get("FLASH_TUI_HOME")
    os.environ["FLASH_TUI_HOME"] = str(root)
    try:
        yield root
    finally:
        _localcloud_cleanup(root)
        if previous is None:
            os.environ.pop("FLASH_TUI_HOME", None)
        else:
            os.environ["FLASH_TUI_HOME"] = previous
