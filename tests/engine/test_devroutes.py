"""engine.dev.routes: upstream `flash run`'s route rule from a scanned project; the reload line."""

from __future__ import annotations

from pathlib import Path

from projectfiles import scan_files

from engine.dev.loop import Reload
from engine.dev.routes import dev_routes, file_prefix

ONE_CLASS = """
from runpod_flash import Endpoint


@Endpoint(name="model", cpu="cpu3c-1-2")
class Model:
    def predict(self, x: int) -> int:
        return x
"""

TWO_METHODS = """
from tetra_rp import CpuLiveServerless, remote

cfg = CpuLiveServerless(name="shared")


@remote(cfg)
class Tool:
    def a(self) -> int:
        return 1

    def b(self, y: str) -> str:
        return y
"""

LB_IN_PACKAGE = """
from runpod_flash import Endpoint

api = Endpoint(name="api", cpu="cpu3c-1-2")


@api.get("/items/{item_id}")
async def item(item_id: str) -> dict:
    return {"id": item_id}


@api.post("/")
async def root(x: int) -> dict:
    return {"x": x}
"""


def test_prefix_is_the_path_without_py() -> None:
    assert file_prefix("workers/gpu_worker.py") == "/workers/gpu_worker"
    assert file_prefix("main.py") == "/main"


def test_one_callable_answers_runsync_several_answer_by_name(tmp_path: Path) -> None:
    manifest = scan_files(
        tmp_path,
        {"one.py": ONE_CLASS, "pkg/__init__.py": "", "pkg/tools.py": TWO_METHODS},
    ).manifest
    routes = {r.path: r for r in dev_routes(manifest)}
    assert set(routes) == {"/one/runsync", "/pkg/tools/a/runsync", "/pkg/tools/b/runsync"}
    single = routes["/one/runsync"].call
    assert (single.endpoint, single.function, single.class_method) == ("model", "Model", "predict")
    assert routes["/pkg/tools/b/runsync"].call.class_method == "b"
    assert [p["name"] for p in routes["/pkg/tools/b/runsync"].params] == ["y"]
    assert all(r.method == "POST" and r.is_queue for r in routes.values())


def test_lb_routes_answer_under_the_file_prefix(tmp_path: Path) -> None:
    manifest = scan_files(tmp_path, {"api/v1.py": LB_IN_PACKAGE}).manifest
    routes = [(r.method, r.path, r.call.path) for r in dev_routes(manifest)]
    assert routes == [
        ("GET", "/api/v1/items/{item_id}", "/items/{item_id}"),
        ("POST", "/api/v1/", "/"),
    ]


def test_reload_line_names_what_reloaded_or_why_not() -> None:
    done = Reload(10.0, ("gpu_worker",), files=("gpu_worker.py",)).with_also("main.py")
    assert done.line(now=10.84) == "reloaded gpu_worker, main.py in 0.8 s"
    assert Reload(0.0, files=("x.py",)).line(now=1.0) == "no endpoint changed (x.py)"
    failed = Reload(0.0, files=("x.py",), error="x.py:3: syntax error")
    assert failed.line(now=1.0) == "not reloaded (x.py): x.py:3: syntax error"
    assert not failed.ok
