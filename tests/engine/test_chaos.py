"""Chaos: SIGKILL a worker, the local cloud or the CLI at a random moment of a deploy, an update
or an undeploy, then check that nothing is lost or left behind.

Each iteration runs `flash-tui deploy|undeploy` on a small two-endpoint project (a queue-based
CPU endpoint and a load balancer calling it), kills one of the three kinds of process (or none)
after a random delay, and then:

- re-runs the asked command to completion and checks that the endpoints converge to what was
  asked (all healthy after a deploy or an update, none deployed after an undeploy);
- the store (SQLite) is consistent: one record per endpoint, a running record's pid is alive
  and is that endpoint's worker, every referenced build is recorded and on disk;
- no unknown process runs: every worker started from this home is the one the store knows.

The RNG is seeded (`FLASH_CHAOS_SEED`, else random) and every failure message carries the
seed and the iteration. The plan first covers every command (deploy, update, undeploy) x every
kill (worker, cloud, CLI), each once, in a seeded order with seeded random delays: the default
`test_chaos` runs exactly those 9 iterations, so every kind of kill is checked on every command
in every run. The soak, `test_chaos_soak` (opt-in: `pytest -m soak`), runs the same 9 and then
random ones, nothing killed included, up to 30 iterations (`FLASH_CHAOS_ITERATIONS=N` runs N).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from headless import CLI
from waiting import wait_for

from engine.home import Home
from engine.identity import app_slug, canonical_path
from engine.localcloud.discovery import read_state

T = TypeVar("T")
FOLDER = "chaosapp"
ACTIONS = ("deploy", "update", "undeploy")
KILLS = ("worker", "cloud", "cli")
# Every command x every kill, each once: the default run's plan and the soak's first part.
COVERING = len(ACTIONS) * len(KILLS)
SOAK_ITERATIONS = 30
ENDPOINTS = {"work", "front"}
RUNNING = frozenset({"deploying", "healthy", "unhealthy"})  # states that have a worker

MAIN = """
from tetra_rp import CpuLiveServerless, CpuLoadBalancerSlsResource, remote

work_config = CpuLiveServerless(name="work", workersMax={workers})
front_config = CpuLoadBalancerSlsResource(name="front", imageName="me/front:1", workersMax=1)


@remote(work_config)
async def double(x: int) -> int:
    return 2 * x


@remote(front_config, method="POST", path="/double")
async def front(x: int) -> dict:
    return {{"y": await double(x)}}
"""


class Chaos:
    """The project, its home and the CLI, with the checks of one iteration."""

    def __init__(self, root: Path, seed: int) -> None:
        self.project = root / FOLDER
        self.app = app_slug(canonical_path(self.project))
        self.project.mkdir(parents=True)
        self.home = Home(root / "home")
        self.rng = random.Random(seed)
        self.seed = seed
        self.workers = 1
        self.env = dict(os.environ)
        self.env.update(
            {
                "FLASH_TUI_HOME": str(self.home.root),
                "FLASH_LOCALCLOUD_BACKOFF_BASE": "0.1",
                "FLASH_LOCALCLOUD_BACKOFF_MAX": "1",
            }
        )
        self.write_project()

    def write_project(self) -> None:
        """The project's code with the current config (an update changes `workersMax`)."""
        (self.project / "main.py").write_text(MAIN.format(workers=self.workers).lstrip())

    def command(self, action: str) -> list[str]:
        """The CLI command line of an action."""
        if action == "undeploy":
            return [*CLI, "undeploy", "--all", "--yes", "--json", "--project", str(self.project)]
        return [*CLI, "deploy", "--yes", "--json", "--project", str(self.project)]

    def run(self, action: str, *, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        """Run an action to completion."""
        return subprocess.run(
            self.command(action),
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    # -- processes ---------------------------------------------------------------------------

    def home_workers(self) -> dict[int, psutil.Process]:
        """Every live worker process started from a build of this home."""
        root = str(self.home.root / "apps") + os.sep
        found: dict[int, psutil.Process] = {}
        for process in psutil.process_iter(["pid", "cmdline", "status"]):
            cmdline = process.info.get("cmdline") or []
            if "runtime.worker" not in cmdline or "--build-dir" not in cmdline:
                continue
            if process.info.get("status") == psutil.STATUS_ZOMBIE:
                continue
            index = cmdline.index("--build-dir") + 1
            if index < len(cmdline) and cmdline[index].startswith(root):
                found[process.pid] = process
        return found

    def kill(self, victim: str, cli: subprocess.Popen[str]) -> str:
        """SIGKILL one process of kind `victim`; says what was killed."""
        if victim == "cli":
            cli.kill()
            return f"cli pid {cli.pid}"
        if victim == "cloud":
            info = _once_found(lambda: read_state(self.home, remove_stale=False), cli)
            if info is None:
                return "cloud (not running)"
            try:
                os.kill(info.pid, signal.SIGKILL)
            except ProcessLookupError:
                return "cloud (already gone)"
            return f"cloud pid {info.pid}"
        if victim == "worker":
            pids = _once_found(lambda: sorted(self.home_workers()), cli)
            if not pids:
                return "worker (none running)"
            pid = self.rng.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return "worker (already gone)"
            return f"worker pid {pid}"
        return "nothing"

    # -- checks ------------------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """The store's endpoint records of the app (read-only)."""
        with sqlite3.connect(f"file:{self.home.db_path}?mode=ro", uri=True, timeout=10) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM endpoints WHERE app = ?", (self.app,)).fetchall()
            builds = {
                row["build_id"]
                for row in conn.execute("SELECT build_id FROM builds WHERE app = ?", (self.app,))
            }
        result = [dict(row) for row in rows]
        for record in result:
            record["_build_known"] = record["build_id"] is None or record["build_id"] in builds
        return result

    def check_store_and_processes(self, where: str) -> None:
        """The store is consistent and every worker of this home is known to it."""
        records = self.records()
        names = [r["name"] for r in records]
        assert len(names) == len(set(names)), f"{where}: duplicate records {names}"
        workers = self.home_workers()
        known: set[int] = set()
        for r in records:
            label = f"{where}: {r['name']} ({r['status']}, pid {r['pid']})"
            assert r["_build_known"], f"{label}: build {r['build_id']} is not recorded"
            if r["build_path"] and r["status"] in RUNNING:
                assert Path(r["build_path"]).is_dir(), f"{label}: build copy missing"
            if r["status"] in RUNNING:
                assert r["pid"] in workers, f"{label}: its worker is not running"
                cmdline = workers[r["pid"]].cmdline()
                resource = cmdline[cmdline.index("--resource") + 1]
                assert resource == r["name"], f"{label}: pid serves {resource}"
                marker = workers[r["pid"]].environ().get("FLASH_LOCALCLOUD_WORKER")
                assert marker == f"{self.app}/{r['name']}", f"{label}: worker marker {marker!r}"
                known.add(r["pid"])
            else:
                assert r["pid"] is None or r["pid"] not in workers, f"{label}: stale pid runs"
        # A worker an update replaced drains for the cloud's drain grace, then stops: it is
        # recorded nowhere meanwhile. Any other unknown worker never goes.
        unknown = {pid: workers[pid] for pid in set(workers) - known}

        def gone() -> bool:
            return not any(_running(p) for p in unknown.values())

        wait_for(gone, 20, f"{where}: workers unknown to the store: {sorted(unknown)}")

    def check_converged(self, action: str, where: str) -> None:
        """Every endpoint is what `action` asked for, per `status --json`."""
        wanted = "not_deployed" if action == "undeploy" else "healthy"

        def statuses() -> dict[str, str] | None:
            proc = subprocess.run(
                [*CLI, "status", "--json", "--no-probe", "--project", str(self.project)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
            )
            found = {e["name"]: e["status"] for e in json.loads(proc.stdout)["endpoints"]}
            return found if found == dict.fromkeys(ENDPOINTS, wanted) else None

        wait_for(statuses, 60, f"{where}: endpoints {wanted}", interval=0.1, retry_errors=True)

    # -- one iteration -----------------------------------------------------------------------

    def iteration(self, index: int, action: str, victim: str) -> str:
        """One action with one kill after a random delay, then the checks; returns what
        happened."""
        delay = round(self.rng.uniform(0.0, 2.5), 2)
        if action == "update":
            self.workers = 1 + self.workers % 3
            self.write_project()
        cli = subprocess.Popen(
            self.command(action),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(delay)  # the random moment of the kill, not a wait for a condition
            killed = self.kill(victim, cli)
            cli.communicate(timeout=180)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.communicate(timeout=30)
        where = f"seed {self.seed} iteration {index}: {action}, killed {killed} after {delay}s"
        if self.home.db_path.exists():
            # Right after the kill, before anything repairs it: readable, one record each.
            names = [r["name"] for r in self.records()]
            assert len(names) == len(set(names)), f"{where}: duplicate records {names}"
        proc = self.run(action)
        assert proc.returncode == 0, f"{where}: re-run failed:\n{proc.stdout}\n{proc.stderr}"
        self.check_converged(action, where)
        self.check_store_and_processes(where)
        return where


def plan(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """`count` (action, victim) pairs: every action x kill once in an order drawn from `rng`,
    then random ones (nothing killed among them)."""
    covering = [(action, victim) for action in ACTIONS for victim in KILLS]
    # An undeploy kills something only when something is deployed: in the covering part, none
    # comes first or right after another undeploy (each iteration converges to what it asked).
    while True:
        rng.shuffle(covering)
        actions = ["undeploy", *(action for action, _ in covering)]
        if all(not (a == b == "undeploy") for a, b in itertools.pairwise(actions)):
            break
    extra = [
        (rng.choice(ACTIONS), rng.choice([*KILLS, "none"]))
        for _ in range(max(0, count - len(covering)))
    ]
    return (covering + extra)[:count]


def _once_found(find: Callable[[], T], cli: subprocess.Popen[str]) -> T:
    """What `find()` finds once it finds something, or finds when the CLI has ended: a deploy
    starts the cloud and the workers, and a kill is to land on them while the CLI runs."""
    wait_for(lambda: find() or cli.poll() is not None, 180, "something to kill, or the CLI's end")
    return find()


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Chaos]:
    """A chaos rig on a fresh home; its cloud and workers are stopped whatever happens."""
    from engine.localcloud.discovery import kill_home_workers, stop_cloud

    seed = int(os.environ.get("FLASH_CHAOS_SEED") or random.SystemRandom().randrange(1 << 30))
    rig = Chaos(tmp_path, seed)
    try:
        yield rig
    finally:
        try:
            stop_cloud(rig.home, timeout=10.0)
        finally:
            kill_home_workers(rig.home)
            shutil.rmtree(rig.project / ".flash", ignore_errors=True)


def _run_iterations(chaos: Chaos, count: int) -> None:
    for index, (action, victim) in enumerate(plan(chaos.rng, count)):
        print(chaos.iteration(index, action, victim), flush=True)


def test_chaos_plan_covers_every_kill_on_every_command() -> None:
    """Whatever the seed, the default run's plan is every command x every kill, each once, and
    the soak's starts with it."""
    for seed in range(20):
        soak = plan(random.Random(seed), SOAK_ITERATIONS)
        assert len(soak) == SOAK_ITERATIONS
        assert soak[:COVERING] == plan(random.Random(seed), COVERING), seed
        covering = plan(random.Random(seed), COVERING)
        assert sorted(covering) == sorted((a, k) for a in ACTIONS for k in KILLS), seed
        actions = ["undeploy", *(action for action, _ in covering)]
        assert not any(a == b == "undeploy" for a, b in itertools.pairwise(actions)), seed


@pytest.mark.timeout(600)
def test_chaos(chaos: Chaos) -> None:
    """Every command (deploy, update, undeploy) x every kill (worker, cloud, CLI), once each."""
    _run_iterations(chaos, COVERING)


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_chaos_soak(chaos: Chaos) -> None:
    """The covering plan, then random kills: 30 iterations (FLASH_CHAOS_ITERATIONS for more)."""
    _run_iterations(chaos, int(os.environ.get("FLASH_CHAOS_ITERATIONS") or SOAK_ITERATIONS))
