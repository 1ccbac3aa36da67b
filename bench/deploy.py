"""Benchmark: `flash-tui deploy --yes` of examples/quickstart to all-healthy, and undeploy.

Runs the real CLI (`python -m`-style, in subprocesses) against a real local cloud in a
temporary FLASH_TUI_HOME, on a temporary copy of examples/quickstart that is built once first
(so the figures are the deploy's, not the build's: the deploy's stale-build check still runs).
For each of --runs rounds:

- cold: the local cloud is stopped first, so `deploy` also starts it (plus 4+ workers);
- warm: the local cloud is running, nothing is deployed;
- undeploy: `undeploy --all --yes` of the deployed endpoints.

`deploy --yes` returns only when every endpoint answers `/ping` 200 (or failed), so its wall
time is "deploy to all healthy"; each round checks the status afterwards. Also printed: the
time the cloud itself spent (first request to last endpoint healthy), which excludes the CLI's
own start-up (Python imports, scan, plan). Figures, not tests: nothing asserts a timing.

With `--target runpod`, the same against the RunPod contract fake (`tests/fakes/runpod.py`,
served in this process with its data plane of real image-emulator workers): per round
`deploy --target runpod --yes` to all healthy, then `undeploy --all --yes`, with the number of
GraphQL calls each sent. The fake answers on 127.0.0.1, so the times are the client's and the
emulated platform's, not RunPod's.

Usage: python bench/deploy.py [--runs 5] [--project examples/quickstart] [--keep]
       python bench/deploy.py --target runpod [--runs 3]
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
from pathlib import Path

from processes import CLI, run_cli

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--project", default=str(REPO / "examples" / "quickstart"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--target", choices=["local", "runpod"], default="local")
    args = parser.parse_args()
    if args.target == "runpod":
        return run_runpod(args.runs, Path(args.project))

    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-deploy-"))
    project = tmp / "quickstart"
    shutil.copytree(args.project, project, ignore=shutil.ignore_patterns(".flash", "__pycache__"))
    env = dict(os.environ, FLASH_TUI_HOME=str(tmp / "home"))
    figures: dict[str, list[float]] = {"cold": [], "warm": [], "cloud": [], "undeploy": []}
    endpoints = 0
    try:
        build_s, _ = run_cli(["build", str(project), "--json"], env, None)
        print(f"build (once, not counted): {build_s:.2f} s")
        for index in range(args.runs):
            for mode in ("cold", "warm"):
                if mode == "cold":
                    run_cli(["cloud", "stop", "--json"], env, None)
                else:
                    # 3: already running (the cold round started it), which is the point
                    run_cli(["cloud", "start", "--json"], env, None, ok=(0, 3))
                seconds, out = run_cli(["deploy", "--yes", "--json"], env, project)
                report = json.loads(out)
                statuses = json.loads(run_cli(["status", "--json"], env, project)[1])
                healthy = [e for e in statuses["endpoints"] if e["status"] == "healthy"]
                endpoints = len(statuses["endpoints"])
                if not report["ok"] or len(healthy) != endpoints:
                    raise SystemExit(f"round {index}: not all healthy: {statuses}")
                figures[mode].append(seconds)
                if mode == "warm":
                    cloud_ms = max(r.get("elapsed_ms", 0.0) for r in report["results"])
                    figures["cloud"].append(cloud_ms / 1000)
                seconds, _ = run_cli(["undeploy", "--all", "--yes", "--json"], env, project)
                figures["undeploy"].append(seconds)
            print(
                f"round {index + 1}/{args.runs}: cold {figures['cold'][-1]:.2f} s, "
                f"warm {figures['warm'][-1]:.2f} s (cloud side {figures['cloud'][-1]:.2f} s), "
                f"undeploy {figures['undeploy'][-1]:.2f} s",
                flush=True,
            )
    finally:
        subprocess.run([*CLI, "cloud", "stop"], env=env, capture_output=True, timeout=60)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    def med(name: str) -> float:
        return statistics.median(figures[name])

    print()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"examples/quickstart: {endpoints} endpoints, {args.runs} runs, {os.cpu_count()} CPUs, "
        f"load average at the end {load} (other work on the machine inflates every figure)"
    )
    print(f"  deploy --yes -> all healthy, cold (starts the cloud): median {med('cold'):.2f} s")
    print(f"  deploy --yes -> all healthy, warm (cloud running):   median {med('warm'):.2f} s")
    print(f"    of which the cloud (workers started -> /ping 200): median {med('cloud'):.2f} s")
    print(f"  undeploy --all --yes:                                median {med('undeploy'):.2f} s")
    print(
        f"  best round: cold {min(figures['cold']):.2f} s, warm {min(figures['warm']):.2f} s, "
        f"undeploy {min(figures['undeploy']):.2f} s"
    )
    print("  goals: deploy <= 3 s, undeploy <= 2 s (median)")
    return 0


def run_runpod(runs: int, source: Path) -> int:
    """Deploy/undeploy rounds against the RunPod contract fake; times and GraphQL calls."""
    sys.path.append(str(REPO / "tests"))
    from fakes.runpod import FakeRunPod
    from fakes.runpod_image import image_site

    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-runpod-"))
    project = tmp / source.name
    shutil.copytree(source, project, ignore=shutil.ignore_patterns(".flash", "__pycache__"))
    figures: dict[str, list[float]] = {"deploy": [], "undeploy": []}
    calls: dict[str, list[int]] = {"deploy": [], "undeploy": []}
    image_site(tmp / "fake" / "dataplane" / "image-site")  # made once, outside the rounds
    try:
        with FakeRunPod(tmp / "fake") as fake:
            env = dict(os.environ, HOME=str(tmp), **fake.env())
            run_cli(["build", str(project), "--json"], env, None)
            for index in range(runs):
                for op, command in (
                    ("deploy", ["deploy", "--target", "runpod", "--yes", "--json"]),
                    ("undeploy", ["undeploy", "--all", "--target", "runpod", "--yes", "--json"]),
                ):
                    mark = len(fake.graphql_calls)
                    seconds, out = run_cli(command, env, project)
                    if not json.loads(out)["ok"]:
                        raise SystemExit(f"round {index}: {op} failed: {out}")
                    figures[op].append(seconds)
                    calls[op].append(len(fake.graphql_calls) - mark)
                print(
                    f"round {index + 1}/{runs}: deploy {figures['deploy'][-1]:.2f} s "
                    f"({calls['deploy'][-1]} GraphQL calls), undeploy "
                    f"{figures['undeploy'][-1]:.2f} s ({calls['undeploy'][-1]} calls)",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{source.name} on the RunPod fake, {runs} runs, load average at the end {load}")
    for op in ("deploy", "undeploy"):
        print(
            f"  {op}: median {statistics.median(figures[op]):.2f} s, "
            f"GraphQL calls {statistics.median(calls[op]):.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
