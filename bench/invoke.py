"""Benchmark: invoking endpoints served by real workers on loopback.

Compares, in the same run and on the same machine:

- LB: `POST /compute` on a flash worker (`python -m runtime.worker`, auth + request log on)
  vs a bare FastAPI + uvicorn app serving the same function with a pydantic body model;
- QB: `POST /runsync` on a flash worker vs the runpod SDK's local test API server
  (`--rp_serve_api`), both running the same generic handler on the same function.

Each (target, concurrency) is measured `--runs` times over `--requests` requests (after a
warm-up); the medians of p50/p99 latency and requests/s are printed with the ratios and the
goals (LB p50 <= 1.15x bare, LB req/s >= 0.85x bare, QB req/s >= 2x runpod). A trivial
ASGI app on the same uvicorn is measured too: its figures are the ceiling any app served by
uvicorn can reach on this machine. Workers run on uvloop + httptools (project dependencies),
as the runpod server and the bare app do when those are installed (they are, with runpod).

The load generator is a minimal keep-alive HTTP/1.1 client on raw asyncio streams, so the
client's own overhead stays small next to the servers'. Run it with an interpreter that has
both this project and `runpod` installed (see bench/requirements.txt), e.g.

    python -m venv /tmp/bv && /tmp/bv/bin/pip install -e . -r bench/requirements.txt
    /tmp/bv/bin/python bench/invoke.py [--requests 2000] [--runs 7] [--concurrency 1,16]

Without `runpod` the QB comparison is skipped (and said so). Figures, not tests: nothing here
asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import httpx
from loadgen import Sample, fmt, median, request_bytes, run_requests, sample_of
from loadgen import qb_body as loadgen_qb_body
from processes import clean_env, free_port, stop_process, wait_ready

REPO = Path(__file__).resolve().parent.parent
KEY = "bench-key"

USER_CODE = '''
async def compute(numbers: list[float], scale: float = 1.0) -> dict:
    """The quickstart's /compute function."""
    scaled = [n * scale for n in numbers]
    return {"count": len(scaled), "sum": sum(scaled), "max": max(scaled, default=None)}
'''

LB_HANDLER = """
from runtime.lb_app import create_lb_app
import userfns
app = create_lb_app({("POST", "/compute"): userfns.compute})
"""

QB_HANDLER = """
from runtime.qb_handler import create_handler
import userfns
handler = create_handler({"compute": userfns.compute})
"""

BARE_APP = """
from fastapi import FastAPI
from pydantic import BaseModel
import userfns

class ComputeRequest(BaseModel):
    numbers: list[float]
    scale: float = 1.0

app = FastAPI()

@app.post("/compute")
async def compute(body: ComputeRequest) -> dict:
    return await userfns.compute(body.numbers, body.scale)

if __name__ == "__main__":
    import sys
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False,
                log_level="warning")
"""

FLOOR_APP = """
# The cheapest possible ASGI app under uvicorn: the HTTP server's own per-request cost.
import sys
import uvicorn

BODY = b'{"ok":true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"11")]


async def app(scope, receive, send):
    if scope["type"] == "http":
        message = await receive()
        while message.get("more_body"):
            message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False,
                log_level="warning", lifespan="off")
"""

RUNPOD_WORKER = """
import runpod
from runtime.qb_handler import create_handler
import userfns

handler = create_handler({"compute": userfns.compute})

if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
"""

LB_BODY = {"numbers": [1.5, 2.5, 3.0, 4.0], "scale": 2.0}


def qb_body() -> dict[str, Any]:
    return loadgen_qb_body("compute", LB_BODY["numbers"], scale=LB_BODY["scale"])


@dataclass
class Server:
    """A server process under test."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    headers: dict[str, str]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        stop_process(self.proc)


def start(
    name: str, args: list[str], cwd: Path, port: int, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    child_env = clean_env()
    child_env["PYTHONPATH"] = os.pathsep.join([str(cwd), str(REPO)])
    child_env.update(env or {})
    with open(log, "wb") as out:
        return subprocess.Popen(args, cwd=cwd, env=child_env, stdout=out, stderr=subprocess.STDOUT)


def prepare(workdir: Path) -> None:
    (workdir / "userfns.py").write_text(textwrap.dedent(USER_CODE))
    (workdir / "handler_lbbench.py").write_text(textwrap.dedent(LB_HANDLER))
    (workdir / "handler_qbbench.py").write_text(textwrap.dedent(QB_HANDLER))
    (workdir / "bare_app.py").write_text(textwrap.dedent(BARE_APP))
    (workdir / "rp_worker.py").write_text(textwrap.dedent(RUNPOD_WORKER))
    (workdir / "floor_app.py").write_text(textwrap.dedent(FLOOR_APP))
    manifest = {
        "version": "1.0",
        "resources": {
            "lbbench": {"resource_type": "LoadBalancerSlsResource", "functions": []},
            "qbbench": {"resource_type": "LiveServerless", "functions": []},
        },
    }
    (workdir / "flash_manifest.json").write_text(json.dumps(manifest))


def start_servers(workdir: Path, with_runpod: bool) -> dict[str, Server]:
    servers: dict[str, Server] = {}
    auth = {"Authorization": f"Bearer {KEY}"}
    for resource in ("lbbench", "qbbench"):
        port = free_port()
        proc = start(
            resource,
            [
                sys.executable,
                "-m",
                "runtime.worker",
                "--build-dir",
                str(workdir),
                "--resource",
                resource,
                "--port",
                str(port),
            ],
            workdir,
            port,
            workdir / f"{resource}.log",
            {"FLASH_ENDPOINT_KEY": KEY},
        )
        servers[resource] = Server(resource, proc, port, auth)
    port = free_port()
    proc = start(
        "bare", [sys.executable, "bare_app.py", str(port)], workdir, port, workdir / "bare.log"
    )
    servers["bare"] = Server("bare", proc, port, {})
    port = free_port()
    proc = start(
        "floor", [sys.executable, "floor_app.py", str(port)], workdir, port, workdir / "floor.log"
    )
    servers["floor"] = Server("floor", proc, port, {})
    if with_runpod:
        port = free_port()
        proc = start(
            "runpod",
            [
                sys.executable,
                "rp_worker.py",
                "--rp_serve_api",
                "--rp_api_host",
                "127.0.0.1",
                "--rp_api_port",
                str(port),
            ],
            workdir,
            port,
            workdir / "runpod.log",
        )
        servers["runpod"] = Server("runpod", proc, port, {})
    for server in servers.values():
        wait_ready(f"http://127.0.0.1:{server.port}/ping", server.proc)
    return servers


def measure(server: Server, path: str, body: Any, requests: int, concurrency: int) -> Sample:
    """One run of `requests` POSTs over `concurrency` connections, after a short warm-up."""
    payload = request_bytes("POST", path, body, server.headers)
    asyncio.run(run_requests(server.port, lambda _: payload, max(50, requests // 10), concurrency))
    return sample_of(
        *asyncio.run(run_requests(server.port, lambda _: payload, requests, concurrency))
    )


def sanity_check(servers: dict[str, Server]) -> None:
    """Each target answers the benchmark request correctly before anything is timed."""
    expected = {"count": 4, "sum": 22.0, "max": 8.0}
    for name in ("lbbench", "bare"):
        s = servers[name]
        got = httpx.post(f"http://127.0.0.1:{s.port}/compute", json=LB_BODY, headers=s.headers)
        assert got.json() == expected, (name, got.text)
    for name in ("qbbench", "runpod"):
        if name not in servers:
            continue
        s = servers[name]
        got = httpx.post(f"http://127.0.0.1:{s.port}/runsync", json=qb_body(), headers=s.headers)
        output = got.json()["output"]
        value = cloudpickle.loads(base64.b64decode(output["result"]))
        assert value == expected, (name, got.text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    with_runpod = importlib.util.find_spec("runpod") is not None
    workdir = Path(tempfile.mkdtemp(prefix="flash-bench-invoke-"))
    prepare(workdir)
    servers = start_servers(workdir, with_runpod)
    results: dict[str, Any] = {"requests": args.requests, "runs": args.runs, "cpus": os.cpu_count()}
    try:
        sanity_check(servers)
        pairs = [("lb", "lbbench", "bare", "/compute", LB_BODY)]
        if with_runpod:
            pairs.append(("qb", "qbbench", "runpod", "/runsync", qb_body()))
        for kind, ours, theirs, path, body in pairs:
            for concurrency in levels:
                samples: dict[str, list[Sample]] = {ours: [], theirs: []}
                for run in range(args.runs):
                    # Alternate the order so drift (thermal, caches) does not favour one side.
                    order = (ours, theirs) if run % 2 == 0 else (theirs, ours)
                    for name in order:
                        samples[name].append(
                            measure(servers[name], path, body, args.requests, concurrency)
                        )
                a, b = median(samples[ours]), median(samples[theirs])
                results[f"{kind}_c{concurrency}"] = {
                    "flash": a.__dict__,
                    theirs: b.__dict__,
                    "p50_ratio": a.p50 / b.p50,
                    "rps_ratio": a.rps / b.rps,
                }
                if not args.json:
                    label = "LB  POST /compute " if kind == "lb" else "QB  POST /runsync "
                    print(f"{label} concurrency {concurrency:>2}")
                    print(f"    flash   {fmt(a)}")
                    print(f"    {theirs:<7} {fmt(b)}")
                    if kind == "lb":
                        print(
                            f"    ratio   p50 {a.p50 / b.p50:.2f}x (goal <= 1.15)   "
                            f"req/s {a.rps / b.rps:.2f}x (goal >= 0.85)"
                        )
                    else:
                        print(f"    ratio   req/s {a.rps / b.rps:.2f}x (goal >= 2.0)")
        for concurrency in levels:
            floor = median(
                [
                    measure(servers["floor"], "/runsync", qb_body(), args.requests, concurrency)
                    for _ in range(args.runs)
                ]
            )
            results[f"floor_c{concurrency}"] = floor.__dict__
            if not args.json:
                print(f"floor (trivial ASGI app on uvicorn) concurrency {concurrency:>2}")
                print(f"    floor   {fmt(floor)}")
        if not with_runpod:
            results["qb"] = "skipped: the runpod package is not installed"
            if not args.json:
                print("QB comparison skipped: `runpod` is not installed (bench/requirements.txt)")
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
