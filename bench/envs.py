"""Benchmark: per-endpoint environments — a GPU endpoint's torch environment built cold, reused
warm by another project, against the same deploy without an environment (reference).

Runs the real CLI (`deploy --yes` to all healthy, then `undeploy --all --yes`) against a real
local cloud in a temporary FLASH_TUI_HOME, on fresh copies of a one-endpoint project (a GPU
`LiveServerless` whose function imports torch), then invokes it once to check torch answers:

- reference: `FLASH_TUI_GPU_TORCH=off`, so no environment (the local cloud's interpreter);
- cold: a fresh environment cache each round, so the deploy builds the environment with uv from
  the machine's pip settings (here the CPU torch in /opt/wheels); the uv cache is the user's
  (shared), so the wheel is unpacked once, as on any machine after the first time;
- warm: a new project with the same dependencies, environment already cached.

Each is the median of --runs rounds; the ratios are against the reference of the same run.
Figures, not tests: nothing asserts a timing.

Usage: python bench/envs.py [--runs 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from processes import CLI, run_cli

WORKER = textwrap.dedent(
    """
    from tetra_rp import GpuGroup, LiveServerless, remote

    gpu_config = LiveServerless(name="gpu_torch", gpus=[GpuGroup.ANY])


    @remote(resource_config=gpu_config)
    def tensor_sum(values: list[float]) -> dict:
        import torch

        return {"sum": float(torch.tensor(values).sum()), "torch": str(torch.__version__)}
    """
)


def project(root: Path) -> Path:
    """A fresh one-endpoint project at `root`, built (the build is not what is measured)."""
    root.mkdir(parents=True)
    (root / "gpu_worker.py").write_text(WORKER)
    return root


def deploy_round(env: dict[str, str], root: Path) -> float:
    """Deploy to all healthy (timed), check torch answers, undeploy."""
    run_cli(["build", str(root), "--json"], env, None)
    seconds, _ = run_cli(["deploy", "--yes", "--json"], env, root)
    if env.get("FLASH_TUI_GPU_TORCH") != "off":  # without an environment there is no torch
        _, out = run_cli(
            ["invoke", "gpu_torch:tensor_sum", "--data", '{"values": [1, 2]}', "--json"],
            env,
            root,
        )
        if (json.loads(out).get("result") or {}).get("sum") != 3.0:
            raise SystemExit(f"torch did not answer: {out}")
    run_cli(["undeploy", "--all", "--yes", "--json"], env, root)
    return seconds


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-envs-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLASH_")}
    base["FLASH_TUI_HOME"] = str(tmp / "home")
    figures: dict[str, list[float]] = {"reference": [], "cold": [], "warm": [], "build": []}
    count = 0

    def fresh() -> Path:
        nonlocal count
        count += 1
        return project(tmp / f"p{count}")

    try:
        # The first deploy also starts the local cloud: not counted.
        deploy_round({**base, "FLASH_TUI_GPU_TORCH": "off"}, fresh())
        for index in range(args.runs):
            figures["reference"].append(
                deploy_round({**base, "FLASH_TUI_GPU_TORCH": "off"}, fresh())
            )
            cache = tmp / f"cache{index}"
            env = {**base, "FLASH_TUI_GPU_TORCH": "on", "FLASH_TUI_ENV_CACHE": str(cache)}
            figures["cold"].append(deploy_round(env, fresh()))
            [marker] = cache.glob("*/flash-env.json")
            figures["build"].append(float(json.loads(marker.read_text())["build_seconds"]))
            figures["warm"].append(deploy_round(env, fresh()))
            print(
                f"round {index + 1}: reference {figures['reference'][-1]:.2f} s, "
                f"cold {figures['cold'][-1]:.2f} s (environment {figures['build'][-1]:.2f} s), "
                f"warm {figures['warm'][-1]:.2f} s",
                flush=True,
            )
        size = sum(f.stat().st_size for f in (tmp / "cache0").rglob("*") if f.is_file())
    finally:
        subprocess.run(
            [*CLI, "cloud", "stop"], env=base, capture_output=True, timeout=60, check=False
        )
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    median = {k: statistics.median(v) for k, v in figures.items()}
    print(f"\nmedians of {args.runs} rounds (deploy --yes of 1 GPU endpoint to healthy):")
    print(f"  reference, no environment:        {median['reference']:.2f} s")
    print(
        f"  cold, torch environment built:    {median['cold']:.2f} s "
        f"({median['cold'] / median['reference']:.2f}x; the environment {median['build']:.2f} s)"
    )
    print(
        f"  warm, environment reused:         {median['warm']:.2f} s "
        f"({median['warm'] / median['reference']:.2f}x)"
    )
    print(f"  environment size: {size / 1e6:.0f} MB (files hard-linked from uv's cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
