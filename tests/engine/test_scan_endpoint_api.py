"""engine.scan on the `Endpoint` API (runpod_flash): decorators, routes, and their problems."""

from __future__ import annotations

from pathlib import Path

from projectfiles import diagnostic_codes, function_entry, scan_files

from runtime.resources import config_hash


def test_endpoint_api(tmp_path: Path) -> None:
    result = scan_files(
        tmp_path,
        {
            "main.py": """
                from runpod_flash import Endpoint as E, GpuGroup, CpuInstanceType

                api = E(name="api", cpu=CpuInstanceType.CPU3C_2_4, workers=(1, 3))

                @api.get("/a")
                def get_a(): ...

                @api.post("/b")
                async def post_b(x: int): ...

                @api.put("/c")
                def put_c(): ...

                @api.delete("/d")
                def delete_d(): ...

                @api.patch(path="/e")
                def patch_e(): ...

                @E(name="trainer", gpu=GpuGroup.AMPERE_80, workers=2, dependencies=["torch"])
                async def train(steps: int = 1): ...

                @E(gpu=GpuGroup.ANY)
                class Unnamed:
                    def run(self): ...

                queue = E(name="queue", workers=4)

                @queue
                def queued(): ...
                """,
        },
    )
    assert result.diagnostics == []
    m = result.manifest
    api = m["resources"]["api"]
    assert api["resource_type"] == "CpuLoadBalancerSlsResource"
    assert api["is_load_balanced"] is True and api["config_variable"] == "api"
    assert api["config"]["workersMin"] == 1 and api["config"]["instanceIds"] == ["CPU3C_2_4"]
    assert m["routes"]["api"] == {
        "DELETE /d": "delete_d",
        "GET /a": "get_a",
        "PATCH /e": "patch_e",
        "POST /b": "post_b",
        "PUT /c": "put_c",
    }
    trainer = m["resources"]["trainer"]
    assert trainer["resource_type"] == "ServerlessEndpoint"
    assert trainer["config"]["gpus"] == ["AMPERE_80"] and trainer["config"]["workersMax"] == 2
    assert function_entry(m, "train")["dependencies"] == ["torch"]
    # no name: the decorated object's name, as upstream
    assert m["resources"]["Unnamed"]["functions"][0]["is_class"] is True
    assert m["function_registry"]["queued"] == "queue"
    assert m["resources"]["queue"]["resource_type"] == "ServerlessEndpoint"
    resource_type, config = "ServerlessEndpoint", m["resources"]["queue"]["config"]
    assert m["resources"]["queue"]["config_hash"] == config_hash(resource_type, config)


def test_endpoint_routes_from_another_file(tmp_path: Path) -> None:
    # routes.py has none of the trigger words: found through the name `api` bound in app.py
    result = scan_files(
        tmp_path,
        {
            "app.py": "from runpod_flash import Endpoint\napi = Endpoint(name='api')\n",
            "routes.py": """
                from app import api

                @api.post("/x")
                def x(): ...
                """,
        },
    )
    assert result.diagnostics == []
    assert result.manifest["routes"] == {"api": {"POST /x": "x"}}
    assert result.manifest["resources"]["api"]["file"] == "app.py"


def test_reexported_decorator_alias_in_a_file_without_trigger_words(tmp_path: Path) -> None:
    result = scan_files(
        tmp_path,
        {
            "sdk.py": "from tetra_rp import remote as run_on, LiveServerless\n"
            "cfg = LiveServerless(name='w')\n",
            "use.py": """
                from sdk import run_on, cfg

                @run_on(cfg)
                def f(): ...
                """,
        },
    )
    assert result.manifest["function_registry"] == {"f": "w"}


def test_endpoint_problems(tmp_path: Path) -> None:
    result = scan_files(
        tmp_path,
        {
            "main.py": """
                from runpod_flash import Endpoint, GpuGroup

                both = Endpoint(name="both")

                @both
                def as_queue(): ...

                @both.post("/r")
                def as_route(): ...

                @Endpoint(name="bad", gpu=GpuGroup.ANY, cpu="cpu3c-1-2")
                def gpu_and_cpu(): ...

                nameless = Endpoint()

                @nameless.get("/n")
                def no_name(): ...
                """,
        },
    )
    codes = diagnostic_codes(result)
    assert "scan-endpoint-mixed" in codes
    assert codes.count("scan-endpoint-invalid") == 2
    assert "as_queue" in result.manifest["function_registry"]


def test_endpoint_route_problems(tmp_path: Path) -> None:
    result = scan_files(
        tmp_path,
        {
            "main.py": """
                import os
                from runpod_flash import Endpoint

                api = Endpoint(name="api")
                ROUTE = os.environ["ROUTE"]

                @api.get("/ping")
                def reserved(): ...

                @api.post(ROUTE)
                def unknown_path(): ...

                @api.post("/ok")
                def ok(): ...

                @api.put("/ok2")
                def ok2(): ...

                @api.put("/ok2")
                def again(): ...
                """
        },
    )
    found = sorted((d.code, d.line) for d in result.diagnostics)
    assert found == [
        ("manifest-duplicate-route", 20),
        ("manifest-invalid-path", 11),
        ("manifest-reserved-path", 8),
    ]
    assert result.manifest["routes"] == {"api": {"POST /ok": "ok", "PUT /ok2": "ok2"}}
