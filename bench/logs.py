"""Benchmark: a worker floods its log (400 MB as fast as it can) on a real local cloud.

Deploys one endpoint whose worker, once told to, writes `--mb` MB to stdout in 64 KB writes,
in a temporary FLASH_TUI_HOME with the default log cap. While it writes, it samples the total
size of the endpoint's log files and times `/v1/health` requests to the control plane. Prints
the burst's duration and throughput, the largest log total seen against the cap, and the
health latencies (p50 / p99 / max). Figures, not tests: nothing asserts a timing.

Usage: python bench/logs.py [--mb 400] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from processes import CLI

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.home import Home  # noqa: E402
from engine.localcloud import logfiles  # noqa: E402
from engine.localcloud.discovery import read_state, stop_cloud  # noqa: E402

ENDPOINT = '''"""Floods its log when GO_FILE appears."""

import os
import threading
import time

from tetra_rp import CpuLiveServerless, remote

flood_config = CpuLiveServerless(name="flood", env={"FLOOD_MB": "MB", "GO_FILE": "GO"})


def _flood() -> None:
    while not os.path.exists(os.environ["GO_FILE"]):
        time.sleep(0.01)
    chunk = (b"y" * 1023 + b"\\n") * 64
    for _ in range((int(os.environ["FLOOD_MB"]) << 20) // len(chunk)):
        os.write(1, chunk)
    os.write(1, b"flood done\\n")


if os.environ.get("FLOOD_MB"):
    threading.Thread(target=_flood, daemon=True).start()


@remote(flood_config)
def flood() -> int:
    return 1
'''


def _total(logs: Path) -> int:
    total = 0
    for path in logs.glob("flood.log*"):
        with contextlib.suppress(FileNotFoundError):  # rotated between listing and stat
            total += path.stat().st_size
    return total


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-logs-"))
    project, go = tmp / "floodapp", tmp / "go"
    project.mkdir()
    code = ENDPOINT.replace('"MB"', f'"{args.mb}"').replace('"GO"', f'"{go}"')
    (project / "endpoints.py").write_text(code)
    env = dict(os.environ, FLASH_TUI_HOME=str(tmp / "home"))
    os.environ["FLASH_TUI_HOME"] = env["FLASH_TUI_HOME"]
    home = Home(tmp / "home")
    try:
        subprocess.run(
            [*CLI, "deploy", "--yes", "--project", str(project)],
            env=env,
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        info = read_state(home)
        assert info is not None
        logs = home.logs_dir("floodapp")
        current = logfiles.log_path(logs, "flood")
        latencies: list[float] = []
        biggest = 0
        with httpx.Client(base_url=info.url, headers=info.headers(), trust_env=False) as api:
            go.touch()
            started = time.perf_counter()
            while "flood done" not in "\n".join(logfiles.tail_lines(current, 2)):
                biggest = max(biggest, _total(logs))
                before = time.perf_counter()
                api.get("/v1/health").raise_for_status()
                latencies.append((time.perf_counter() - before) * 1000)
            elapsed = time.perf_counter() - started
        cap = logfiles.DEFAULT_MAX_BYTES * (logfiles.DEFAULT_KEEP + 1)
        latencies.sort()
        print(f"burst: {args.mb} MB in {elapsed:.2f} s ({args.mb / elapsed:.0f} MB/s)")
        print(f"largest log total seen: {biggest / 2**20:.2f} MB (cap {cap / 2**20:.0f} MB)")
        print(
            f"/v1/health during the burst ({len(latencies)} requests): "
            f"p50 {statistics.median(latencies):.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.1f} ms, max {latencies[-1]:.1f} ms"
        )
    finally:
        stop_cloud(home)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
