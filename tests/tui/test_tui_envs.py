"""The TUI's deploy with endpoint environments: the `envs` step's progress in the log, an
install failure on that endpoint's row only (real local cloud, real uv, wheels built here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from projectfiles import write_files
from waiting import until
from wheels import make_wheel

from flash_tui.app import FlashApp
from flash_tui.screens.confirm import PlanScreen

PROJECT = {
    "workers.py": """
        from tetra_rp import CpuLiveServerless, remote

        tiny_config = CpuLiveServerless(name="uses_tiny")
        broken_config = CpuLiveServerless(name="broken")


        @remote(resource_config=tiny_config, dependencies=["flashtiny"])
        def tiny() -> str:
            import flashtiny

            return flashtiny.VALUE


        @remote(resource_config=broken_config, dependencies=["flashmissing==1.0"])
        def broken() -> str:
            return "never"
    """,
}


@pytest.fixture
def envs_home(tmp_path: Path, cloud_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private home, an empty environment cache and a local wheel directory (no index)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "flashtiny", "1.0", {"flashtiny/__init__.py": "VALUE = 'tiny-1.0'\n"})
    monkeypatch.setenv("FLASH_TUI_ENV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return cloud_home


async def test_deploy_shows_environment_progress_and_fails_only_that_endpoint(
    tmp_path: Path, envs_home: Path
) -> None:
    project = write_files(tmp_path / "proj", PROJECT)
    app = FlashApp(project, "local")
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1 and app.connected, 60, "scan and cloud")
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, PlanScreen), 60, "the plan dialog")
        await pilot.pause()
        await pilot.press("enter")

        def settled() -> bool:
            statuses = {n: s.status for n, s in app.state.statuses.items()}
            return (
                app.state.busy is None
                and statuses.get("uses_tiny") == "healthy"
                and (statuses.get("broken") == "failed")
            )

        await until(pilot, settled, 60, "uses_tiny healthy, broken failed")
        texts = [record.text for record in app.logs]
        assert any("uses_tiny: environment" in t and "ready" in t for t in texts), texts
        assert any("installing flashtiny for uses_tiny" in t for t in texts), texts
        assert any("broken" in t and "flashmissing" in t for t in texts), texts
