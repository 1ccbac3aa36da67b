"""Flash projects for tests: small ones written from text (scanner, manifest, build, project
tests), and copies of the repository's examples.

No tests here; test modules import it (`from projectfiles import write_files`), as pytest puts
this directory on `sys.path`.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

from engine.scan import ScanResult, scan_project

_EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def copy_example(name: str, dest: Path) -> Path:
    """A fresh copy of `examples/<name>` at `dest` (no build, no caches); returns `dest`."""
    shutil.copytree(
        _EXAMPLES / name, dest, ignore=shutil.ignore_patterns(".flash", "__pycache__", "*.pyc")
    )
    return dest


def without_torch(project: Path) -> Path:
    """`project` told not to put torch into its GPU endpoints' environments, though its code
    imports it (guarded, as upstream's examples do): the suite installs nothing big; the
    tests marked `torch` are the ones that do. Returns `project`."""
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8") if pyproject.is_file() else ""
    if "[tool.flash]" in text:
        raise ValueError(f"{pyproject} already has a [tool.flash] table")
    pyproject.write_text(text + "\n[tool.flash]\ngpu-torch = false\n", encoding="utf-8")
    return project


def write_files(root: Path, files: dict[str, str]) -> Path:
    """Write each relative path's (dedented) text under `root`; returns `root`."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def env_worker(name: str, package: str, function: str = "value") -> str:
    """A module with one endpoint `name` whose `function` returns `package.VALUE`, imported
    from the endpoint's own environment (`dependencies=[package]`)."""
    return f"""
        from tetra_rp import CpuLiveServerless, remote

        cfg = CpuLiveServerless(name="{name}")


        @remote(resource_config=cfg, dependencies=["{package}"])
        def {function}() -> str:
            import {package}

            return {package}.VALUE
    """


def endpoint_module(functions: str, name: str = "w") -> str:
    """A module declaring the GPU endpoint `name` as `cfg` (lines 1-2, then a blank line), then
    `functions` (dedented): the `@remote(cfg)` functions a scanner test is about."""
    head = f'from tetra_rp import LiveServerless, remote\ncfg = LiveServerless(name="{name}")\n'
    body = textwrap.dedent(functions).lstrip("\n")
    return f"{head}\n{body}"


def scan_files(root: Path, files: dict[str, str]) -> ScanResult:
    """Write the files and scan them (with a fixed `generated_at`)."""
    return scan_project(write_files(root, files), generated_at="2020-01-01T00:00:00Z")


def function_entry(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """The manifest entry of function `name`, found through the function registry."""
    resource = manifest["function_registry"][name]
    (entry,) = [f for f in manifest["resources"][resource]["functions"] if f["name"] == name]
    return entry


def diagnostic_codes(result: ScanResult) -> list[str]:
    """The codes of a scan's diagnostics, in order."""
    return [d.code for d in result.diagnostics]


# Two endpoints, the gateway's code calling the worker's function: the call graph's smallest case.
_CALLS_WORKERS = """
from tetra_rp import CpuLiveServerless, remote

cpu = CpuLiveServerless(name="cpu_worker", workersMin=0, workersMax=1)


@remote(cpu)
async def process(text: str) -> str:
    return text.lower()
"""
_CALLS_GATEWAY = """
from tetra_rp import CpuLiveLoadBalancer, remote
from workers import process

gw = CpuLiveLoadBalancer(name="gateway", workersMin=0, workersMax=1)


@remote(gw, method="POST", path="/run")
async def run(text: str) -> dict:
    return {"text": await process(text)}
"""
CALLS_PROJECT = {"workers.py": _CALLS_WORKERS, "main.py": _CALLS_GATEWAY}


# A queue-based endpoint whose worker (not the build's import check: no FLASH_ENDPOINT_KEY there)
# holds its start until something listens on 127.0.0.1:{port}: a deploy can be caught mid-way.
_GATED_ENDPOINT = """
import os
import socket
import time

from tetra_rp import CpuLiveServerless, remote

if os.environ.get("FLASH_ENDPOINT_KEY"):
    _until = time.monotonic() + 120
    while time.monotonic() < _until:
        try:
            socket.create_connection(("127.0.0.1", {port}), 0.5).close()
            break
        except OSError:
            time.sleep(0.05)

config = CpuLiveServerless(name="{name}", workersMin=0, workersMax=1)


@remote(config)
async def work_{name}(x: int) -> int:
    return x + 1
"""
_PLAIN_ENDPOINT = """
from tetra_rp import CpuLiveServerless, remote

config = CpuLiveServerless(name="{name}", workersMin=0, workersMax=1)


@remote(config)
async def work_{name}(x: int) -> int:
    return x + 1
"""


# Upstream's example layout: an app in `main.py` and a GPU worker in a package, re-exported
# (the scanner's and the build's upstream-style tests add their own endpoints to it).
UPSTREAM_GPU_WORKER: dict[str, str] = {
    "main.py": """
        from fastapi import FastAPI

        from workers.gpu import gpu_router  # noqa: F401

        app = FastAPI()
        """,
    "workers/__init__.py": "",
    "workers/gpu/__init__.py": """
        from workers.gpu.endpoint import gpu_hello

        gpu_router = [gpu_hello]
        """,
    "workers/gpu/endpoint.py": """
        from tetra_rp import GpuGroup, LiveServerless, remote

        gpu_config = LiveServerless(name="gpu_worker", gpus=[GpuGroup.ANY], workersMax=3)


        @remote(resource_config=gpu_config)
        async def gpu_hello(input_data: dict) -> dict:
            return {"echo": input_data}
        """,
}


def gated_project(root: Path, names: list[str], gated: str, port: int) -> Path:
    """Queue-based endpoints `names`, one module each; `gated`'s worker waits for a listener on
    `port` before it is ready (see `_GATED_ENDPOINT`). Returns `root`."""
    for name in names:
        text = _GATED_ENDPOINT if name == gated else _PLAIN_ENDPOINT
        write_files(root, {f"{name}.py": text.replace("{name}", name).replace("{port}", str(port))})
    return root


def shouting_gateway(name: str, variable: str, doc: str) -> str:
    """A module (docstring `doc`) with a load balancer `name`, its config bound to `variable`,
    whose POST /hello calls `shout` of MOTHERSHIP_PROJECT's worker endpoint."""
    return f'''
        """{doc}"""

        from tetra_rp import CpuLoadBalancerSlsResource, remote
        from workers import shout

        {variable} = CpuLoadBalancerSlsResource(
            name="{name}", imageName="runpod/tetra-rp-lb-cpu:latest", workersMax=1
        )


        @remote({variable}, method="POST", path="/hello")
        async def hello(text: str) -> dict:
            return {{"echo": await shout(text)}}
        '''


# A load balancer calling a worker, and a third endpoint: what a mothership provisions (the
# local cloud's and RunPod's mothership tests).
MOTHERSHIP_PROJECT: dict[str, str] = {
    "main.py": shouting_gateway(
        "gateway",
        "gateway_config",
        "The gateway: a load balancer whose route calls the worker endpoint.",
    ),
    "workers.py": """
        from tetra_rp import CpuLiveServerless, remote

        worker_config = CpuLiveServerless(name="worker", workersMax=1)


        @remote(worker_config)
        def shout(text: str) -> str:
            return text.upper()
        """,
    "extra.py": """
        from tetra_rp import CpuLiveServerless, remote

        extra_config = CpuLiveServerless(name="extra", workersMax=1)


        @remote(extra_config)
        def one() -> int:
            return 1
        """,
}
MOTHERSHIP_CHILDREN = frozenset({"gateway", "worker", "extra"})


def late_gateway_files(gate: Path | None, wait_s: int) -> dict[str, str]:
    """A gateway whose route calls `late`, an endpoint slow to start: its worker waits at import,
    up to `wait_s` seconds, for the file `gate` (None: a `gate` file beside the module in its
    build copy) that the test holds back (the mothership boot tests)."""
    where = 'Path(__file__).with_name("gate")' if gate is None else f"Path({str(gate)!r})"
    late = _LATE_ENDPOINT.replace("{gate}", where).replace("{wait_s}", str(wait_s))
    return {"main.py": _LATE_GATEWAY, "late.py": late}


_LATE_GATEWAY = '''
    """The gateway: its route calls the late endpoint."""

    from late import late_echo
    from tetra_rp import CpuLoadBalancerSlsResource, remote

    gateway_config = CpuLoadBalancerSlsResource(
        name="gateway", imageName="runpod/tetra-rp-lb-cpu:latest", workersMax=1
    )


    @remote(gateway_config, method="POST", path="/late")
    async def late(text: str) -> dict:
        return {"late": await late_echo(text)}
    '''
_LATE_ENDPOINT = '''
    """An endpoint slow to start: its worker waits for the test to open the gate."""

    import os
    import time
    from pathlib import Path

    from tetra_rp import CpuLiveServerless, remote

    late_config = CpuLiveServerless(name="late", workersMax=1)

    if os.environ.get("FLASH_RESOURCE_NAME") == "late":
        gate = {gate}
        deadline = time.monotonic() + {wait_s}
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


    @remote(late_config)
    def late_echo(text: str) -> str:
        return f"late:{text}"
    '''

# Two children: `fine`, and `broken`, which imports at build time but raises at import in its
# worker (its env sets FAIL_AT_IMPORT): a child that never comes up.
FAILING_CHILD_PROJECT: dict[str, str] = {
    "main.py": """
        from tetra_rp import CpuLiveServerless, remote

        ok_config = CpuLiveServerless(name="fine", workersMax=1)


        @remote(ok_config)
        def fine() -> int:
            return 1
        """,
    "broken.py": '''
        """Imports at build time, fails in its worker (env set)."""

        import os

        from tetra_rp import CpuLiveServerless, remote

        broken_config = CpuLiveServerless(name="broken", env={"FAIL_AT_IMPORT": "1"})

        if os.environ.get("FAIL_AT_IMPORT"):
            raise RuntimeError("boom at import: the weights are missing")


        @remote(broken_config)
        def nothing() -> int:
            return 1
        ''',
}
