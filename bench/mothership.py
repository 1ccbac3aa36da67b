"""Benchmark: deploying through a mothership vs deploying directly, on the local cloud.

Runs the real CLI in subprocesses against a real local cloud in a temporary FLASH_TUI_HOME, on a
temporary copy of examples/quickstart built once first. For each of --runs rounds:

- direct: `deploy --yes` to every endpoint healthy, then `undeploy --all --yes`;
- mothership: `deploy --mothership --yes` until the mothership has provisioned every child
  (the command waits for it), then `undeploy --all --yes`;
- reboot: the mothership SIGKILLed and restarted by the supervisor, to its next `reconciled`
  (the same build: it touches no child).

Prints each figure's median (and range), and the mothership deploy's ratio to the direct one
measured in the same run. Figures, not tests: nothing asserts a timing.

With `--target runpod`, against the RunPod contract fake (`tests/fakes/runpod.py`, real
image-emulator workers): direct `deploy --target runpod --yes`, then `undeploy --all`, then
`deploy --mothership --target runpod --yes` (to converged), then `undeploy --all`; the times and
the GraphQL calls the fake received (the mothership's included), and the same ratio.

Usage: python bench/mothership.py [--runs 3] [--keep] [--target local|runpod]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from processes import CLI

REPO = Path(__file__).resolve().parent.parent


def _cli(args: list[str], env: dict[str, str], project: Path) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(
        [*CLI, *args, "--project", str(project)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return time.perf_counter() - started, proc.stdout


def _state(env: dict[str, str], project: Path) -> dict[str, dict[str, object]]:
    _, out = _cli(["status", "--no-probe", "--json"], env, project)
    return {e["name"]: e for e in json.loads(out)["endpoints"]}


def _reboot(env: dict[str, str], project: Path) -> float:
    """SIGKILL the mothership; seconds until the restarted one has reconciled."""
    from engine.home import Home
    from engine.identity import app_slug, canonical_path
    from engine.localcloud.store import Store

    home = Home(Path(env["FLASH_TUI_HOME"]))
    app = app_slug(canonical_path(project))
    store = Store(home.db_path)
    try:
        pid = int(store.get_endpoint(app, "mothership")["pid"])  # type: ignore[index]
        started = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            entry = (store.get_manifest(app, "production") or {}).get("resources", {})
            mine = entry.get("mothership") or {}
            if mine.get("pid") not in (None, pid) and mine.get("status") == "reconciled":
                return time.perf_counter() - started
            time.sleep(0.02)
    finally:
        store.close()
    raise SystemExit("the mothership did not reconcile again within 120 s")


def _figure(name: str, values: list[float]) -> str:
    return (
        f"{name:<34} median {statistics.median(values):6.2f} s "
        f"({min(values):.2f}–{max(values):.2f})"
    )


def _runpod(runs: int) -> int:
    """Direct vs mothership rounds against the RunPod contract fake."""
    sys.path.append(str(REPO / "tests"))
    from fakes.runpod import FakeRunPod
    from fakes.runpod_image import image_site

    scratch = Path(tempfile.mkdtemp(prefix="flash-bench-mothership-runpod-"))
    project = scratch / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", project)
    image_site(scratch / "fake" / "dataplane" / "image-site")  # made once, outside the rounds
    times: dict[str, list[float]] = {"direct": [], "mothership": [], "undeploy": []}
    calls: dict[str, list[int]] = {"direct": [], "mothership": [], "undeploy": []}
    by_operation: dict[str, int] = {}  # the mothership rounds' calls, by operation
    rp = ["--target", "runpod", "--yes"]
    try:
        with FakeRunPod(scratch / "fake") as fake:
            env = dict(os.environ, HOME=str(scratch), FLASH_TUI_HOME=str(scratch / "home"))
            env.update(fake.env())
            subprocess.run([*CLI, "build", str(project)], env=env, capture_output=True, check=True)
            for _ in range(runs):
                for figure, command in (
                    ("direct", ["deploy", *rp]),
                    ("undeploy", ["undeploy", "--all", *rp]),
                    ("mothership", ["deploy", "--mothership", *rp]),
                    ("undeploy", ["undeploy", "--all", *rp]),
                ):
                    mark = len(fake.graphql_calls)
                    seconds, _ = _cli(command, env, project)
                    times[figure].append(seconds)
                    calls[figure].append(len(fake.graphql_calls) - mark)
                    if figure == "mothership":
                        for call in fake.graphql_calls[mark:]:
                            by_operation[call.operation] = by_operation.get(call.operation, 0) + 1
                if fake.endpoints() or fake.templates():
                    raise SystemExit("undeploy --all left endpoints or templates on the fake")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"quickstart (4 endpoints) on the RunPod fake, {runs} runs, load average {load}")
    print(_figure("deploy --target runpod (direct)", times["direct"]))
    print(_figure("deploy --mothership (to converged)", times["mothership"]))
    print(_figure("undeploy --all", times["undeploy"]))
    for figure in ("direct", "mothership", "undeploy"):
        print(f"GraphQL calls, {figure}: median {statistics.median(calls[figure]):.0f}")
    per_round = ", ".join(f"{op} {n / runs:g}" for op, n in sorted(by_operation.items()))
    print(f"GraphQL calls of a mothership round, by operation: {per_round}")
    ratio = statistics.median(times["mothership"]) / statistics.median(times["direct"])
    print(f"mothership / direct: {ratio:.2f}×")
    return 0


def main() -> int:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--target", choices=("local", "runpod"), default="local")
    args = parser.parse_args()
    if args.target == "runpod":
        return _runpod(args.runs)
    scratch = Path(tempfile.mkdtemp(prefix="flash-bench-mothership-"))
    project = scratch / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", project)
    env = dict(os.environ, FLASH_TUI_HOME=str(scratch / "home"))
    direct: list[float] = []
    through: list[float] = []
    reboots: list[float] = []
    try:
        subprocess.run([*CLI, "build", str(project)], env=env, capture_output=True, check=True)
        _cli(["deploy", "--yes"], env, project)  # starts the cloud: not measured
        _cli(["undeploy", "--all", "--yes"], env, project)
        for _ in range(args.runs):
            seconds, _ = _cli(["deploy", "--yes"], env, project)
            direct.append(seconds)
            _cli(["undeploy", "--all", "--yes"], env, project)
            seconds, _ = _cli(["deploy", "--mothership", "--yes"], env, project)
            through.append(seconds)
            assert all(e["status"] == "healthy" for e in _state(env, project).values())
            reboots.append(_reboot(env, project))
            _cli(["undeploy", "--all", "--yes"], env, project)
    finally:
        subprocess.run([*CLI, "cloud", "stop"], env=env, capture_output=True)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(_figure("deploy (direct, 4 endpoints)", direct))
    print(_figure("deploy --mothership (to converged)", through))
    print(_figure("mothership reboot, same build", reboots))
    ratio = statistics.median(through) / statistics.median(direct)
    print(f"mothership / direct: {ratio:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
