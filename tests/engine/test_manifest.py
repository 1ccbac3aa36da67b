"""engine.manifest: upstream v1.0 schema, determinism, each validation diagnostic; `scan` CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from projectfiles import endpoint_module, write_files

from engine.cli import main as cli_main
from engine.manifest import manifest_json, write_manifest
from engine.scan import scan_project

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FIXED = "2024-01-01T00:00:00Z"

RESOURCE_KEYS = {
    # upstream
    "resource_type",
    "handler_file",
    "functions",
    "is_load_balanced",
    "is_live_resource",
    "config_variable",
    # ours (README, "Manifest")
    "config",
    "config_hash",
    "unresolved",
    "file",
    "line",
    "mothership",
    "makes_remote_calls",
}
FUNCTION_KEYS = {
    "name",
    "module",
    "is_async",
    "is_class",
    "is_load_balanced",
    "is_live_resource",
    "config_variable",
    "file",
    "line",
    "signature",
    "dependencies",
    "system_dependencies",
    "class_methods",
    "method_signatures",
}


def _copy(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns(".flash", "__pycache__"))
    return target


def _keys_sorted(value: Any) -> bool:
    if isinstance(value, dict):
        return list(value) == sorted(value) and all(_keys_sorted(v) for v in value.values())
    if isinstance(value, list):
        return all(_keys_sorted(v) for v in value)
    return True


def test_schema_of_the_quickstart_example(tmp_path: Path) -> None:
    result = scan_project(_copy("quickstart", tmp_path), generated_at=FIXED)
    m = result.manifest
    assert result.diagnostics == []
    assert set(m) == {
        "version",
        "generated_at",
        "project_name",
        "resources",
        "function_registry",
        "routes",
    }
    assert (m["version"], m["generated_at"], m["project_name"]) == ("1.0", FIXED, "quickstart")
    assert list(m["resources"]) == ["api", "cpu_worker", "gateway", "gpu_worker"]
    for name, resource in m["resources"].items():
        assert set(resource) == RESOURCE_KEYS
        assert resource["handler_file"] == f"handler_{name}.py"
        assert resource["mothership"] is False
        assert isinstance(resource["config_hash"], str) and len(resource["config_hash"]) == 64
        for fn in resource["functions"]:
            lb = resource["is_load_balanced"]
            assert set(fn) == FUNCTION_KEYS | ({"http_method", "http_path"} if lb else set())
            assert m["function_registry"][fn["name"]] == name
    # CPU LB gateway: load-balanced with its routes (upstream 0.20.0 skips CPU LB routes)
    assert m["resources"]["gateway"]["resource_type"] == "CpuLoadBalancerSlsResource"
    assert m["routes"] == {
        "api": {"GET /greet": "greet", "GET /health": "health", "POST /compute": "compute"},
        "gateway": {
            "POST /keywords": "keywords",
            "POST /pipeline": "pipeline",
            "POST /stats": "stats",
        },
    }
    assert _keys_sorted(m)


def test_no_routes_key_without_load_balancer_routes(tmp_path: Path) -> None:
    root = write_files(
        tmp_path / "qb_only",
        {
            "pkg/__init__.py": endpoint_module("""
                @remote(cfg)
                def f(): ...
                """)
        },
    )
    m = scan_project(root, generated_at=FIXED).manifest
    assert "routes" not in m
    assert m["resources"]["w"]["functions"][0]["module"] == "pkg"  # not "pkg.__init__"


def test_deterministic_across_runs_copies_and_mtimes(tmp_path: Path) -> None:
    one = _copy("endpoint_api", tmp_path / "a")
    two = _copy("endpoint_api", tmp_path / "b")
    for path in two.rglob("*"):
        os.utime(path, (1_500_000_000, 1_500_000_000))
    first = manifest_json(scan_project(one, generated_at=FIXED).manifest)
    assert first == manifest_json(scan_project(one, generated_at=FIXED).manifest)
    assert first == manifest_json(scan_project(two, generated_at=FIXED).manifest)
    # and serialising without sort_keys gives the same text (keys are already sorted)
    data = scan_project(two, generated_at=FIXED).manifest
    assert json.dumps(data, indent=2, ensure_ascii=False) + "\n" == first


def test_write_manifest(tmp_path: Path) -> None:
    manifest = scan_project(_copy("quickstart", tmp_path), generated_at=FIXED).manifest
    path = write_manifest(manifest, tmp_path / "out" / "flash_manifest.json")
    text = path.read_text()
    assert text.endswith("}\n") and text == json.dumps(manifest, sort_keys=True, indent=2) + "\n"
    assert json.loads(text) == manifest
    assert not list(path.parent.glob(".*tmp*"))


def test_generated_at_defaults_to_now(tmp_path: Path) -> None:
    stamp = scan_project(_copy("quickstart", tmp_path)).manifest["generated_at"]
    assert stamp.endswith("Z") and stamp[:2] == "20" and "T" in stamp


def test_broken_example_reports_each_problem() -> None:
    result = scan_project(EXAMPLES / "broken", generated_at=FIXED)
    found = {(d.code, d.file, d.line) for d in result.diagnostics}
    assert found >= {
        ("scan-syntax-error", "workers/syntax_error.py", 9),
        ("manifest-duplicate-route", "api.py", 13),
        ("manifest-reserved-path", "api.py", 18),
        ("manifest-lb-missing-route", "api.py", 23),
        ("scan-unknown-config", "workers/unknown_config.py", 6),
        ("manifest-duplicate-function", "workers/queue.py", 9),
        ("manifest-invalid-method", "workers/bad_method.py", 8),
        ("manifest-unsafe-name", "workers/unsafe_name.py", 5),
    }
    assert all(d.severity == "error" for d in result.diagnostics)
    assert all(d.message and d.file and d.line > 0 for d in result.diagnostics)
    # what could be understood is still listed; the broken route is not
    assert result.manifest["routes"]["broken_api"] == {"POST /items": "create_item"}


@pytest.mark.parametrize(
    ("decorator", "code", "severity"),
    [
        ('method="POST", path="no-slash"', "manifest-invalid-path", "error"),
        ('method="POST", path="/execute"', "manifest-reserved-path", "error"),
        ('method="GET", path="/manifest"', "manifest-reserved-path", "error"),
        ('path="/only-path"', "manifest-lb-missing-route", "error"),
        ("", "manifest-lb-missing-route", "error"),
        ('method=METHOD, path="/x"', "manifest-invalid-method", "error"),
    ],
)
def test_route_validation(tmp_path: Path, decorator: str, code: str, severity: str) -> None:
    root = write_files(
        tmp_path / "p",
        {
            "main.py": f"""
                import os
                from tetra_rp import LoadBalancerSlsResource, remote
                METHOD = os.environ["M"]
                lb = LoadBalancerSlsResource(name="lb", imageName="i")

                @remote(lb, {decorator})
                def f(): ...
                """
        },
    )
    (diag,) = scan_project(root).diagnostics
    assert (diag.code, diag.severity, diag.file, diag.line) == (code, severity, "main.py", 7)


def test_route_on_a_queue_endpoint_is_a_warning(tmp_path: Path) -> None:
    root = write_files(
        tmp_path / "p",
        {
            "main.py": """
                from tetra_rp import LiveServerless, remote
                q = LiveServerless(name="q")

                @remote(q, method="POST", path="/x")
                def f(): ...
                """
        },
    )
    result = scan_project(root)
    (diag,) = result.diagnostics
    assert (diag.code, diag.severity) == ("manifest-route-on-queue-endpoint", "warning")
    assert "http_method" not in result.manifest["resources"]["q"]["functions"][0]
    assert "routes" not in result.manifest


def test_unsafe_names_and_conflicting_definitions(tmp_path: Path) -> None:
    root = write_files(
        tmp_path / "p",
        {
            "a.py": """
                from tetra_rp import LiveServerless, CpuLiveServerless, remote
                one = LiveServerless(name="shared", workersMax=1)
                two = LiveServerless(name="shared", workersMax=2)
                three = CpuLiveServerless(name="typed")
                bad = LiveServerless(name="../escape")
                empty = LiveServerless(name="")

                @remote(one)
                def f1(): ...

                @remote(two)
                def f2(): ...

                @remote(three)
                def f3(): ...

                @remote(bad)
                def f4(): ...

                @remote(empty)
                def f5(): ...
                """,
            "b.py": """
                from tetra_rp import LiveServerless, remote
                typed = LiveServerless(name="typed")

                @remote(typed)
                def f6(): ...
                """,
        },
    )
    result = scan_project(root)
    diags = [(d.code, d.severity, d.file) for d in result.diagnostics]
    assert ("manifest-resource-conflict", "warning", "a.py") in diags  # same type, other config
    assert ("manifest-resource-conflict", "error", "b.py") in diags  # another type
    unsafe = [d for d in result.diagnostics if d.code == "manifest-unsafe-name"]
    assert {d.message.split("'")[1] for d in unsafe} == {"../escape", ""}


def test_duplicate_function_within_one_resource(tmp_path: Path) -> None:
    root = write_files(
        tmp_path / "p",
        {
            "a.py": endpoint_module("""
                @remote(cfg)
                def same(): ...
                """),
            "b.py": """
                from tetra_rp import remote
                from a import cfg

                @remote(cfg)
                def same(): ...
                """,
        },
    )
    (diag,) = scan_project(root).diagnostics
    assert (diag.code, diag.file) == ("manifest-duplicate-function", "b.py")
    assert "a.py:5" in diag.message  # its `def same` (endpoint_module: lines 1-3 declare cfg)


# -- CLI -------------------------------------------------------------------------------------


def test_cli_json_is_one_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["scan", str(EXAMPLES / "endpoint_api"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"version", "project_name", "resources", "function_registry", "routes"}
    assert out["diagnostics"] == []
    assert sorted(out["resources"]) == ["api", "summarizer", "tokenizer"]


def test_cli_json_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["scan", str(EXAMPLES / "broken"), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert {d["severity"] for d in out["diagnostics"]} == {"error"}
    assert set(out["diagnostics"][0]) == {"severity", "file", "line", "message", "code"}


def test_cli_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["scan", str(EXAMPLES / "quickstart")]) == 0
    out = capsys.readouterr().out
    expected = ("gateway", "LB", "QB", "CPU", "GPU", "live", "POST /pipeline", "class TextAnalyzer")
    for text in expected:
        assert text in out
    assert cli_main(["scan", str(EXAMPLES / "broken")]) == 1
    err = capsys.readouterr().err  # problems on stderr
    assert "Diagnostics" in err and "manifest-duplicate-route" in err


def test_cli_not_a_flash_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_files(tmp_path, {"script.py": "print('hi')\n"})
    assert cli_main(["scan", str(tmp_path)]) == 0
    assert "No Flash endpoints found" in capsys.readouterr().out
    assert cli_main(["scan", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["resources"] == {} and out["diagnostics"] == []
    assert cli_main(["scan", str(tmp_path / "missing"), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["diagnostics"][0]["code"] == "scan-not-a-directory"
