"""Benchmark: `flash-tui dev` and deploy speed, every figure next to a reference from the same run.

Sections (`--sections`, comma-separated, default all):

- `reload`: save -> new code answering through `flash-tui dev` on a temporary copy of
  examples/flash_dev (real local cloud in a temporary FLASH_TUI_HOME, real workers), and
  `uvicorn --reload` serving an equivalent plain FastAPI app (the same route, the same answer,
  no Flash). For each of --saves saves it rewrites the GPU worker's file with a new greeting and
  times from the write to the first answer of `POST /gpu_worker/runsync` carrying it (polled
  every 10 ms). Median of each and the ratio dev / uvicorn (goal <= 1.0 s and <= uvicorn's).
  The dev side runs with FLASH_TUI_GPU_TORCH=off: the worker imports torch on its first call
  when it has it, which the plain app never does.
- `deploy`: `flash-tui deploy --yes` of examples/quickstart to all healthy, warm (the local
  cloud is running, nothing is deployed) and cold (the cloud is stopped first, so the deploy
  starts it), with the worker pool (fork servers, the default) and with `FLASH_WORKER_POOL=off`
  (every worker a fresh interpreter, the reference); rounds alternate between the two so
  machine load hits both alike (goal warm <= 0.5 s); then, deployed and unchanged, `deploy
  --yes` again: the no-change deploy, which starts no worker (so pool and spawn should match).
- `scale`: a generated project of --endpoints queue-based endpoints, `deploy --yes` to all
  healthy (goal <= 10 s); idle worker memory once they are up, RSS, USS and PSS per worker
  (goal RSS <= 60 MB; forked workers share the fork server's pages: RSS counts them, USS does
  not, PSS splits them); the TUI's key press -> screen updated in the endpoints table with
  those endpoints deployed and every one of them writing log lines (bench/tui.py's machinery,
  headless; goal <= 50 ms).

The CLI runs as a user's would: with bytecode caching (Python's default; kept out of the tree
with PYTHONPYCACHEPREFIX), even when this shell sets PYTHONDONTWRITEBYTECODE. The quickstart's
GPU endpoint gets torch only if the environments' rule installs it for code that never imports
it; then FLASH_TUI_GPU_TORCH=off keeps the download out of the figures. Figures, not tests:
nothing asserts a timing.

Usage: python bench/dev.py [--sections reload,deploy,scale] [--saves 5] [--runs 3]
       [--endpoints 40] [--presses 30] [--keep]
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
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
from processes import CLI, clean_env, free_port, run_cli, stop_process, wait_ready

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("reload", "deploy", "scale")


def cli_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The CLI's environment: this one without FLASH_* settings, with bytecode caching on (out
    of the tree, under `tmp`), as a user's Python has it."""
    env = clean_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return {**env, **extra}


def torch_would_install(project: Path) -> bool:
    """Whether an environment of `project` would get torch under the environments' rule."""
    from engine.envs.contents import endpoint_contents, project_requirements
    from engine.scan import scan_project

    environ = clean_env()
    manifest = scan_project(project).manifest
    wanted = project_requirements(project, environ)
    for resource in (manifest.get("resources") or {}).values():
        contents = endpoint_contents(resource, wanted)
        if contents is not None and (contents.torch or "torch" in contents.requirements):
            return True
    return False


# The plain app uvicorn reloads: the dev server's route and answer for gpu_worker, no Flash.
_PLAIN_APP = """
import uuid

from fastapi import FastAPI

app = FastAPI()
GREETING = {greeting!r}


@app.post("/gpu_worker/runsync")
async def gpu_hello(body: dict) -> dict:
    data = body.get("input", body)
    output = {{"message": GREETING, "echo": data}}
    return {{"id": str(uuid.uuid4()), "status": "COMPLETED", "output": output}}
"""

_BODY = {"input": {"input_data": {}}}
_WORKER_DEFAULT = "Hello from GPU worker!"


def _answers(url: str, greeting: str, timeout: float = 120.0) -> float:
    """Poll until the route answers with `greeting`; the perf_counter time it did."""
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=30) as http:
        while time.monotonic() < deadline:
            try:
                answer = http.post(url, json=_BODY)
                output = answer.json().get("output") or {}
                if answer.status_code == 200 and output.get("message") == greeting:
                    return time.perf_counter()
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.01)
    raise SystemExit(f"{url} never answered {greeting!r} within {timeout:g} s")


def _saves(saves: int, url: str, write: Callable[[str], None], label: str) -> list[float]:
    figures = []
    for index in range(saves):
        greeting = f"{label} save {index} at {time.time():.3f}"
        started = time.perf_counter()
        write(greeting)
        figures.append(_answers(url, greeting) - started)
        print(f"  {label} save {index + 1}/{saves}: {figures[-1]:.2f} s", flush=True)
        # Settle between saves, on both sides alike: uvicorn's reloader sometimes loses a
        # write that lands while it is still swapping processes (it then never reloads).
        time.sleep(1.0)
    return figures


def _dev_run(tmp: Path, saves: int) -> list[float]:
    project = tmp / "flash_dev"
    shutil.copytree(
        REPO / "examples" / "flash_dev", project, ignore=shutil.ignore_patterns(".flash")
    )
    # flash_dev's GPU worker imports torch when called, if its environment has it: the first
    # call in each new worker would then time `import torch` (seconds), which the plain app
    # served by uvicorn never does. Both sides run without torch.
    env = cli_env(tmp, FLASH_TUI_HOME=str(tmp / "home"), FLASH_TUI_GPU_TORCH="off")
    port = free_port()
    log = (tmp / "dev.log").open("wb")
    proc = subprocess.Popen(
        [*CLI, "dev", str(project), "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    worker = project / "gpu_worker.py"
    source = worker.read_text(encoding="utf-8")
    try:
        url = f"http://127.0.0.1:{port}/gpu_worker/runsync"
        wait_ready(f"http://127.0.0.1:{port}/ping", proc, timeout=180, statuses=(200,))
        _answers(url, _WORKER_DEFAULT)

        def write(greeting: str) -> None:
            worker.write_text(source.replace(_WORKER_DEFAULT, greeting), encoding="utf-8")

        return _saves(saves, url, write, "flash-tui dev")
    finally:
        stop_process(proc)
        subprocess.run([*CLI, "cloud", "stop"], env=env, capture_output=True, timeout=60)
        log.close()


def _uvicorn_run(tmp: Path, saves: int) -> list[float]:
    app_dir = tmp / "plain"
    app_dir.mkdir()
    app_file = app_dir / "app.py"
    app_file.write_text(_PLAIN_APP.format(greeting=_WORKER_DEFAULT), encoding="utf-8")
    port = free_port()
    log = (tmp / "uvicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--reload", "--port", str(port)],
        cwd=app_dir,
        env=cli_env(tmp),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}/gpu_worker/runsync"
        wait_ready(f"http://127.0.0.1:{port}/docs", proc, timeout=60, statuses=(200,))

        def write(greeting: str) -> None:
            app_file.write_text(_PLAIN_APP.format(greeting=greeting), encoding="utf-8")

        return _saves(saves, url, write, "uvicorn --reload")
    finally:
        stop_process(proc)
        log.close()


def measure_reload(saves: int = 5) -> dict[str, float]:
    """Median seconds from a save to the new code answering: dev, uvicorn, and their ratio."""
    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-dev-"))
    try:
        dev = _dev_run(tmp, saves)
        plain = _uvicorn_run(tmp, saves)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    dev_median, plain_median = statistics.median(dev), statistics.median(plain)
    return {
        "dev_s": dev_median,
        "uvicorn_s": plain_median,
        "ratio": dev_median / plain_median,
        "dev_best_s": min(dev),
        "uvicorn_best_s": min(plain),
    }


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

    os.environ["FLASH_TUI_HOME"] = str(home)
    names = [f"ep{i}" for i in range(count)]

    async def run() -> list[float]:
        app = FlashApp(project, "local", watch=True)
        async with app.run_test(size=tui.SIZE) as pilot:
            await tui.all_healthy(app, names)
            return await tui.table_key_latencies(app, pilot, presses)

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


def _reload_section(saves: int) -> None:
    figures = measure_reload(saves)
    print(f"save -> new code answering, {saves} saves each (FLASH_TUI_GPU_TORCH=off)")
    print(
        f"  flash-tui dev (examples/flash_dev, gpu_worker redeployed): "
        f"median {figures['dev_s']:.2f} s (best {figures['dev_best_s']:.2f} s)"
    )
    print(
        f"  uvicorn --reload (the same route, a plain app):           "
        f"median {figures['uvicorn_s']:.2f} s (best {figures['uvicorn_best_s']:.2f} s)"
    )
    print(f"  ratio dev / uvicorn: {figures['ratio']:.2f}x  (goal: <= 1.0 s and <= uvicorn's)")


def _starts_sections(args: argparse.Namespace, sections: set[str]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-starts-"))
    quickstart = tmp / "quickstart"
    shutil.copytree(
        REPO / "examples" / "quickstart",
        quickstart,
        ignore=shutil.ignore_patterns(".flash", "__pycache__"),
    )
    many = tmp / f"endpoints{args.endpoints}"
    generate(many, args.endpoints)
    torch_off = {"FLASH_TUI_GPU_TORCH": "off"} if torch_would_install(quickstart) else {}
    envs = {
        mode: cli_env(tmp, FLASH_TUI_HOME=str(tmp / f"home-{mode}"), **extra, **torch_off)
        for mode, extra in MODES.items()
    }
    names = ("warm", "cloud", "nochange", "cold", "many", "rss", "uss", "pss", "servers", "keys")
    figures: dict[str, dict[str, list[float]]] = {n: {m: [] for m in MODES} for n in names}
    try:
        for project in (quickstart, many):
            run_cli(["build", str(project), "--json"], envs["pool"], None)
        for index in range(args.runs):
            for mode, env in envs.items():
                said = [f"round {index + 1}/{args.runs} {mode:5}:"]
                if "deploy" in sections:
                    run_cli(["cloud", "stop", "--json"], env, None)
                    seconds, _ = deploy_all_healthy(env, quickstart)
                    figures["cold"][mode].append(seconds)
                    run_cli(["undeploy", "--all", "--yes", "--json"], env, quickstart)
                    seconds, cloud = deploy_all_healthy(env, quickstart)
                    figures["warm"][mode].append(seconds)
                    figures["cloud"][mode].append(cloud)
                    # Deployed and unchanged: the deploy only finds that out (no worker starts).
                    unchanged, out = run_cli(["deploy", "--yes", "--json"], env, quickstart)
                    counts = json.loads(out)["plan"]["counts"]
                    if counts["unchanged"] != sum(counts.values()):
                        raise SystemExit(f"the second deploy was not a no-change one: {counts}")
                    figures["nochange"][mode].append(unchanged)
                    run_cli(["undeploy", "--all", "--yes", "--json"], env, quickstart)
                    said.append(
                        f"cold {figures['cold'][mode][-1]:.2f} s, warm "
                        f"{figures['warm'][mode][-1]:.2f} s (cloud side {cloud:.2f} s), "
                        f"no change {unchanged:.2f} s"
                    )
                if "scale" in sections:
                    seconds, _ = deploy_all_healthy(env, many)
                    figures["many"][mode].append(seconds)
                    said.append(f"{args.endpoints} endpoints {seconds:.2f} s")
                    if index == args.runs - 1:
                        time.sleep(2.0)  # idle: ready-time collections done, logs flowing
                        rss, uss, pss, servers = worker_memory(Path(env["FLASH_TUI_HOME"]))
                        figures["rss"][mode].extend(rss)
                        figures["uss"][mode].extend(uss)
                        figures["pss"][mode].extend(pss)
                        figures["servers"][mode].append(servers)
                        if args.presses:
                            keys = key_presses(
                                many, Path(env["FLASH_TUI_HOME"]), args.endpoints, args.presses
                            )
                            figures["keys"][mode].extend(keys)
                    run_cli(["undeploy", "--all", "--yes", "--json"], env, many)
                print(" ".join(said), flush=True)
    finally:
        for env in envs.values():
            subprocess.run([*CLI, "cloud", "stop"], env=env, capture_output=True, timeout=60)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"worker starts: pool (fork server) vs spawn (FLASH_WORKER_POOL=off, the reference), "
        f"{args.runs} runs" + (", FLASH_TUI_GPU_TORCH=off" if torch_off else "")
    )
    if "deploy" in sections:
        print(line("deploy --yes quickstart, warm", figures["warm"], "s", "<= 0.5 s"))
        print(line("  of which the cloud (start -> /ping 200)", figures["cloud"], "s", "-"))
        label = "deploy --yes quickstart, nothing changed"
        print(line(label, figures["nochange"], "s", "<= 0.5 s"))
        print(line("deploy --yes quickstart, cold", figures["cold"], "s", "-"))
    if "scale" not in sections:
        return
    label = f"deploy --yes {args.endpoints} endpoints -> all healthy"
    print(line(label, figures["many"], "s", "<= 10 s"))
    for name, title in (("rss", "RSS"), ("uss", "USS"), ("pss", "PSS")):
        pool, spawn = figures[name]["pool"], figures[name]["spawn"]
        print(
            f"  idle worker {title} (MB, median per worker)   "
            f"   pool {statistics.median(pool):8.1f}"
            f"      spawn {statistics.median(spawn):8.1f}      pool/spawn {ratio(pool, spawn)}"
            + ("   (goal <= 60 MB)" if name == "rss" else "")
        )
    servers = statistics.median(figures["servers"]["pool"])
    print(f"  fork server RSS (MB, its pages shared by every worker)   {servers:8.1f}")
    if args.presses:
        label = f"key press -> screen, {args.endpoints} endpoints logging"
        print(line(label, figures["keys"], "ms", "<= 50 ms"))


def _sections(text: str) -> set[str]:
    chosen = {s.strip() for s in text.split(",") if s.strip()}
    unknown = chosen - set(SECTIONS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {', '.join(sorted(unknown)) or '(none)'}; "
            f"choose from {', '.join(SECTIONS)}"
        )
    return chosen


def main() -> int:
    """Run the chosen sections and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections", type=_sections, default=set(SECTIONS), help=f"of {', '.join(SECTIONS)}"
    )
    parser.add_argument("--saves", type=int, default=5, help="saves per side (reload)")
    parser.add_argument("--runs", type=int, default=3, help="rounds per mode (deploy, scale)")
    parser.add_argument("--endpoints", type=int, default=40)
    parser.add_argument("--presses", type=int, default=30, help="key presses; 0 skips them")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if "reload" in args.sections:
        _reload_section(args.saves)
    if args.sections & {"deploy", "scale"}:
        _starts_sections(args, args.sections)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{os.cpu_count()} CPUs, load average at the end {load} "
        "(other work on the machine inflates every figure)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
