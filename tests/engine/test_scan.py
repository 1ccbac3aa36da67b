"""engine.scan: every decorator and config form, static evaluation, cross-module resolution."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from engine.scan import Scanner, module_name, scan_project
from runtime.confighash import config_hash


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def _scan(root: Path, files: dict[str, str]) -> Any:
    return scan_project(_write(root, files), generated_at="2020-01-01T00:00:00Z")


def _fn(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    resource = manifest["function_registry"][name]
    (entry,) = [f for f in manifest["resources"][resource]["functions"] if f["name"] == name]
    return entry


def _codes(result: Any) -> list[str]:
    return [d.code for d in result.diagnostics]


def test_remote_forms_and_import_aliases(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        {
            "a.py": """
                from tetra_rp import LiveServerless, remote

                cfg = LiveServerless(name="gpu")

                @remote(cfg)
                async def positional(x: int) -> int:
                    return x

                @remote(resource_config=cfg, dependencies=["numpy==2.0", "pillow"])
                def keyword(x):
                    return x
                """,
            "b.py": """
                from tetra_rp import remote as r
                from a import cfg

                @r(cfg)
                class Model:
                    def __init__(self, size: int = 3) -> None:
                        self.size = size

                    def predict(self, x: float) -> float:
                        return x

                    async def stream(self):
                        yield 1

                    def _private(self):
                        pass
                """,
            "c.py": """
                import runpod_flash as rf
                import tetra_rp

                cfg2 = rf.CpuLiveServerless(name="cpu")

                @rf.remote(cfg2)
                def via_module_alias():
                    pass

                @tetra_rp.remote(cfg2, system_dependencies=["ffmpeg"])
                def via_module():
                    pass
                """,
        },
    )
    m = result.manifest
    assert result.diagnostics == []
    assert m["function_registry"] == {
        "Model": "gpu",
        "keyword": "gpu",
        "positional": "gpu",
        "via_module": "cpu",
        "via_module_alias": "cpu",
    }
    assert _fn(m, "positional")["is_async"] is True
    assert _fn(m, "keyword")["dependencies"] == ["numpy==2.0", "pillow"]
    assert _fn(m, "via_module")["system_dependencies"] == ["ffmpeg"]
    model = _fn(m, "Model")
    assert model["is_class"] is True and model["class_methods"] == ["predict", "stream"]
    # Each method's parameters, without `self` (the route tester prefills from them).
    assert model["method_signatures"] == {
        "predict": [
            {"annotation": "float", "default": None, "kind": "POSITIONAL_OR_KEYWORD", "name": "x"}
        ],
        "stream": [],
    }
    assert model["signature"] == [
        {"annotation": "int", "default": "3", "kind": "POSITIONAL_OR_KEYWORD", "name": "size"}
    ]
    assert model["config_variable"] == "cfg" and model["module"] == "b"
    assert m["resources"]["cpu"]["resource_type"] == "CpuLiveServerless"


def test_signature_kinds(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        {
            "main.py": """
                from tetra_rp import LiveServerless, remote
                cfg = LiveServerless(name="w")

                @remote(cfg)
                def f(a, /, b: int = 1, *args: str, c, d: "X" = None, **kw) -> None:
                    pass
                """
        },
    )
    sig = _fn(result.manifest, "f")["signature"]
    assert [(p["name"], p["kind"], p["annotation"], p["default"]) for p in sig] == [
        ("a", "POSITIONAL_ONLY", None, None),
        ("b", "POSITIONAL_OR_KEYWORD", "int", "1"),
        ("args", "VAR_POSITIONAL", "str", None),
        ("c", "KEYWORD_ONLY", None, None),
        ("d", "KEYWORD_ONLY", '"X"', "None"),
        ("kw", "VAR_KEYWORD", None, None),
    ]


def test_every_resource_class_and_its_flags(tmp_path: Path) -> None:
    expected = {
        "LiveServerless": (False, True),
        "CpuLiveServerless": (False, True),
        "ServerlessEndpoint": (False, False),
        "CpuServerlessEndpoint": (False, False),
        "LoadBalancerSlsResource": (True, False),
        "LiveLoadBalancer": (True, True),
        "CpuLoadBalancerSlsResource": (True, False),
        "CpuLiveLoadBalancer": (True, True),
    }
    files = {}
    for i, cls in enumerate(expected):
        lb = expected[cls][0]
        route = f', method="POST", path="/r{i}"' if lb else ""
        files[f"m{i}.py"] = f"""
            from tetra_rp import {cls}, remote
            c{i}: {cls} = {cls}(name="r{i}", imageName="img:1")

            @remote(c{i}{route})
            def f{i}():
                pass
            """
    result = _scan(tmp_path, files)
    assert [d for d in result.diagnostics if d.severity == "error"] == []
    m = result.manifest
    for i, (cls, (lb, live)) in enumerate(expected.items()):
        res = m["resources"][f"r{i}"]
        assert (res["resource_type"], res["is_load_balanced"], res["is_live_resource"]) == (
            cls,
            lb,
            live,
        )
        fn = res["functions"][0]
        assert (fn["is_load_balanced"], fn["is_live_resource"]) == (lb, live)
        assert ("http_method" in fn) is lb
    # CPU load balancers are load-balanced and have routes (upstream 0.20.0: queue handler)
    assert m["routes"]["r6"] == {"POST /r6": "f6"}
    assert m["routes"]["r7"] == {"POST /r7": "f7"}


def test_configs_imported_across_modules(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        {
            "workers/__init__.py": "from .gpu.endpoint import gpu_config as exported\n",
            "workers/gpu/__init__.py": "",
            "workers/gpu/endpoint.py": """
                from tetra_rp import GpuGroup, LiveServerless
                gpu_config = LiveServerless(name="gpu_worker", gpus=[GpuGroup.ADA_24])
                """,
            "workers/cfg.py": """
                from tetra_rp.core.resources import CpuInstanceType, CpuLiveServerless
                if True:
                    cpu_config = CpuLiveServerless(
                        name="cpu_worker", instanceIds=[CpuInstanceType.CPU3C_1_2]
                    )
                """,
            "app/__init__.py": "",
            "app/absolute.py": """
                from tetra_rp import remote
                from workers.gpu.endpoint import gpu_config

                @remote(gpu_config)
                def absolute():
                    pass
                """,
            "app/dotted.py": """
                from tetra_rp import remote
                import workers.cfg as c
                import workers.gpu.endpoint

                @remote(c.cpu_config)
                def module_alias():
                    pass

                @remote(workers.gpu.endpoint.gpu_config)
                def full_dotted():
                    pass
                """,
            "workers/gpu/relative.py": """
                from tetra_rp import remote
                from .endpoint import gpu_config
                from ..cfg import cpu_config

                @remote(gpu_config)
                def rel_one():
                    pass

                @remote(cpu_config)
                def rel_two():
                    pass
                """,
            "reexport.py": """
                from tetra_rp import remote
                from workers import exported

                @remote(exported)
                def through_init():
                    pass
                """,
        },
    )
    assert result.diagnostics == []
    registry = result.manifest["function_registry"]
    assert registry == {
        "absolute": "gpu_worker",
        "full_dotted": "gpu_worker",
        "module_alias": "cpu_worker",
        "rel_one": "gpu_worker",
        "rel_two": "cpu_worker",
        "through_init": "gpu_worker",
    }
    gpu = result.manifest["resources"]["gpu_worker"]
    assert gpu["file"] == "workers/gpu/endpoint.py" and gpu["config_variable"] == "gpu_config"
    assert gpu["config"]["gpus"] == ["ADA_24"]
    assert _fn(result.manifest, "rel_one")["module"] == "workers.gpu.relative"


def test_inline_config_and_lenient_reexport_of_the_sdk(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        {
            "sdk.py": "from tetra_rp import remote, LiveLoadBalancer as LB\n",
            "main.py": """
                from sdk import remote, LB
                from tetra_rp import LiveServerless

                @remote(LiveServerless(name="inline_qb", workersMax=2))
                def inline():
                    pass

                @remote(LB(name="inline_lb"), method="get", path="/x")
                def inline_route():
                    pass
                """,
        },
    )
    assert result.diagnostics == []
    res = result.manifest["resources"]
    assert res["inline_qb"]["resource_type"] == "LiveServerless"
    assert res["inline_qb"]["config_variable"] is None
    assert res["inline_lb"]["is_load_balanced"] is True
    assert _fn(result.manifest, "inline_route")["http_method"] == "GET"


def test_names_not_from_the_sdk_are_not_flash(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        {
            "main.py": """
                from fastapi import FastAPI
                from mylib import remote, LiveServerless

                app = FastAPI()

                def remote2(x):
                    return x

                cfg = LiveServerless(name="fake")

                @remote(cfg)
                def not_flash():
                    pass

                @app.get("/x")
                def fastapi_route():
                    pass

                @property
                def prop(self):
                    pass
                """,
        },
    )
    assert result.manifest["resources"] == {} and result.diagnostics == []


def test_endpoint_api(tmp_path: Path) -> None:
    result = _scan(
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
    assert _fn(m, "train")["dependencies"] == ["torch"]
    # no name: the decorated object's name, as upstream
    assert m["resources"]["Unnamed"]["functions"][0]["is_class"] is True
    assert m["function_registry"]["queued"] == "queue"
    assert m["resources"]["queue"]["resource_type"] == "ServerlessEndpoint"
    resource_type, config = "ServerlessEndpoint", m["resources"]["queue"]["config"]
    assert m["resources"]["queue"]["config_hash"] == config_hash(resource_type, config)


def test_endpoint_routes_from_another_file(tmp_path: Path) -> None:
    # routes.py has none of the trigger words: found through the name `api` bound in app.py
    result = _scan(
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
    result = _scan(
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
    result = _scan(
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
    codes = _codes(result)
    assert "scan-endpoint-mixed" in codes
    assert codes.count("scan-endpoint-invalid") == 2
    assert "as_queue" in result.manifest["function_registry"]


def test_static_evaluation(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        {
            "consts.py": """
                BASE = 2
                ENV = {"MODE": "prod"}
                """,
            "shared/__init__.py": "",
            "shared/settings.py": "TIMEOUT = 30\nIMAGE = 'repo/' + 'img:1'\n",
            "main.py": """
                import os
                from consts import BASE, ENV
                from shared import settings
                from tetra_rp import (
                    CudaVersion, GpuGroup, LiveServerless, NetworkVolume, ServerlessEndpoint,
                    remote,
                )

                LOCAL = BASE * 2
                cfg = LiveServerless(
                    name="gpu",
                    gpus=[GpuGroup.ADA_24, GpuGroup.AMPERE_80],
                    workersMin=+0,
                    workersMax=LOCAL,
                    idleTimeout=settings.TIMEOUT,
                    env=ENV,
                    cudaVersions=(CudaVersion.V12_4,),
                    networkVolume=NetworkVolume(name="vol", size=50),
                )
                dyn = ServerlessEndpoint(
                    name="dyn",
                    imageName=settings.IMAGE,
                    workersMax=int(os.environ.get("MAX", "3")),
                    scalerValue=-1 * BASE,
                    env={"KEY": os.environ["KEY"]},
                    gpus=[GpuGroup.NOT_A_MEMBER],
                )

                @remote(cfg)
                def a(): ...

                @remote(dyn)
                def b(): ...
                """,
        },
    )
    gpu = result.manifest["resources"]["gpu"]
    assert gpu["config"] == {
        "cudaVersions": ["V12_4"],
        "env": {"MODE": "prod"},
        "gpus": ["ADA_24", "AMPERE_80"],
        "idleTimeout": 30,
        "name": "gpu",
        "networkVolume": {"name": "vol", "size": 50},
        "workersMax": 4,
        "workersMin": 0,
    }
    assert gpu["unresolved"] == [] and gpu["config_hash"] is not None
    dyn = result.manifest["resources"]["dyn"]
    assert dyn["config"]["imageName"] == "repo/img:1"
    assert dyn["config"]["scalerValue"] == -2
    assert dyn["config"]["workersMax"] == {"$unresolved": 'int(os.environ.get("MAX", "3"))'}
    assert dyn["config"]["env"] == {"KEY": {"$unresolved": 'os.environ["KEY"]'}}
    assert dyn["config"]["gpus"] == [{"$unresolved": "GpuGroup.NOT_A_MEMBER"}]
    assert dyn["unresolved"] == ["env", "gpus", "workersMax"]
    assert dyn["config_hash"] is None
    (info,) = [d for d in result.diagnostics if d.code == "manifest-config-unresolved"]
    assert info.severity == "info" and "workersMax" in info.message and info.line > 0


def test_config_hash_matches_the_sdk(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        {
            "main.py": """
                from tetra_rp import GpuGroup, LiveServerless, remote
                cfg = LiveServerless(name="w", gpus=[GpuGroup.ADA_24], workersMax=2)

                @remote(cfg)
                def f(): ...
                """
        },
    )
    from runtime import GpuGroup, LiveServerless

    live = LiveServerless(name="w", gpus=[GpuGroup.ADA_24], workersMax=2)
    assert result.manifest["resources"]["w"]["config_hash"] == live.config_hash


def test_invalid_config_is_a_warning_and_no_hash(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        {
            "main.py": """
                from tetra_rp import LiveServerless, remote
                cfg = LiveServerless(name="w", workersMin=5, workersMax=1)

                @remote(cfg)
                def f(): ...
                """
        },
    )
    (diag,) = result.diagnostics
    assert diag.code == "manifest-config-invalid" and "workersMin" in diag.message
    assert result.manifest["resources"]["w"]["config_hash"] is None


def test_nested_and_bare_decorators_are_reported(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        {
            "main.py": """
                from tetra_rp import LiveServerless, remote
                cfg = LiveServerless(name="w")

                def outer():
                    @remote(cfg)
                    def inner(): ...
                    return inner

                class Holder:
                    @remote(cfg)
                    class Inside: ...

                @remote
                def bare(): ...
                """
        },
    )
    codes = _codes(result)
    assert codes.count("scan-nested-function") == 2
    assert "scan-bare-decorator" in codes
    assert set(result.manifest["function_registry"]) == {"inner", "Inside"}


def test_config_without_literal_name(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        {
            "main.py": """
                import os
                from tetra_rp import LiveServerless, remote
                named_by_var = LiveServerless(name=os.environ["N"])

                @remote(named_by_var)
                def f(): ...

                @remote(LiveServerless(workersMax=1))
                def g(): ...
                """
        },
    )
    assert "named_by_var" in result.manifest["resources"]
    codes = _codes(result)
    assert "scan-unknown-config" in codes  # inline, no name at all


def test_module_names() -> None:
    assert module_name("a/b.py") == "a.b"
    assert module_name("pkg/__init__.py") == "pkg"  # upstream 0.20.0: "pkg.__init__"
    assert module_name("03_advanced_workers/endpoint.py") == "03_advanced_workers.endpoint"


def test_upstream_style_project(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        {
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
            "workers/cpu/__init__.py": """
                from tetra_rp import remote
                from workers.cpu.endpoint import cpu_config

                @remote(cpu_config)
                def in_init(): ...
                """,
            "workers/cpu/endpoint.py": """
                from tetra_rp import CpuInstanceType, CpuLiveServerless
                cpu_config = CpuLiveServerless(
                    name="cpu_worker", instanceIds=[CpuInstanceType.CPU3G_2_8]
                )
                """,
            "03_advanced_workers/__init__.py": "",
            "03_advanced_workers/endpoint.py": """
                import tetra_rp as tr
                from tetra_rp import CpuLiveLoadBalancer

                lb = CpuLiveLoadBalancer(name="advanced_lb")

                @tr.remote(lb, method="POST", path="/sum")
                async def add(a: int, b: int) -> int:
                    return a + b

                @tr.remote(lb, method="GET", path="/status")
                class Status: ...
                """,
        },
    )
    assert result.diagnostics == []
    m = result.manifest
    assert sorted(m["resources"]) == ["advanced_lb", "cpu_worker", "gpu_worker"]
    gpu = _fn(m, "gpu_hello")
    assert (gpu["module"], gpu["is_async"], gpu["is_class"]) == (
        "workers.gpu.endpoint",
        True,
        False,
    )
    assert _fn(m, "in_init")["module"] == "workers.cpu"
    adv = m["resources"]["advanced_lb"]
    assert (adv["resource_type"], adv["is_load_balanced"], adv["is_live_resource"]) == (
        "CpuLiveLoadBalancer",
        True,
        True,
    )
    add = _fn(m, "add")
    assert add["module"] == "03_advanced_workers.endpoint"
    assert (add["http_method"], add["http_path"]) == ("POST", "/sum")
    assert _fn(m, "Status")["is_class"] is True
    assert m["routes"] == {"advanced_lb": {"GET /status": "Status", "POST /sum": "add"}}
    cpu = m["resources"]["cpu_worker"]
    assert (cpu["resource_type"], cpu["is_load_balanced"], cpu["is_live_resource"]) == (
        "CpuLiveServerless",
        False,
        True,
    )


def test_script_style_sibling_import(tmp_path: Path) -> None:
    result = _scan(
        tmp_path,
        {
            "svc/configs.py": "from tetra_rp import LiveServerless\nc = LiveServerless(name='s')\n",
            "svc/run.py": """
                from tetra_rp import remote
                from configs import c

                @remote(c)
                def f(): ...
                """,
        },
    )
    assert result.manifest["function_registry"] == {"f": "s"}


@pytest.mark.parametrize("form", ["plain", "async", "class"])
def test_line_and_file_are_recorded(tmp_path: Path, form: str) -> None:
    head = {
        "plain": "def thing(): ...",
        "async": "async def thing(): ...",
        "class": "class thing: ...",
    }
    result = _scan(
        tmp_path,
        {
            "pkg/m.py": "from tetra_rp import LiveServerless, remote\n"
            "cfg = LiveServerless(name='w')\n\n"
            f"@remote(cfg)\n{head[form]}\n",
        },
    )
    fn = _fn(result.manifest, "thing")
    assert (fn["file"], fn["line"]) == ("pkg/m.py", 5)
    assert fn["is_async"] is (form == "async") and fn["is_class"] is (form == "class")


def test_scanner_accepts_a_path_or_project(tmp_path: Path) -> None:
    from engine.project import Project

    _write(tmp_path, {"x.py": "y = 1\n"})
    assert Scanner(tmp_path).scan().manifest["resources"] == {}
    assert Scanner(Project.open(tmp_path)).scan().manifest["project_name"] == tmp_path.name


def test_endpoint_route_problems(tmp_path: Path) -> None:
    result = _scan(
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


def test_non_live_resource_without_image_is_an_error_at_its_line(tmp_path: Path) -> None:
    # Upstream rejects it when the module is imported, so it must not pass here either.
    result = _scan(
        tmp_path,
        {
            "main.py": """
                from tetra_rp import CpuLoadBalancerSlsResource, ServerlessEndpoint, remote

                gateway_config = CpuLoadBalancerSlsResource(
                    name="gateway",
                    workersMax=2,
                )
                fine = ServerlessEndpoint(name="fine", imageName="me/img:1")

                @remote(gateway_config, method="POST", path="/x")
                async def x(): ...

                @remote(fine)
                def y(): ...
                """,
        },
    )
    errors = [d for d in result.diagnostics if d.severity == "error"]
    assert [(d.file, d.line, d.code) for d in errors] == [
        ("main.py", 4, "manifest-config-needs-image")
    ]
    message = errors[0].message
    assert "CpuLoadBalancerSlsResource 'gateway' needs imageName, template or templateId" in message
    assert "upstream rejects it" in message and "CpuLiveLoadBalancer" in message
    # one problem, one diagnostic: no second "invalid config" warning for the same cause
    assert [d for d in result.diagnostics if d.line == 4] == errors


def test_examples_are_valid_upstream() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    for name in ("quickstart", "endpoint_api"):
        result = scan_project(root / name, generated_at="2020-01-01T00:00:00Z")
        assert result.diagnostics == [], (name, result.diagnostics)
