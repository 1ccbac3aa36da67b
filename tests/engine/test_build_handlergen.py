"""engine.handlergen: handler text per resource kind, determinism, subprocess import check."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from engine.handlergen import (
    check_handler_imports,
    generate_handlers,
    handler_filename,
    render_handler,
    resource_flags,
)


def _fn(name: str, module: str, method: str | None = None, path: str | None = None) -> dict:
    entry: dict[str, Any] = {"name": name, "module": module, "is_async": False, "is_class": False}
    if method:
        entry.update(http_method=method, http_path=path)
    return entry


def _registry(text: str, name: str) -> dict[Any, tuple[str, str]]:
    """Parse `NAME = {...}` of a generated handler into key -> (module, attribute)."""
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and node.targets[0].id == name:  # type: ignore[attr-defined]
            out = {}
            for key, value in zip(node.value.keys, node.value.values, strict=True):  # type: ignore[attr-defined]
                call = value.value  # importlib.import_module("m")
                out[ast.literal_eval(key)] = (ast.literal_eval(call.args[0]), value.attr)
            return out
    raise AssertionError(f"{name} not found")


def _factory_call(text: str) -> ast.Call:
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            if node.targets[0].id in ("app", "handler"):  # type: ignore[attr-defined]
                return node.value
    raise AssertionError("no factory call")


def test_qb_handler_registry_and_factory() -> None:
    resource = {
        "resource_type": "CpuLiveServerless",
        "functions": [_fn("zeta", "03_advanced_workers.cpu.endpoint"), _fn("Alpha", "main")],
    }
    text = render_handler("cpu_worker", resource)
    assert text.startswith('"""Flash handler for resource \'cpu_worker\' (CpuLiveServerless')
    assert "from runtime import shims\n\nshims.install()" in text
    assert "from runtime.qb_handler import create_handler" in text
    assert _registry(text, "FUNCTION_REGISTRY") == {
        "Alpha": ("main", "Alpha"),
        "zeta": ("03_advanced_workers.cpu.endpoint", "zeta"),
    }
    call = _factory_call(text)
    assert ast.unparse(call) == "create_handler(FUNCTION_REGISTRY)"
    # shims are installed before anything imports user code
    assert text.index("shims.install()") < text.index("FUNCTION_REGISTRY = {")


@pytest.mark.parametrize(
    ("resource_type", "include_execute"),
    [
        ("LiveLoadBalancer", True),
        ("CpuLiveLoadBalancer", True),
        ("LoadBalancerSlsResource", False),
        ("CpuLoadBalancerSlsResource", False),
    ],
)
def test_lb_handler_routes_execute_flag(resource_type: str, include_execute: bool) -> None:
    resource = {
        "resource_type": resource_type,
        # a manifest written by upstream 0.20.0 says CPU LBs are not load-balanced
        "is_load_balanced": resource_type in ("LiveLoadBalancer", "LoadBalancerSlsResource"),
        "functions": [
            _fn("compute", "main", "post", "/compute"),
            _fn("health", "workers.api.endpoint", "GET", "/health"),
        ],
    }
    text = render_handler("api", resource)
    assert "from runtime.lb_app import create_lb_app" in text
    assert _registry(text, "ROUTE_REGISTRY") == {
        ("POST", "/compute"): ("main", "compute"),
        ("GET", "/health"): ("workers.api.endpoint", "health"),
    }
    keywords = {k.arg: ast.literal_eval(k.value) for k in _factory_call(text).keywords}
    assert keywords == {"include_execute": include_execute, "is_mothership": False}


def test_mothership_flag_and_determinism() -> None:
    resource = {
        "resource_type": "LiveLoadBalancer",
        "mothership": True,
        "functions": [_fn("b", "m", "GET", "/b"), _fn("a", "m", "GET", "/a")],
    }
    text = render_handler("mothership", resource)
    keywords = {k.arg: ast.literal_eval(k.value) for k in _factory_call(text).keywords}
    assert keywords["is_mothership"] is True
    reversed_resource = dict(resource, functions=list(reversed(resource["functions"])))
    assert render_handler("mothership", reversed_resource) == text
    assert "20" not in text.split('"""')[1]  # no timestamp in the header


def test_lb_function_without_route_is_refused() -> None:
    with pytest.raises(ValueError, match="no HTTP method and path"):
        render_handler("api", {"resource_type": "LiveLoadBalancer", "functions": [_fn("f", "m")]})


def test_flags_and_file_names() -> None:
    assert resource_flags({"resource_type": "CpuLoadBalancerSlsResource"}) == (True, False)
    assert resource_flags({"resource_type": "LiveServerless"}) == (False, True)
    assert resource_flags({"resource_type": "Custom", "is_load_balanced": True}) == (True, False)
    assert handler_filename("gpu_worker") == "handler_gpu_worker.py"
    assert handler_filename("x", {"handler_file": "handler_x.py"}) == "handler_x.py"
    for bad in ("../evil.py", "a/b.py", ".hidden.py", "handler_x.txt"):
        with pytest.raises(ValueError):
            handler_filename("x", {"handler_file": bad})


def test_generate_writes_only_changed_files(tmp_path: Path) -> None:
    manifest = {
        "resources": {
            "w": {"resource_type": "LiveServerless", "functions": [_fn("f", "m")]},
            "api": {"resource_type": "LiveLoadBalancer", "functions": [_fn("g", "m", "GET", "/")]},
        }
    }
    assert generate_handlers(manifest, tmp_path) == ["handler_api.py", "handler_w.py"]
    before = (tmp_path / "handler_w.py").stat().st_mtime_ns
    generate_handlers(manifest, tmp_path)
    assert (tmp_path / "handler_w.py").stat().st_mtime_ns == before
    for name in ("handler_api.py", "handler_w.py"):
        compile((tmp_path / name).read_text(), name, "exec")


def test_import_check_names_the_failing_handler(tmp_path: Path) -> None:
    (tmp_path / "handler_good.py").write_text("import json\n")
    (tmp_path / "handler_bad.py").write_text("import nonexistent_module_for_flash_test\n")
    (tmp_path / "handler_boom.py").write_text("raise RuntimeError('boom at import')\n")
    seen: list[str] = []
    checks = check_handler_imports(
        tmp_path,
        ["handler_good.py", "handler_bad.py", "handler_boom.py"],
        on_done=lambda c: seen.append(c.handler),
    )
    assert [c.handler for c in checks] == ["handler_good.py", "handler_bad.py", "handler_boom.py"]
    assert sorted(seen) == sorted(c.handler for c in checks)
    good, bad, boom = checks
    assert good.ok and not bad.ok and not boom.ok
    assert "nonexistent_module_for_flash_test" in bad.error
    assert boom.error == "RuntimeError: boom at import"
    assert "Traceback" in boom.output
    assert not (tmp_path / "__pycache__").exists()


def test_import_check_timeout(tmp_path: Path) -> None:
    (tmp_path / "handler_slow.py").write_text("import time\ntime.sleep(30)\n")
    (check,) = check_handler_imports(tmp_path, ["handler_slow.py"], timeout=1.0)
    assert not check.ok and "within 1s" in check.error


def test_import_check_with_a_missing_interpreter(tmp_path: Path) -> None:
    (tmp_path / "handler_x.py").write_text("")
    (check,) = check_handler_imports(tmp_path, ["handler_x.py"], python=str(tmp_path / "nopython"))
    assert not check.ok and "cannot run" in check.error
