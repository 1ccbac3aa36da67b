"""Benchmark: worker starts through the pool (fork server) against fresh interpreters.

Every figure is measured twice in the same run, on this machine: with the worker pool (the
default) and with `FLASH_WORKER_POOL=off` (every worker a fresh `python -m runtime.worker`,
the reference). Rounds alternate between the two so machine load hits both alike; medians
of --runs rounds, and the ratio pool / reference.

1. `flash-tui deploy --yes` of examples/quickstart to all healthy, warm (the local cloud is
   running, nothing is deployed) and cold (the cloud is stopped first, so the deploy starts
   it); undeployed after each (the CLI in a subprocess, as `bench/deploy.py`);
2. a generated project of --endpoints queue-based endpoints, `deploy --yes` to all healthy on
   a running cloud;
3. idle worker memory once those endpoints are up: RSS, USS and PSS per worker (forked
   workers share the fork server's pages: RSS counts them, USS does not, PSS splits them);
4. the TUI's key press -> screen updated in the endpoints table with those endpoints deployed
   and every one of them writing log lines (bench/tui.py's machinery, headless).

Goals: warm deploy <= 0.5 s, 40 endpoints <= 10 s, idle RSS <= 60 MB per worker, key press
<= 50 ms. Figures, not tests: nothing asserts a timing.

Usage: python bench/dev_starts.py [--runs 3] [--endpoints 40] [--presses 30] [--skip-tui]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from processes import CLI, clean_env

REPO = Path(__file__).resolve().parent.parent
MODES = {"pool": {}, "spawn": {"FLASH_WORKER_POOL": "off"}}

# A queue-based endpoint that writes a log line every 100 ms once its worker runs it.
CHATTY_ENDPOINT = """import os
import threading
import time

from tetra_rp import CpuLiveServerless, remote

config = CpuLiveServerless(name="ep{i}", workersMin=0, workersMax=1)


def _chatter() -> None:
    count = 0
    while True:
        print(f"ep{i} tick {{count}}", flush=True)
        count += 1
        time.sleep(0.1)


if os.environ.get("FLASH_RESOURCE_NAME") == "ep{i}":
    threading.Thread(target=_chatter, daemon=True).start()


@remote(config)
async def work_{i}(x: int) -> int:
    return x
"""


def run_cli(args: list[str], env: dict[str, str], project: Path | None) -> tuple[float, str]:
    """Run one CLI command; (seconds, stdout). Exits the benchmark when it fails."""
    command = [*CLI, *args] + (["--project", str(project)] if project else [])
    started = time.perf_counter()
    proc = subprocess.run(
        command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed, proc.stdout


def deploy_all_healthy(env: dict[str, str], project: Path) -> tuple[float, float]:
    """`deploy --yes`; (wall seconds, the cloud's own seconds). Every endpoint must be healthy."""
    seconds, out = run_cli(["deploy", "--yes", "--json"], env, project)
    report = json.loads(out)
    statuses = json.loads(run_cli(["status", "--json"], env, project)[1])["endpoints"]
    if not report["ok"] or any(e["status"] != "healthy" for e in statuses):
        raise SystemExit(f"not all healthy: {statuses}")
    cloud = max((r.get("elapsed_ms", 0.0) for r in report["results"]), default=0.0) / 1000
    return seconds, cloud


def generate(project: Path, count: int) -> None:
    """A project of `count` chatty queue-based endpoints."""
    workers = project / "workers"
    workers.mkdir(parents=True)
    (workers / "__init__.py").write_text("")
    for i in range(count):
        (workers / f"ep{i}.py").write_text(CHATTY_ENDPOINT.format(i=i))


def worker_memory(home: Path) -> tuple[list[float], list[float], list[float], float]:
    """RSS, USS, PSS (MB) of each worker of `home`, and the fork servers' RSS in total."""
    apps = str(home / "apps") + os.sep
    rss: list[float] = []
    uss: list[float] = []
    pss: list[float] = []
    servers = 0.0
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        try:
            if "runtime.worker" in cmdline and any(p.startswith(apps) for p in cmdline):
                info = process.memory_full_info()
                rss.append(info.rss / 2**20)
                uss.append(info.uss / 2**20)
                pss.append(info.pss / 2**20)
            elif "runtime.forkserver" in cmdline and str(home) in " ".join(cmdline):
                servers += process.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return rss, uss, pss, servers


def key_presses(project: Path, home: Path, count: int, presses: int) -> list[float]:
    """Key press -> screen updated in the endpoints table (bench/tui.py), endpoints logging."""
    sys.path.insert(0, str(REPO))
    import tui  # bench/tui.py: its app, sizes and key-press measurement

    from flash_tui.app import FlashApp
    from flash_tui.widgets.dashboard.endpoints_table import EndpointsTable

    os.environ["FLASH_TUI_HOME"] = str(home)
    names = [f"ep{i}" for i in range(count)]

    async def run() -> list[float]:
        app = FlashApp(project, "local", watch=True)
        samples: list[float] = []
        async with app.run_test(size=tui.SIZE) as pilot:
            deadline = time.perf_counter() + 120
            while not all(
                (s := app.statuses.get(n)) is not None and s.status == "healthy" for n in names
            ):
                if time.perf_counter() > deadline:
                    raise SystemExit(f"{count} endpoints not all healthy in the app")
                await asyncio.sleep(0.1)
            table = app.dashboard.query_one(EndpointsTable)
            table.focus()
            await pilot.pause(0.5)
            await pilot.press("down", "down")
            for i in range(presses):
                key = "down" if i % 2 == 0 else "up"
                samples.append(await tui._press(app, lambda: table.cursor_row, key))
                await asyncio.sleep(0.05)
        return samples

    return asyncio.run(run())


def ratio(pool: list[float], spawn: list[float]) -> str:
    """`pool` median / `spawn` median, as text."""
    reference = statistics.median(spawn)
    return f"{statistics.median(pool) / reference:.2f}x" if reference else "n/a"


def line(label: str, figures: dict[str, list[float]], unit: str, goal: str) -> str:
    """One figure: pool, reference and ratio."""
    pool, spawn = figures["pool"], figures["spawn"]
    scale = 1000 if unit == "ms" else 1
    return (
        f"  {label:<44} pool {statistics.median(pool) * scale:8.2f} {unit}   "
        f"spawn {statistics.median(spawn) * scale:8.2f} {unit}   pool/spawn {ratio(pool, spawn)}"
        f"   (goal {goal}; pool runs {', '.join(f'{x * scale:.2f}' for x in pool)})"
    )


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--endpoints", type=int, default=40)
    parser.add_argument("--presses", type=int, default=30)
    parser.add_argument("--skip-tui", action="store_true", help="skip the key press figure")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-starts-"))
    quickstart = tmp / "quickstart"
    shutil.copytree(
        REPO / "examples" / "quickstart",
        quickstart,
        ignore=shutil.ignore_patterns(".flash", "__pycache__"),
    )
    many = tmp / f"endpoints{args.endpoints}"
    generate(many, args.endpoints)
    envs = {
        mode: {**clean_env(), "FLASH_TUI_HOME": str(tmp / f"home-{mode}"), **extra}
        for mode, extra in MODES.items()
    }
    names = ("warm", "cloud", "cold", "many", "rss", "uss", "pss", "servers", "keys")
    figures: dict[str, dict[str, list[float]]] = {n: {m: [] for m in MODES} for n in names}
    try:
        for project in (quickstart, many):
            run_cli(["build", str(project), "--json"], envs["pool"], None)
        for index in range(args.runs):
            for mode, env in envs.items():
                run_cli(["cloud", "stop", "--json"], env, None)
                seconds, _ = deploy_all_healthy(env, quickstart)
                figures["cold"][mode].append(seconds)
                run_cli(["undeploy", "--all", "--yes", "--json"], env, quickstart)
                seconds, cloud = deploy_all_healthy(env, quickstart)
                figures["warm"][mode].append(seconds)
                figures["cloud"][mode].append(cloud)
                run_cli(["undeploy", "--all", "--yes", "--json"], env, quickstart)
                seconds, _ = deploy_all_healthy(env, many)
                figures["many"][mode].append(seconds)
                if index == args.runs - 1:
                    time.sleep(2.0)  # idle: ready-time collections done, logs flowing
                    rss, uss, pss, servers = worker_memory(Path(env["FLASH_TUI_HOME"]))
                    figures["rss"][mode].extend(rss)
                    figures["uss"][mode].extend(uss)
                    figures["pss"][mode].extend(pss)
                    figures["servers"][mode].append(servers)
                    if not args.skip_tui:
                        keys = key_presses(
                            many, Path(env["FLASH_TUI_HOME"]), args.endpoints, args.presses
                        )
                        figures["keys"][mode].extend(keys)
                run_cli(["undeploy", "--all", "--yes", "--json"], env, many)
                print(
                    f"round {index + 1}/{args.runs} {mode:5}: cold {figures['cold'][mode][-1]:.2f}"
                    f" s, warm {figures['warm'][mode][-1]:.2f} s (cloud side "
                    f"{figures['cloud'][mode][-1]:.2f} s), {args.endpoints} endpoints "
                    f"{figures['many'][mode][-1]:.2f} s",
                    flush=True,
                )
    finally:
        for env in envs.values():
            subprocess.run([*CLI, "cloud", "stop"], env=env, capture_output=True, timeout=60)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(
        f"worker starts: pool (fork server) vs spawn (FLASH_WORKER_POOL=off, the reference), "
        f"{args.runs} runs, {os.cpu_count()} CPUs, load average at the end {load}"
    )
    print(line("deploy --yes quickstart, warm", figures["warm"], "s", "<= 0.5 s"))
    print(line("  of which the cloud (start -> /ping 200)", figures["cloud"], "s", "-"))
    print(line("deploy --yes quickstart, cold", figures["cold"], "s", "-"))
    print(
        line(
            f"deploy --yes {args.endpoints} endpoints -> all healthy",
            figures["many"],
            "s",
            "<= 10 s",
        )
    )
    for name, label in (("rss", "RSS"), ("uss", "USS"), ("pss", "PSS")):
        pool, spawn = figures[name]["pool"], figures[name]["spawn"]
        print(
            f"  idle worker {label} (MB, median per worker)   "
            f"   pool {statistics.median(pool):8.1f}"
            f"      spawn {statistics.median(spawn):8.1f}      pool/spawn {ratio(pool, spawn)}"
            + ("   (goal <= 60 MB)" if name == "rss" else "")
        )
    servers = statistics.median(figures["servers"]["pool"])
    print(f"  fork server RSS (MB, its pages shared by every worker)   {servers:8.1f}")
    if not args.skip_tui:
        print(
            line(
                f"key press -> screen, {args.endpoints} endpoints logging",
                figures["keys"],
                "ms",
                "<= 50 ms",
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
