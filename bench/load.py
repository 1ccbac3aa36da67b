"""Benchmark: load on real workers on loopback — throughput, errors, lost jobs, memory.

A small two-endpoint project (a CPU queue-based endpoint `qbload` and a CPU load balancer
`gwload` whose `/cross` route awaits a `qbload` function) is built with `flash-tui build`
and served by real worker processes (`python -m runtime.worker`, auth and request log on),
started the way the local cloud starts them: one key per endpoint and an endpoint table file
(`FLASH_ENDPOINTS_FILE`) so the cross-endpoint call finds its target. Sections:

1. LB: `POST /compute` on `gwload`, --requests at concurrency --concurrency;
2. QB: `POST /runsync` on `qbload`, same load;
3. `/run` + `/status`: --jobs jobs submitted, then polled until every one is terminal (lost:
   a job the worker accepted and no longer knows; stuck: not terminal by the deadline);
4. cross-endpoint: `POST /cross` on `gwload` (an LB route calling a QB function: over HTTP
   first, then as frames on the `qbload` worker's frame socket once an answer named it: see
   `runtime.local_frames`) vs `POST /runsync` on `qbload` directly, same load, alternating
   order;
5. flood: --flood `/run` requests with ~133 KB bodies at once (concurrency 64) on a fresh
   `qbload` worker: accepted, 429s (with whatever backpressure the worker has), other
   errors, then the worker's peak RSS (VmHWM) once its queue has drained.

Each throughput figure is the median of --runs runs; the goal is printed next to each figure.
Worker RSS is printed before and after each section. The load generator is a minimal
keep-alive HTTP/1.1 client on raw asyncio streams (httpx's per-request overhead would cap
the figures before the workers do); it follows `Connection: close` by reconnecting. Every
loop is bounded in count and time; everything started is stopped at the end.

Usage: python bench/load.py [--quick] [--requests 20000] [--concurrency 64] [--runs 3]
       [--jobs 1000] [--flood 10000] [--cross-requests 5000] [--keep]

Figures, not tests: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import httpx
import psutil
from loadgen import (
    Reply,
    Sample,
    fmt,
    median,
    qb_body,
    request_bytes,
    run_requests,
    run_requests_httpx,
    sample_of,
)
from processes import CLI, clean_env, free_port, stop_process, wait_ready

REPO = Path(__file__).resolve().parent.parent
FLOOD_BODY_BYTES = 133 * 1024
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})

PROJECT_MAIN = '''
"""Load-bench app: a queue-based CPU endpoint and a load balancer that calls it."""

from tetra_rp import CpuLiveServerless, CpuLoadBalancerSlsResource, remote

qb_config = CpuLiveServerless(name="qbload")
gw_config = CpuLoadBalancerSlsResource(name="gwload", imageName="runpod/tetra-rp-lb-cpu:latest")


@remote(qb_config)
async def compute(numbers: list[float], scale: float = 1.0) -> dict:
    """The quickstart's /compute function, on the queue."""
    scaled = [n * scale for n in numbers]
    return {"count": len(scaled), "sum": sum(scaled), "max": max(scaled, default=None)}


@remote(qb_config)
async def ingest(blob: str) -> dict:
    """Takes a large argument (the flood's job)."""
    return {"size": len(blob)}


@remote(gw_config, method="POST", path="/compute")
async def lb_compute(numbers: list[float], scale: float = 1.0) -> dict:
    """The same function served by the load balancer itself."""
    scaled = [n * scale for n in numbers]
    return {"count": len(scaled), "sum": sum(scaled), "max": max(scaled, default=None)}


@remote(gw_config, method="POST", path="/cross")
async def cross(numbers: list[float], scale: float = 1.0) -> dict:
    """A cross-endpoint call: runs `compute` on qbload over HTTP."""
    return await compute(numbers, scale)
'''

ARGS = {"numbers": [1.5, 2.5, 3.0, 4.0], "scale": 2.0}
EXPECTED = {"count": 4, "sum": 22.0, "max": 8.0}


def flood_body() -> dict[str, Any]:
    """A `/run` body of about FLOOD_BODY_BYTES bytes."""
    probe = len(json.dumps(qb_body("ingest", "")))
    # base64 of the pickled string grows 4/3; the pickle adds a few bytes.
    blob = "x" * max(1, int((FLOOD_BODY_BYTES - probe) * 3 / 4) - 16)
    return qb_body("ingest", blob)


# ------------------------------------------------------------------------------ workers


@dataclass
class Worker:
    """One worker process under load."""

    resource: str
    proc: subprocess.Popen[bytes]
    port: int
    key: str = field(repr=False)

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    def headers(self) -> dict[str, str]:
        """Its auth header."""
        return {"Authorization": f"Bearer {self.key}"}

    def rss_mb(self) -> float:
        """Resident memory now, in MB."""
        return psutil.Process(self.proc.pid).memory_info().rss / 1e6

    def peak_rss_mb(self) -> float:
        """Peak resident memory over the process's life (Linux VmHWM), in MB."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
        except OSError:
            pass
        return float("nan")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far."""
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        stop_process(self.proc)


def build_project(workdir: Path) -> Path:
    """Write the bench project, build it with the CLI; returns the build directory."""
    project = workdir / "loadapp"
    project.mkdir()
    (project / "main.py").write_text(textwrap.dedent(PROJECT_MAIN).lstrip())
    env = clean_env()
    env["FLASH_TUI_HOME"] = str(workdir / "home")
    proc = subprocess.run(
        [*CLI, "build", str(project), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise SystemExit(f"build failed:\n{proc.stderr or proc.stdout}")
    return project / ".flash" / ".build"


def start_worker(
    build: Path, resource: str, workdir: Path, key: str, endpoints_file: Path, port: int
) -> Worker:
    """Start `python -m runtime.worker` for `resource` as the local cloud's supervisor does."""
    env = clean_env()
    env.update(
        {
            "FLASH_ENDPOINT_KEY": key,
            "FLASH_ENDPOINTS_FILE": str(endpoints_file),
            "FLASH_RESOURCE_NAME": resource,
            "PYTHONUNBUFFERED": "1",
        }
    )
    cmd = [sys.executable, "-m", "runtime.worker", "--build-dir", str(build)]
    cmd += ["--resource", resource, "--port", str(port)]
    with open(workdir / f"{resource}-{port}.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    worker = Worker(resource, proc, port, key)
    wait_ready(f"{worker.url}/ping", proc, statuses={200})
    return worker


# ------------------------------------------------------------------------------ load client


def measure(
    worker: Worker,
    path: str,
    body: Any,
    requests: int,
    concurrency: int,
    runs: int,
    client: str = "raw",
) -> Sample:
    """Median over `runs` runs of `requests` POSTs (after a short warm-up)."""
    payload = request_bytes("POST", path, body, worker.headers())

    def once(count: int) -> tuple[list[Reply], float]:
        if client == "httpx":
            url = f"{worker.url}{path}"
            return asyncio.run(run_requests_httpx(url, body, worker.headers(), count, concurrency))
        return asyncio.run(run_requests(worker.port, lambda _: payload, count, concurrency))

    once(max(64, requests // 20))  # warm-up
    return median([sample_of(*once(requests)) for _ in range(runs)])


# ------------------------------------------------------------------------------ sections


def section_run_status(worker: Worker, jobs: int, concurrency: int) -> dict[str, Any]:
    """Submit `jobs` /run jobs, then poll /status until each is terminal (bounded)."""
    submit = request_bytes("POST", "/run", qb_body("compute", **ARGS), worker.headers())
    replies, _ = asyncio.run(run_requests(worker.port, lambda _: submit, jobs, concurrency))
    ids = [json.loads(r.body)["id"] for r in replies if r.status == 200]
    rejected = len(replies) - len(ids) + (jobs - len(replies))
    pending = list(ids)
    lost = 0
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        batch = pending

        def make(i: int, batch: list[str] = batch) -> bytes:
            return request_bytes("GET", f"/status/{batch[i]}", None, worker.headers())

        results, _ = asyncio.run(run_requests(worker.port, make, len(batch), concurrency))
        pending = []
        for reply in results:
            job_id = batch[reply.index]
            if reply.status == 404:
                lost += 1  # accepted, and the worker no longer knows it
            elif reply.status != 200:
                pending.append(job_id)  # ask again
            elif json.loads(reply.body)["status"] not in TERMINAL:
                pending.append(job_id)
        answered = {batch[r.index] for r in results}
        pending += [i for i in batch if i not in answered]  # cut off by the deadline
        if pending:
            time.sleep(0.2)  # poll interval, as a client would
    return {
        "submitted": jobs,
        "accepted": len(ids),
        "rejected": rejected,
        "lost": lost,
        "stuck": len(pending),
    }


def section_flood(worker: Worker, count: int, concurrency: int) -> dict[str, Any]:
    """`count` /run requests with ~133 KB bodies; accepted/429/other, then peak RSS."""
    payload = request_bytes("POST", "/run", flood_body(), worker.headers())
    before = worker.rss_mb()
    replies, elapsed = asyncio.run(run_requests(worker.port, lambda _: payload, count, concurrency))
    statuses: dict[int, int] = {}
    for reply in replies:
        statuses[reply.status] = statuses.get(reply.status, 0) + 1
    drained = False
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and worker.proc.poll() is None:
        try:
            jobs = httpx.get(f"{worker.url}/health", headers=worker.headers(), timeout=10).json()
            if not jobs["jobs"]["inQueue"] and not jobs["jobs"]["inProgress"]:
                drained = True
                break
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    alive = worker.proc.poll() is None
    return {
        "requests": count,
        "body_bytes": len(payload),
        "accepted": statuses.get(200, 0),
        "http_429": statuses.get(429, 0),
        "other_errors": sum(n for s, n in statuses.items() if s not in (200, 429)),
        "seconds": elapsed,
        "drained": drained,
        "worker_alive": alive,
        "rss_before_mb": before,
        "rss_after_mb": worker.rss_mb() if alive else float("nan"),
        "peak_rss_mb": worker.peak_rss_mb() if alive else float("nan"),
    }


def sanity_check(gw: Worker, qb: Worker) -> None:
    """Every target answers the bench requests correctly before anything is timed."""
    for path in ("/compute", "/cross"):
        got = httpx.post(f"{gw.url}{path}", json=ARGS, headers=gw.headers(), timeout=30)
        if got.status_code != 200 or got.json() != EXPECTED:
            raise SystemExit(f"gwload {path} answered {got.status_code}: {got.text[:300]}")
    got = httpx.post(
        f"{qb.url}/runsync", json=qb_body("compute", **ARGS), headers=qb.headers(), timeout=30
    )
    value = cloudpickle.loads(base64.b64decode(got.json()["output"]["result"]))
    if value != EXPECTED:
        raise SystemExit(f"qbload /runsync answered {got.text[:300]}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with small counts")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--flood", type=int, default=10000)
    parser.add_argument("--cross-requests", type=int, default=5000)
    parser.add_argument("--only", default="lb,qb,jobs,cross,flood", help="sections to run")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator of the LB, QB and cross sections: the raw keep-alive client "
        "(servers are the bottleneck) or httpx (the client is, as in a typical Python caller)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.runs, args.jobs = 1000, 1, 200
        args.flood, args.cross_requests = 500, 500
    only = set(args.only.split(","))
    c = args.concurrency

    workdir = Path(tempfile.mkdtemp(prefix="flash-bench-load-"))
    workers: list[Worker] = []
    try:
        build = build_project(workdir)
        endpoints_file = workdir / "endpoints.json"
        ports = {"qbload": free_port(), "gwload": free_port()}
        keys = {name: secrets.token_urlsafe(32) for name in ports}
        table = {n: {"url": f"http://127.0.0.1:{p}", "key": keys[n]} for n, p in ports.items()}
        endpoints_file.write_text(json.dumps({"endpoints": table}))
        qb = start_worker(build, "qbload", workdir, keys["qbload"], endpoints_file, ports["qbload"])
        workers.append(qb)
        gw = start_worker(build, "gwload", workdir, keys["gwload"], endpoints_file, ports["gwload"])
        workers.append(gw)
        sanity_check(gw, qb)
        print(
            f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
            f" at the start; medians of {args.runs} runs; concurrency {c}; {args.client} client",
            flush=True,
        )

        def rss(label: str, worker: Worker, before: float, cpu: float | None = None) -> None:
            line = f"    {label} RSS {before:.0f} MB -> {worker.rss_mb():.0f} MB"
            if cpu is not None:
                sent = args.runs * args.requests + max(64, args.requests // 20)
                line += f"; CPU {(worker.cpu_seconds() - cpu) * 1000 / sent:.3f} ms per request"
            print(line, flush=True)

        if "lb" in only:
            before, cpu0 = gw.rss_mb(), gw.cpu_seconds()
            s = measure(gw, "/compute", ARGS, args.requests, c, args.runs, args.client)
            print(f"LB  POST /compute  x{args.requests}: {fmt(s)}  (goal: 0 errors)")
            rss("gwload", gw, before, cpu0)
        if "qb" in only:
            before, cpu0 = qb.rss_mb(), qb.cpu_seconds()
            s = measure(
                qb, "/runsync", qb_body("compute", **ARGS), args.requests, c, args.runs, args.client
            )
            print(f"QB  POST /runsync  x{args.requests}: {fmt(s)}  (goal: 0 errors)")
            rss("qbload", qb, before, cpu0)
        if "jobs" in only:
            before = qb.rss_mb()
            r = section_run_status(qb, args.jobs, c)
            print(
                f"QB  /run + /status x{args.jobs}: accepted {r['accepted']}, rejected "
                f"{r['rejected']}, lost {r['lost']}, stuck {r['stuck']}  (goal: 0 lost, 0 stuck)"
            )
            rss("qbload", qb, before)
        if "cross" in only:
            direct: list[Sample] = []
            crossed: list[Sample] = []
            cpu: dict[str, list[float]] = {"direct_qb": [], "cross_gw": [], "cross_qb": []}
            body = qb_body("compute", **ARGS)
            n = args.cross_requests
            for run in range(args.runs):
                # Alternate the order so drift does not favour one side.
                order = ("direct", "cross") if run % 2 == 0 else ("cross", "direct")
                for name in order:
                    gw0, qb0 = gw.cpu_seconds(), qb.cpu_seconds()
                    if name == "direct":
                        direct.append(measure(qb, "/runsync", body, n, c, 1, args.client))
                        cpu["direct_qb"].append(qb.cpu_seconds() - qb0)
                    else:
                        crossed.append(measure(gw, "/cross", ARGS, n, c, 1, args.client))
                        cpu["cross_gw"].append(gw.cpu_seconds() - gw0)
                        cpu["cross_qb"].append(qb.cpu_seconds() - qb0)
            a, b = median(crossed), median(direct)
            # Per request, warm-up included (n + n/20 requests per run).
            per = {k: statistics.median(v) * 1000 / (n + max(64, n // 20)) for k, v in cpu.items()}
            print(f"cross-endpoint x{n}, concurrency {c}:")
            print(f"    LB /cross -> QB  {fmt(a)}")
            print(f"    QB /runsync      {fmt(b)}")
            print(f"    ratio req/s {a.rps / b.rps:.2f}x  (goal >= 0.8)")
            print(
                f"    worker CPU per request: direct qbload {per['direct_qb']:.3f} ms; cross "
                f"gwload {per['cross_gw']:.3f} ms + qbload {per['cross_qb']:.3f} ms"
            )
        if "flood" in only:
            port = free_port()
            fresh = start_worker(build, "qbload", workdir, keys["qbload"], endpoints_file, port)
            workers.append(fresh)
            r = section_flood(fresh, args.flood, c)
            print(
                f"flood  /run x{r['requests']} of {r['body_bytes'] / 1024:.0f} KB "
                f"(fresh worker): accepted {r['accepted']}, 429 {r['http_429']}, other errors "
                f"{r['other_errors']} in {r['seconds']:.1f} s; drained {r['drained']}, "
                f"alive {r['worker_alive']}"
            )
            print(
                f"    RSS {r['rss_before_mb']:.0f} MB -> {r['rss_after_mb']:.0f} MB, "
                f"peak {r['peak_rss_mb']:.0f} MB  (goal: peak <= 400 MB, 0 other errors)"
            )
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"load average at the end {load} (other work on the machine lowers every figure)")
    finally:
        for worker in workers:
            worker.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
