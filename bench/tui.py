"""TUI benchmark (headless, Textual's Pilot): prints medians.

1. start -> first frame: app start (the app's modules already imported) until its first frame
   is painted (before the scan lands it says "scanning…", never "0 endpoints"), and -> first
   full frame: until the scanned tree of the generated 2,000-file project (bench/scan.py's
   generator) is on screen; then the same from a cold start: a new process, imports included;
2. file save -> tree updated: a new decorated function written to a Flash module until its node
   is in the tree (watcher + incremental rescan + in-place tree update);
3. key press -> screen updated while logs stream at 2,000 lines/s into the log pane;
4. file save -> drift shown: examples/quickstart deployed to a temporary local cloud (its own
   FLASH_TUI_HOME), a config value edited on disk until the endpoint's row says `drifted`, then
   edited back until it says `in sync` (watcher + rescan + status from the cloud).

5. idle CPU: a generated project of 6, then 40 queue-based endpoints deployed to the local
   cloud, the app open on it and left alone once every endpoint is healthy: the share of one
   core the app's process uses (its CPU time, `resource.getrusage`), median of --idle-windows
   windows of --idle-seconds / windows each, after --settle seconds (60) left idle;
6. key press -> screen updated in the endpoints table with the 40 endpoints deployed.

Goals: 600 ms to the first frame, 1.0 s to the full one, 250 ms, 20 ms, 1.0 s for the drift,
idle CPU <= 2 % (6 endpoints) and <= 5 % (40), 50 ms with 40 endpoints. Steps 1-3 involve
no cloud (connect=False).
Usage: python bench/tui.py [--files 2000] [--runs 5] [--idle-seconds 30] [--only-idle]
       [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scan import generate  # noqa: E402  (bench/scan.py: the same synthetic project)
from textual import events  # noqa: E402
from textual.pilot import Pilot  # noqa: E402

from engine.home import Home  # noqa: E402
from engine.localcloud.discovery import stop_cloud  # noqa: E402
from flash_tui.app import FlashApp  # noqa: E402
from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable  # noqa: E402
from flash_tui.widgets.dashboard.manifest_tree import ManifestTree  # noqa: E402

SIZE = (120, 40)


def median_ms(samples: list[float]) -> float:
    """Median of seconds, in milliseconds."""
    return statistics.median(samples) * 1000


async def start_to_first_frame(
    project: Path, on_frame: Callable[[str], None] | None = None
) -> tuple[float, float]:
    """Seconds from app start to its first painted frame, and to the scanned tree on screen;
    `on_frame("frame" | "full")` is called at each."""
    started = time.perf_counter()
    app = FlashApp(project, connect=False, watch=False)
    async with app.run_test(size=SIZE) as pilot:
        painted = asyncio.Event()
        app.call_after_refresh(painted.set)  # set once the first frame is painted
        await painted.wait()
        first = time.perf_counter() - started
        if on_frame is not None:
            on_frame("frame")
        if app.scan_count < 1:  # the first frame came before the scan: it says so
            header = app.state.header()[0]
            assert "scanning…" in header and "0 endpoints" not in header, header
        while app.scan_count < 1:
            await asyncio.sleep(0.002)
        await pilot.pause()  # the refresh that paints the tree
        full = time.perf_counter() - started
        if on_frame is not None:
            on_frame("full")
        assert app.dashboard.query_one(ManifestTree).root.children, "tree is empty"
    return first, full


def cold_start(project: Path) -> tuple[float, float]:
    """Like `start_to_first_frame` from a new Python process: imports included."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, __file__, "--cold-child", str(project)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    seen: dict[str, float] = {}
    for line in child.stdout:
        seen[line.strip()] = time.perf_counter() - started
    if child.wait() != 0 or set(seen) != {"frame", "full"}:
        raise SystemExit(f"the cold-start child failed ({seen})")
    return seen["frame"], seen["full"]


def _cold_child(project: Path) -> int:
    def say(what: str) -> None:
        print(what, flush=True)

    asyncio.run(start_to_first_frame(project, say))
    return 0


async def save_to_tree(project: Path, flash_rel: str, runs: int) -> list[float]:
    app = FlashApp(project, connect=False, watch=True)
    samples = []
    target = project / flash_rel
    async with app.run_test(size=SIZE) as pilot:
        while app.scan_count < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the watcher registers its inotify watches
        tree = app.dashboard.query_one(ManifestTree)
        for run in range(runs):
            text = target.read_text()
            name = f"bench_added_{run}"
            decorator = _decorator(text, name)
            started = time.perf_counter()
            target.write_text(
                text + f"\n\n{decorator}\nasync def {name}(x: int) -> int:\n    return x\n"
            )
            while not any(k[0] == "function" and k[2] == name for k in tree.shown_keys()):
                await asyncio.sleep(0.002)
            await pilot.pause()
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(0.3)  # let the batch settle before the next save
    return samples


def _decorator(text: str, name: str) -> str:
    """The module's first `@remote(config_N...)` line, with its route (if any) made unique."""
    for line in text.splitlines():
        if line.startswith("@remote(config_"):
            return line.replace('path="/run_', f'path="/{name}_')
    raise SystemExit("no @remote(config) in the generated Flash module")


async def key_to_screen(project: Path, presses: int) -> tuple[list[float], int]:
    app = FlashApp(project, connect=False, watch=False)
    samples = []
    async with app.run_test(size=SIZE) as pilot:
        while app.scan_count < 1:
            await asyncio.sleep(0.01)
        await pilot.pause()
        stop = asyncio.Event()
        written = 0

        async def stream() -> None:
            # 2,000 lines/s: 100 lines every 50 ms, the way a busy worker's log arrives.
            nonlocal written
            while not stop.is_set():
                for _ in range(100):
                    app.logs.append("12:00:00", "bench", f"POST /compute 200 {written % 97}.0ms")
                    written += 1
                await asyncio.sleep(0.05)

        task = asyncio.create_task(stream())
        tree = app.dashboard.query_one(ManifestTree)
        tree.focus()
        await pilot.pause(0.3)
        await pilot.press("down", "down")  # off the first line, so "up" always moves
        for i in range(presses):
            key = "down" if i % 2 == 0 else "up"
            samples.append(await _press(app, lambda: tree.cursor_line, key))
            await asyncio.sleep(0.05)
        stop.set()
        await task
    return samples, written


async def save_to_drift(project: Path, runs: int) -> list[float]:
    from engine.operations import Engine

    async with Engine(project) as engine:
        report = await engine.deploy()
        if not report.ok:
            raise SystemExit("deploying examples/quickstart failed")
    app = FlashApp(project, "local", watch=True)
    endpoint = project / "workers" / "cpu" / "endpoint.py"
    original = endpoint.read_text()
    edited = original.replace("workersMax=2", "workersMax=5")
    samples = []

    def drift() -> str | None:
        status = app.state.statuses.get("cpu_worker")
        return status.drift if status is not None else None

    async def wait_for(condition: Callable[[], bool], what: str) -> None:
        deadline = time.perf_counter() + 30
        while not condition():
            if time.perf_counter() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            await asyncio.sleep(0.002)

    async with app.run_test(size=SIZE):
        await wait_for(lambda: app.scan_count >= 1 and drift() == "in_sync", "in sync")
        await asyncio.sleep(0.5)  # the watcher registers its inotify watches
        for run in range(runs):
            text, wanted = (edited, "drifted") if run % 2 == 0 else (original, "in_sync")
            started = time.perf_counter()
            endpoint.write_text(text)
            await wait_for(lambda wanted=wanted: drift() == wanted, wanted)
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(0.3)
    async with Engine(project) as engine:
        await engine.undeploy(None)
    return samples


def generate_endpoints(project: Path, count: int) -> None:
    """A Flash project of `count` queue-based CPU endpoints, one function each."""
    workers = project / "workers"
    workers.mkdir(parents=True)
    (workers / "__init__.py").write_text("")
    for i in range(count):
        (workers / f"ep{i}.py").write_text(
            "from tetra_rp import CpuLiveServerless, remote\n\n"
            f'config = CpuLiveServerless(name="ep{i}", workersMin=0, workersMax=1)\n\n\n'
            "@remote(config)\n"
            f"async def work_{i}(x: int) -> int:\n"
            "    return x\n"
        )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def idle_cpu(
    project: Path, count: int, seconds: float, windows: int, presses: int, settle: float = 60.0
) -> tuple[list[float], list[float], float]:
    """Idle CPU shares (percent of one core) per window, key latencies, health p50 (ms)."""
    from engine.operations import Engine

    async with Engine(project) as engine:
        report = await engine.deploy()
        if not report.ok:
            raise SystemExit(f"deploying {count} endpoints failed")
    names = [f"ep{i}" for i in range(count)]
    app = FlashApp(project, "local", watch=True)
    shares: list[float] = []
    try:
        async with app.run_test(size=SIZE) as pilot:
            await all_healthy(app, names)
            # Left alone: the probes of endpoints that stay healthy back off (to 60 s after
            # about two minutes); `settle` seconds of that first.
            await asyncio.sleep(settle)
            for _ in range(windows):
                cpu, wall = _cpu_seconds(), time.perf_counter()
                await asyncio.sleep(seconds / windows)
                used = _cpu_seconds() - cpu
                shares.append(100 * used / (time.perf_counter() - wall))
            keys = await table_key_latencies(app, pilot, presses)
            latencies = [
                s.latency_ms
                for n in names
                if (s := app.state.statuses[n].health) is not None and s.latency_ms is not None
            ]
    finally:
        async with Engine(project) as engine:
            await engine.undeploy(None)
    return shares, keys, statistics.median(latencies) if latencies else float("nan")


async def all_healthy(app: FlashApp, names: list[str], timeout: float = 120.0) -> None:
    """Wait until the app shows every endpoint of `names` healthy; exits the benchmark after
    `timeout` seconds."""
    deadline = time.perf_counter() + timeout
    while not all(
        (s := app.state.statuses.get(n)) is not None and s.status == "healthy" for n in names
    ):
        if time.perf_counter() > deadline:
            raise SystemExit(f"{len(names)} endpoints not all healthy in the app")
        await asyncio.sleep(0.1)


async def table_key_latencies(app: FlashApp, pilot: Pilot[None], presses: int) -> list[float]:
    """Seconds per key press (down, up, ...) in the endpoints table until it is painted."""
    table = app.dashboard.query_one(EndpointsTable)
    table.focus()
    await pilot.pause(0.3)
    await pilot.press("down", "down")
    keys = []
    for i in range(presses):
        key = "down" if i % 2 == 0 else "up"
        keys.append(await _press(app, lambda: table.cursor_row, key))
        await asyncio.sleep(0.05)
    return keys


async def _press(app: FlashApp, cursor: Callable[[], int], key: str) -> float:
    """Seconds from a key event sent the way a terminal driver does (Pilot.press adds idle-waits
    of its own that would dominate the figure) until the moved `cursor` is painted."""
    before = cursor()
    painted = asyncio.Event()
    started = time.perf_counter()
    event = events.Key(key, None)
    event.set_sender(app)
    app._driver.send_message(event)  # type: ignore[union-attr]
    deadline = started + 5
    while cursor() == before:
        if time.perf_counter() > deadline:
            raise SystemExit(f"key {key!r} did not move the cursor")
        await asyncio.sleep(0)
    app.call_after_refresh(painted.set)  # set once the changed screen is painted
    await painted.wait()
    return time.perf_counter() - started


def idle_figures(workdir: Path, seconds: float, windows: int, settle: float) -> list[str]:
    """Steps 5 and 6, each on its own generated project and local cloud."""
    out = []
    for count in (6, 40):
        project = workdir / f"endpoints{count}"
        generate_endpoints(project, count)
        home = workdir / f"home{count}"
        os.environ["FLASH_TUI_HOME"] = str(home)  # never the user's own cloud
        try:
            shares, keys, p50 = asyncio.run(
                idle_cpu(project, count, seconds, windows, 30 if count == 40 else 0, settle)
            )
        finally:
            stop_cloud(Home(home))
        goal = 2 if count == 6 else 5
        out.append(
            f"  idle CPU, {count:2d} endpoints        median {statistics.median(shares):7.1f} %"
            f"   (goal <= {goal}; windows {', '.join(f'{s:.1f}' for s in shares)};"
            f" health p50 {p50:.0f} ms; after {settle:.0f} s idle)"
        )
        if keys:
            out.append(
                f"  key press, {count} endpoints      median {median_ms(keys):7.1f} ms"
                "  (goal <= 50; endpoints table)"
            )
    return out


def _start_lines(starts: list[tuple[float, float]], colds: list[tuple[float, float]]) -> list[str]:
    """Step 1's figures: first frame and first full frame, in process and from a cold start."""
    return [
        f"  start -> first frame           median {median_ms([s[0] for s in starts]):7.1f} ms"
        "  (goal <= 600; the app's modules already imported)",
        f"  start -> first full frame      median {median_ms([s[1] for s in starts]):7.1f} ms"
        "  (goal <= 1000; the scanned tree)",
        f"  cold start -> first frame      median {median_ms([c[0] for c in colds]):7.1f} ms"
        "  (a new process: Python, imports, app)",
        f"  cold start -> first full frame median {median_ms([c[1] for c in colds]):7.1f} ms",
    ]


def _key_line(keys: list[float], lines: int) -> str:
    return (
        f"  key press -> screen updated    median {median_ms(keys):7.1f} ms  (goal <= 20)"
        f"  while streaming {lines} log lines at 2,000/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--idle-windows", type=int, default=3)
    parser.add_argument(
        "--settle", type=float, default=60.0, help="seconds left idle before measuring"
    )
    parser.add_argument("--only-idle", action="store_true", help="only steps 5 and 6")
    parser.add_argument("--quick", action="store_true", help="only steps 1 and 3 (no cloud)")
    parser.add_argument("--cold-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold_child is not None:
        return _cold_child(args.cold_child)
    workdir = Path(tempfile.mkdtemp(prefix="flash-tui-bench-"))
    if args.only_idle:
        try:
            figures = idle_figures(workdir, args.idle_seconds, args.idle_windows, args.settle)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"flash-tui TUI benchmark (idle, headless {SIZE[0]}x{SIZE[1]})")
        print("\n".join(figures))
        return 0
    try:
        project = workdir / "generated"
        project.mkdir()
        _plain, flash = generate(project, args.files)
        starts = [asyncio.run(start_to_first_frame(project)) for _ in range(args.runs)]
        colds = [cold_start(project) for _ in range(args.runs)]
        keys, lines = asyncio.run(key_to_screen(project, 50))
        if args.quick:
            print(f"flash-tui TUI benchmark ({args.files} files, headless {SIZE[0]}x{SIZE[1]})")
            print("\n".join(_start_lines(starts, colds)))
            print(_key_line(keys, lines))
            return 0
        saves = asyncio.run(save_to_tree(project, flash, max(args.runs, 5)))
        quickstart = workdir / "quickstart"
        shutil.copytree(
            ROOT / "examples" / "quickstart", quickstart, ignore=shutil.ignore_patterns(".flash")
        )
        os.environ["FLASH_TUI_HOME"] = str(workdir / "home")  # never the user's own cloud
        try:
            drifts = asyncio.run(save_to_drift(quickstart, max(args.runs, 6)))
        finally:
            stop_cloud(Home(workdir / "home"))
        figures = idle_figures(workdir, args.idle_seconds, args.idle_windows, args.settle)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"flash-tui TUI benchmark ({args.files} files, headless {SIZE[0]}x{SIZE[1]})")
    print("\n".join(_start_lines(starts, colds)))
    print(f"  file save -> tree updated      median {median_ms(saves):7.1f} ms  (goal <= 250)")
    print(_key_line(keys, lines))
    print(f"  file save -> drift shown       median {median_ms(drifts):7.1f} ms  (goal <= 1000)")
    print("\n".join(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
