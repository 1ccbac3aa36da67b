"""Regenerate the README screenshots from a real run: `python -m flash_tui.screenshots`.

Copies examples/quickstart to a temporary directory, points FLASH_TUI_HOME at a temporary home
(so the user's own local cloud is never touched), then drives the app with Pilot: deploy plan ->
deploy -> dashboard -> route tester with a response -> logs -> undeploy confirmation -> undeploy
all; then the diagnostics of examples/broken. Finally it stops the temporary local cloud.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from textual.pilot import Pilot

from engine.status import Status

if TYPE_CHECKING:
    from flash_tui.app import FlashApp

ROOT = Path(__file__).resolve().parent.parent
SIZE = (120, 34)


async def _until(pilot: Pilot, condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def _quickstart(project: Path, out: Path) -> None:
    from textual.widgets import OptionList, TextArea

    from flash_tui.app import FlashApp
    from flash_tui.screens.confirm import PlanScreen, UndeployAllScreen, UndeployScreen
    from flash_tui.screens.route_tester import RouteTesterScreen
    from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable

    app = FlashApp(project, "local", watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await _until(pilot, lambda: app.scan_count >= 1 and app.connected, 60, "scan and cloud")
        names = sorted(app.state.manifest.get("resources") or {})
        await pilot.press("D")
        await _until(pilot, lambda: isinstance(app.screen, PlanScreen), 30, "the plan")
        await pilot.pause(0.3)
        app.save_screenshot("deploy-plan.svg", str(out))
        await pilot.pause()
        await pilot.press("enter")  # Deploy has the focus: nothing is deleted

        def all_healthy() -> bool:
            return all(_status(app, n) == Status.HEALTHY for n in names)

        await _until(
            pilot, lambda: app.state.busy is None and all_healthy(), 120, "healthy endpoints"
        )
        await pilot.press("h")
        await _until(
            pilot, lambda: all(len(app.state.samples.get(n, ())) >= 3 for n in names), 30, "health"
        )
        await pilot.press("tab")
        await pilot.pause(0.5)
        app.save_screenshot("dashboard.svg", str(out))

        await pilot.press("t")
        await _until(pilot, lambda: isinstance(app.screen, RouteTesterScreen), 10, "route tester")
        tester = app.screen
        assert isinstance(tester, RouteTesterScreen)
        titles = [t.title for t in tester._targets]
        route = "POST /compute" if "POST /compute" in titles else titles[0]
        tester.query_one("#targets", OptionList).highlighted = titles.index(route)
        await pilot.pause(0.2)
        if route == "POST /compute":
            # A real request, as a person would type it (the prefill has an empty list).
            body = {"numbers": [1, 2, 3], "scale": 2}
            tester.query_one("#body", TextArea).text = json.dumps(body, indent=2)
        await pilot.press("ctrl+s")
        await _until(pilot, lambda: len(tester.history) >= 1, 30, "a response")
        await pilot.pause(0.3)
        app.save_screenshot("route-tester.svg", str(out))
        await pilot.press("escape")

        await pilot.press("l")
        await pilot.pause(1.0)
        app.save_screenshot("logs.svg", str(out))
        await pilot.press("escape")

        table = app.dashboard.query_one(EndpointsTable)
        table.focus()
        table.select_name(names[0])
        await pilot.press("u")
        await _until(pilot, lambda: isinstance(app.screen, UndeployScreen), 10, "undeploy dialog")
        await pilot.pause(0.3)
        app.save_screenshot("undeploy-confirm.svg", str(out))
        await pilot.press("escape")

        await pilot.press("U")
        await _until(pilot, lambda: isinstance(app.screen, UndeployAllScreen), 10, "undeploy all")
        await pilot.press(*project.name, "enter")
        await _until(
            pilot, lambda: app.state.busy is None and not app.deployed_names(), 60, "undeploy"
        )


def _status(app: FlashApp, name: str) -> str | None:
    status = app.state.statuses.get(name)
    return status.status if status is not None else None


async def _broken(project: Path, out: Path) -> None:
    from flash_tui.app import FlashApp
    from flash_tui.widgets.dashboard.manifest_tree import ManifestTree

    app = FlashApp(project, "local", watch=False, connect=False)
    async with app.run_test(size=SIZE) as pilot:
        await _until(pilot, lambda: app.scan_count >= 1, 30, "scan")
        tree = app.dashboard.query_one(ManifestTree)
        for child in tree.root.children:  # endpoints folded: the diagnostics are the subject
            if child.data is not None and child.data.kind == "endpoint":
                child.collapse()
        await pilot.pause(0.2)
        node = tree.move_to(("diagnostic", "0"))
        if node is not None:
            await pilot.pause(0.2)
            # The detail pane follows at once, not after its debounce.
            app.state = replace(app.state, selection=node.data)
        await pilot.pause(0.3)
        app.save_screenshot("diagnostics.svg", str(out))


def main(argv: list[str] | None = None) -> int:
    """Write the screenshots; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="flash-tui-shots-"))
    os.environ["FLASH_TUI_HOME"] = str(work / "home")
    try:
        quickstart = work / "quickstart"
        shutil.copytree(
            ROOT / "examples" / "quickstart", quickstart, ignore=shutil.ignore_patterns(".flash")
        )
        broken = work / "broken"
        shutil.copytree(
            ROOT / "examples" / "broken", broken, ignore=shutil.ignore_patterns(".flash")
        )
        try:
            asyncio.run(_quickstart(quickstart, out))
        finally:
            from flash_tui.backend import Backend

            Backend(quickstart).stop_cloud()
        asyncio.run(_broken(broken, out))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for svg in sorted(out.glob("*.svg")):
        print(svg.relative_to(ROOT) if svg.is_relative_to(ROOT) else svg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
