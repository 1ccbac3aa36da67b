"""engine.scan: decorator forms, resource classes, signatures, cross-module resolution,
project layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from projectfiles import (
    UPSTREAM_GPU_WORKER,
    diagnostic_codes,
    endpoint_module,
    function_entry,
    scan_files,
    write_files,
)

from engine.scan import Scanner, module_name, scan_project


def test_remote_forms_and_import_aliases(tmp_path: Path) -> None:
    result = scan_files(
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
    assert function_entry(m, "positional")["is_async"] is True
    assert function_entry(m, "keyword")["dependencies"] == ["numpy==2.0", "pillow"]
    assert function_entry(m, "via_module")["system_dependencies"] == ["ffmpeg"]
    model = function_entry(m, "Model")
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
    result = scan_files(
        tmp_path,
        {
            "main.py": endpoint_module("""
                @remote(cfg)
                def f(a, /, b: int = 1, *args: str, c, d: "X" = None, **kw) -> None:
                    pass
                """)
        },
    )
    sig = function_entry(result.manifest, "f")["signature"]
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
    result = scan_files(tmp_path, files)
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
    result = scan_files(
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
    assert function_entry(result.manifest, "rel_one")["module"] == "workers.gpu.relative"


def test_inline_config_and_lenient_reexport_of_the_sdk(tmp_path: Path) -> None:
    result = scan_files(
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
    assert function_entry(result.manifest, "inline_route")["http_method"] == "GET"


def test_names_not_from_the_sdk_are_not_flash(tmp_path: Path) -> None:
    result = scan_files(
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


def test_nested_and_bare_decorators_are_reported(tmp_path: Path) -> None:
    result = scan_files(
        tmp_path,
        {
            "main.py": endpoint_module("""
                def outer():
                    @remote(cfg)
                    def inner(): ...
                    return inner

                class Holder:
                    @remote(cfg)
                    class Inside: ...

                @remote
                def bare(): ...
                """)
        },
    )
    codes = diagnostic_codes(result)
    assert codes.count("scan-nested-function") == 2
    assert "scan-bare-decorator" in codes
    assert set(result.manifest["function_registry"]) == {"inner", "Inside"}


def test_module_names() -> None:
    assert module_name("a/b.py") == "a.b"
    assert module_name("pkg/__init__.py") == "pkg"  # upstream 0.20.0: "pkg.__init__"
    assert module_name("03_advanced_workers/endpoint.py") == "03_advanced_workers.endpoint"


def test_upstream_style_project(tmp_path: Path) -> None:
    result = scan_files(
        tmp_path,
        {
            **UPSTREAM_GPU_WORKER,
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
    gpu = function_entry(m, "gpu_hello")
    assert (gpu["module"], gpu["is_async"], gpu["is_class"]) == (
        "workers.gpu.endpoint",
        True,
        False,
    )
    assert function_entry(m, "in_init")["module"] == "workers.cpu"
    adv = m["resources"]["advanced_lb"]
    assert (adv["resource_type"], adv["is_load_balanced"], adv["is_live_resource"]) == (
        "CpuLiveLoadBalancer",
        True,
        True,
    )
    add = function_entry(m, "add")
    assert add["module"] == "03_advanced_workers.endpoint"
    assert (add["http_method"], add["http_path"]) == ("POST", "/sum")
    assert function_entry(m, "Status")["is_class"] is True
    assert m["routes"] == {"advanced_lb": {"GET /status": "Status", "POST /sum": "add"}}
    cpu = m["resources"]["cpu_worker"]
    assert (cpu["resource_type"], cpu["is_load_balanced"], cpu["is_live_resource"]) == (
        "CpuLiveServerless",
        False,
        True,
    )


def test_script_style_sibling_import(tmp_path: Path) -> None:
    result = scan_files(
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
    result = scan_files(
        tmp_path,
        {
            "pkg/m.py": endpoint_module(f"@remote(cfg)\n{head[form]}\n"),
        },
    )
    fn = function_entry(result.manifest, "thing")
    assert (fn["file"], fn["line"]) == ("pkg/m.py", 5)
    assert fn["is_async"] is (form == "async") and fn["is_class"] is (form == "class")


def test_scanner_accepts_a_path_or_project(tmp_path: Path) -> None:
    from engine.project import Project

    write_files(tmp_path, {"x.py": "y = 1\n"})
    assert Scanner(tmp_path).scan().manifest["resources"] == {}
    assert Scanner(Project.open(tmp_path)).scan().manifest["project_name"] == tmp_path.name


def test_examples_are_valid_upstream() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    for name in ("quickstart", "endpoint_api", "flash_dev", "tetra_app"):
        result = scan_project(root / name, generated_at="2020-01-01T00:00:00Z")
        assert result.diagnostics == [], (name, result.diagnostics)
