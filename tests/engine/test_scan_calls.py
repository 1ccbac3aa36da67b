"""engine.scan: the call graph (which endpoint's code calls which other endpoint's functions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from projectfiles import scan_files, write_files

from engine.callgraph import CallEdge
from engine.scan import Scanner

WORKERS = """
from tetra_rp import CpuLiveServerless, LiveServerless, remote

cpu = CpuLiveServerless(name="cpu_worker")
gpu = LiveServerless(name="gpu_worker")


@remote(cpu)
async def process(text: str) -> str:
    return text.lower()


@remote(cpu)
def count(text: str) -> int:
    return len(text)


@remote(gpu)
async def infer(x: str) -> list[float]:
    return [1.0]


@remote(cpu)
class Analyzer:
    def __init__(self, n: int = 1) -> None:
        self.n = n

    async def top(self, text: str) -> list[str]:
        return text.split()[: self.n]
"""

GATEWAY = """
import asyncio

import workers
from tetra_rp import CpuLiveLoadBalancer, remote
from workers import Analyzer, infer, process

gw = CpuLiveLoadBalancer(name="gateway")


def local_helper(x: str) -> str:
    return x


@remote(gw, method="POST", path="/run")
async def run(text: str) -> dict:
    cleaned = await process(local_helper(text))
    return {"v": await infer(cleaned)}


@remote(gw, method="POST", path="/both")
async def both(text: str) -> list:
    return await asyncio.gather(process(text), infer(text))


@remote(gw, method="POST", path="/count")
async def count_words(text: str) -> int:
    return await workers.count(text)


@remote(gw, method="POST", path="/top")
async def top(text: str) -> list:
    analyzer = Analyzer(n=2)
    return await analyzer.top(text)
"""

# A module with one GPU endpoint's function, for the tests that call it through re-exports.
GPU_EMBED = """
from tetra_rp import LiveServerless, remote

gpu = LiveServerless(name="gpu")


@remote(gpu)
async def embed(text: str) -> list[float]:
    return [0.0]
"""


def _edges(result: object) -> set[tuple[str, str, str, str, str, int]]:
    return {
        (e.caller, e.caller_function, e.callee, e.callee_function, e.file, e.line)
        for e in result.calls.edges  # type: ignore[attr-defined]
    }


def test_direct_awaited_module_gather_and_instance_method_calls(tmp_path: Path) -> None:
    result = scan_files(tmp_path, {"workers.py": WORKERS, "main.py": GATEWAY})
    assert not result.errors
    assert _edges(result) == {
        ("gateway", "run", "cpu_worker", "process", "main.py", 17),
        ("gateway", "run", "gpu_worker", "infer", "main.py", 18),
        ("gateway", "both", "cpu_worker", "process", "main.py", 23),
        ("gateway", "both", "gpu_worker", "infer", "main.py", 23),
        ("gateway", "count_words", "cpu_worker", "count", "main.py", 28),
        ("gateway", "top", "cpu_worker", "Analyzer.top", "main.py", 34),
    }
    graph = result.calls
    assert graph.callees("gateway") == {
        "cpu_worker": ("Analyzer.top", "count", "process"),
        "gpu_worker": ("infer",),
    }
    assert graph.callers("cpu_worker") == {"gateway": ("Analyzer.top", "count", "process")}
    assert graph.callees("cpu_worker") == {}
    resources = result.manifest["resources"]
    assert resources["gateway"]["makes_remote_calls"] is True
    assert resources["cpu_worker"]["makes_remote_calls"] is False
    assert resources["gpu_worker"]["makes_remote_calls"] is False


def test_same_endpoint_calls_and_plain_functions_are_not_edges(tmp_path: Path) -> None:
    result = scan_files(
        tmp_path,
        {
            "app.py": """
            from tetra_rp import CpuLiveServerless, remote

            cfg = CpuLiveServerless(name="solo")


            def helper(x):
                return x


            @remote(cfg)
            async def inner(x: int) -> int:
                return helper(x)


            @remote(cfg)
            async def outer(x: int) -> int:
                return await inner(x) + len(str(x))
            """
        },
    )
    assert result.calls.edges == ()
    assert result.manifest["resources"]["solo"]["makes_remote_calls"] is False


def test_calls_from_a_class_method_through_a_package_reexport(
    tmp_path: Path,
) -> None:
    result = scan_files(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.impl import embed as embed_text\n",
            "pkg/impl.py": GPU_EMBED,
            "service.py": """
            from tetra_rp import CpuLiveServerless, remote
            from pkg import embed_text

            cpu = CpuLiveServerless(name="cpu")


            @remote(cpu)
            class Pipeline:
                async def run(self, text: str) -> list[float]:
                    return await embed_text(text)
            """,
            "client.py": """
            from tetra_rp import CpuLiveLoadBalancer, remote
            from service import Pipeline

            lb = CpuLiveLoadBalancer(name="front")


            @remote(lb, method="POST", path="/go")
            async def go(text: str) -> list[float]:
                return await Pipeline().run(text)
            """,
        },
    )
    assert _edges(result) == {
        ("cpu", "Pipeline.run", "gpu", "embed", "service.py", 11),
        ("front", "go", "cpu", "Pipeline.run", "client.py", 10),
    }


@pytest.mark.parametrize(
    "package",
    [
        pytest.param(
            {
                "models/__init__.py": "from models.gpu import *\nfrom models.loop import *\n",
                "models/gpu.py": GPU_EMBED,
                "models/loop.py": "from models import *\n",  # back to the package: a cycle
            },
            id="star-reexport-and-star-import-cycle",
        ),
        pytest.param(
            # The from-import binds the function over the submodule of the same name.
            {
                "models/__init__.py": "from models.embed import embed\n",
                "models/embed.py": GPU_EMBED,
            },
            id="from-import-named-as-its-own-submodule",
        ),
    ],
)
def test_calls_through_a_package_that_reexports_the_function(
    tmp_path: Path, package: dict[str, str]
) -> None:
    result = scan_files(
        tmp_path,
        {
            **package,
            "app.py": """
            from tetra_rp import CpuLiveServerless, remote
            import models
            from models import embed

            cpu = CpuLiveServerless(name="cpu")


            @remote(cpu)
            async def first(text: str) -> list[float]:
                return await embed(text)


            @remote(cpu)
            async def second(text: str) -> list[float]:
                return await models.missing(text)
            """,
        },
    )
    # `missing` is bound nowhere (in a star cycle, the search ends there) and makes no edge.
    assert _edges(result) == {("cpu", "first", "gpu", "embed", "app.py", 11)}


def test_edges_follow_edits_incrementally(tmp_path: Path) -> None:
    write_files(tmp_path, {"workers.py": WORKERS, "main.py": GATEWAY})
    scanner = Scanner(tmp_path)
    assert len(scanner.scan().calls.edges) == 6
    # The gateway stops calling the GPU worker: only main.py is resolved again.
    text = (tmp_path / "main.py").read_text().replace("await infer(cleaned)", "cleaned")
    text = text.replace("process(text), infer(text)", "process(text)")
    (tmp_path / "main.py").write_text(text)
    result = scanner.scan(changed_paths=[tmp_path / "main.py"])
    assert result.stats.resolved == 1
    assert result.calls.callees("gateway") == {"cpu_worker": ("Analyzer.top", "count", "process")}
    # `infer` leaves the GPU endpoint for the CPU one: the edge follows the callee's file.
    workers = (tmp_path / "workers.py").read_text().replace("@remote(gpu)", "@remote(cpu)")
    text = text.replace("return await asyncio.gather(process(text))", "return [await infer(text)]")
    (tmp_path / "main.py").write_text(text)
    (tmp_path / "workers.py").write_text(workers)
    result = scanner.scan(changed_paths=[tmp_path / "main.py", tmp_path / "workers.py"])
    assert result.calls.callees("gateway") == {
        "cpu_worker": ("Analyzer.top", "count", "infer", "process")
    }
    # Nothing changed: the graph comes from the last scan.
    again = scanner.scan(changed_paths=[])
    assert again.calls == result.calls and again.stats.resolved == 0


def test_scan_json_and_text_show_the_calls(tmp_path: Path) -> None:
    write_files(tmp_path, {"workers.py": WORKERS, "main.py": GATEWAY})
    cli = [str(Path(sys.executable).parent / "flash-tui"), "scan", str(tmp_path)]
    done = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["resources"]["gateway"]["makes_remote_calls"] is True
    assert (
        CallEdge("gateway", "cpu_worker", "top", "Analyzer.top", "main.py", 34).to_json()
        in (out["calls"])
    )
    assert len(out["calls"]) == 6
    text = subprocess.run(cli, capture_output=True, text=True, timeout=120, env=_wide_env())
    assert text.returncode == 0, text.stderr
    assert "calls: cpu_worker (Analyzer.top, count, process), gpu_worker (infer)" in text.stdout


def _wide_env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200"}
