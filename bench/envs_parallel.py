"""Benchmark: the environments of one deploy built side by side (the `envs` step builds up to
`PARALLEL_BUILDS` distinct environments at a time) against one after another (reference).

Runs the real `env_step` with real uv on the machine's pip settings: six endpoints, each with
one small, distinct package, so six environments; each round uses a fresh environment cache
(uv's own cache is the user's, so downloads happen once, as on any machine after the first
time). The median of --runs rounds of each, and the ratio against the reference measured in the
same run. Figures, not tests: nothing asserts a timing.

Usage: python bench/envs_parallel.py [--runs 3] [--cold-uv]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from engine.env_step import PARALLEL_BUILDS, env_step
from engine.envs import EnvCache
from engine.provider import EndpointSpec

PACKAGES = ("six", "idna", "appdirs", "anytree", "asteval", "aenum")


def one_round(tmp: Path, parallel: int, cold_uv: bool = False) -> float:
    """Seconds for the `envs` step to build the six environments into a fresh cache (and, with
    `cold_uv`, a fresh uv cache: every wheel fetched and unpacked again)."""
    if cold_uv:
        os.environ["UV_CACHE_DIR"] = tempfile.mkdtemp(prefix="uv-", dir=tmp)
    manifest = {
        "resources": {
            f"ep_{name}": {
                "resource_type": "CpuLiveServerless",
                "functions": [{"dependencies": [name]}],
            }
            for name in PACKAGES
        }
    }
    specs = [EndpointSpec(name=n) for n in manifest["resources"]]
    cache_dir = Path(tempfile.mkdtemp(prefix="cache-", dir=tmp))
    cache = EnvCache(cache_dir)
    started = time.perf_counter()
    result = asyncio.run(
        env_step(tmp, manifest, specs, lambda *a, **k: None, cache=cache, parallel=parallel)
    )
    took = time.perf_counter() - started
    failed = [s.setup_error for s in result.specs if s.setup_error]
    if failed:
        raise SystemExit(f"an environment failed: {failed[0]}")
    shutil.rmtree(cache_dir, ignore_errors=True)
    return took


def main() -> int:
    """Run the rounds and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--cold-uv", action="store_true", help="a fresh uv cache each round (fetch and unpack)"
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-envs-parallel-"))
    os.environ.pop("FLASH_TUI_GPU_TORCH", None)
    figures: dict[str, list[float]] = {"sequential": [], "parallel": []}
    try:
        one_round(tmp, PARALLEL_BUILDS)  # warms uv's cache: not counted
        for index in range(args.runs):
            figures["sequential"].append(one_round(tmp, 1, args.cold_uv))
            figures["parallel"].append(one_round(tmp, PARALLEL_BUILDS, args.cold_uv))
            print(
                f"round {index + 1}: one at a time {figures['sequential'][-1]:.2f} s, "
                f"{PARALLEL_BUILDS} at a time {figures['parallel'][-1]:.2f} s",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seq = statistics.median(figures["sequential"])
    par = statistics.median(figures["parallel"])
    uv = "a fresh uv cache each" if args.cold_uv else "uv's cache warm"
    print(f"\nmedians of {args.runs} rounds ({len(PACKAGES)} environments, {uv}):")
    print(f"  reference, one at a time:   {seq:.2f} s")
    print(f"  {PARALLEL_BUILDS} at a time:                {par:.2f} s ({par / seq:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
