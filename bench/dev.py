"""Benchmark: save -> new code answering through `flash-tui dev`, next to `uvicorn --reload`.

`measure_reload()` runs `flash-tui dev` on a temporary copy of examples/flash_dev (real local
cloud in a temporary FLASH_TUI_HOME, real workers) and, in the same run, `uvicorn --reload`
serving an equivalent plain FastAPI app (the same route, the same answer, no Flash). For each
of --saves saves it rewrites the GPU worker's file with a new greeting and times from the write
to the first answer of `POST /gpu_worker/runsync` carrying the new greeting (polled every
10 ms). Printed: the median of each and the ratio dev / uvicorn. Figures, not tests.

Usage: python bench/dev.py [--saves 5]
"""

from __future__ import annotations

import argparse
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
from processes import CLI, clean_env, free_port, stop_process, wait_ready

REPO = Path(__file__).resolve().parent.parent

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
    return figures


def _dev_run(tmp: Path, saves: int) -> list[float]:
    project = tmp / "flash_dev"
    shutil.copytree(
        REPO / "examples" / "flash_dev", project, ignore=shutil.ignore_patterns(".flash")
    )
    env = dict(clean_env(), FLASH_TUI_HOME=str(tmp / "home"))
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
        env=clean_env(),
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


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=5)
    args = parser.parse_args()
    figures = measure_reload(args.saves)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(
        f"save -> new code answering, {args.saves} saves each, {os.cpu_count()} CPUs, "
        f"load average at the end {load} (other work on the machine inflates every figure)"
    )
    print(
        f"  flash-tui dev (examples/flash_dev, gpu_worker redeployed): "
        f"median {figures['dev_s']:.2f} s (best {figures['dev_best_s']:.2f} s)"
    )
    print(
        f"  uvicorn --reload (the same route, a plain app):           "
        f"median {figures['uvicorn_s']:.2f} s (best {figures['uvicorn_best_s']:.2f} s)"
    )
    print(f"  ratio dev / uvicorn: {figures['ratio']:.2f}x  (goal: <= 1.0 s and <= uvicorn's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
