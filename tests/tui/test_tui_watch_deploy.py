"""`w` in the TUI: watch-deploy on (header says so, a save deploys what changed, on a real local
cloud) and off again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from projectfiles import write_files
from waiting import until

from flash_tui.app import FlashApp
from flash_tui.widgets.dashboard.header_line import HeaderLine

WORKER = """
from runpod_flash import Endpoint


@Endpoint(name="echoer", cpu="cpu3c-1-2")
async def echo(text: str) -> dict:
    return {"echo": text, "version": VERSION}
"""


@pytest.fixture
def home(cloud_home: Path) -> Path:
    return cloud_home


def _lines(app: FlashApp) -> list[str]:
    return [r.text for r in app.logs]


async def test_w_toggles_watch_deploy_and_a_save_deploys(tmp_path: Path, home: Path) -> None:
    project = write_files(tmp_path / "proj", {"worker.py": "VERSION = 1\n" + WORKER})
    app = FlashApp(project, "local", connect=False, watch=False)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.scanned, 10, "first scan")
        await pilot.press("w")
        header = app.screen.query_one(HeaderLine)
        assert app.state.watching and "watch-deploy" in header.summary

        version = iter(range(2, 1000))

        def saved_and_deployed() -> bool:
            # The watcher may still be registering: each check saves again until one lands.
            if any(t.startswith("reloaded echoer in ") for t in _lines(app)):
                return True
            (project / "worker.py").write_text(f"VERSION = {next(version)}\n" + WORKER)
            return False

        await until(pilot, saved_and_deployed, 90, "a save deployed echoer", interval=0.5)
        # A save written before that reload landed may redeploy once more (its worker briefly
        # down): the endpoint answers once that settles, within a deadline.
        deadline = time.monotonic() + 60
        while True:
            result = await app.backend.engine.invoke("echo", {"text": "hi"})
            if result.ok or time.monotonic() > deadline:
                break
            await pilot.pause(0.5)
        assert result.ok and result.result["echo"] == "hi", result.error

        await pilot.press("w")
        assert not app.state.watching and "watch-deploy" not in header.summary
        assert "watch-deploy off" in _lines(app)
