"""Resolving invocation targets, building jobs and curl lines (pure; e2e calls for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.invoke import (
    CallSpec,
    InvokeError,
    build_job,
    curl_command,
    list_calls,
    resolve_call,
)
from engine.provider import EndpointTarget
from engine.scan import scan_project
from runtime.serialization import deserialize_kwargs

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return scan_project(QUICKSTART).manifest


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("POST /compute", CallSpec("api", True, method="POST", path="/compute")),
        ("/greet", CallSpec("api", True, method="GET", path="/greet")),
        ("api:/health", CallSpec("api", True, method="GET", path="/health")),
        ("gateway:POST /stats", CallSpec("gateway", True, method="POST", path="/stats")),
        ("embed", CallSpec("gpu_worker", False, function="embed")),
        ("gpu_worker:embed", CallSpec("gpu_worker", False, function="embed")),
        (
            "cpu_worker:TextAnalyzer.keywords",
            CallSpec("cpu_worker", False, function="TextAnalyzer", class_method="keywords"),
        ),
        (
            "compute",
            CallSpec("api", True, method="POST", path="/compute", function="compute"),
        ),
    ],
)
def test_resolve_call(manifest: dict, target: str, expected: CallSpec) -> None:
    assert resolve_call(manifest, target) == expected


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("DELETE /compute", "no load-balanced route"),
        ("nothing", "no function or route named"),
        ("gpu_worker", "is an endpoint"),
        ("TextAnalyzer", "is a class"),
        ("gpu_worker:missing", "has no function"),
    ],
)
def test_resolve_call_errors(manifest: dict, target: str, message: str) -> None:
    with pytest.raises(InvokeError, match=message):
        resolve_call(manifest, target)


def test_list_calls_are_the_calls_resolve_call_makes(manifest: dict) -> None:
    calls = list_calls(manifest)
    expected = []
    for endpoint, res in manifest["resources"].items():
        for fn in res["functions"]:
            methods = fn.get("class_methods") if fn.get("is_class") else None
            if methods and not res.get("is_load_balanced"):
                expected += [f"{endpoint}:{fn['name']}.{m}" for m in methods]
            else:
                expected.append(f"{endpoint}:{fn['name']}")
    # Each listed call is the one the engine resolves from its name: nothing parsed back later.
    assert sorted(repr(c.call) for c in calls) == sorted(
        repr(resolve_call(manifest, target)) for target in expected
    )
    by_call = {c.call: c for c in calls}
    analyzer = by_call[
        CallSpec("cpu_worker", False, function="TextAnalyzer", class_method="keywords")
    ]
    fn = next(f for f in manifest["resources"]["cpu_worker"]["functions"] if f["is_class"])
    assert analyzer.init_signature == tuple(fn["signature"])
    assert analyzer.signature == tuple(fn["method_signatures"]["keywords"])


def test_jobs_follow_the_upstream_contract() -> None:
    job = build_job(CallSpec("gpu_worker", False, function="embed"), {"text": "a", "dims": 2})
    payload = job["input"]
    assert payload["function_name"] == "embed" and payload["execution_type"] == "function"
    assert deserialize_kwargs(payload["kwargs"]) == {"text": "a", "dims": 2}
    method = CallSpec("cpu_worker", False, function="TextAnalyzer", class_method="keywords")
    job = build_job(method, {"init": {"stopwords": ["x"]}, "text": "t"})["input"]
    assert job["execution_type"] == "class" and job["method_name"] == "keywords"
    assert deserialize_kwargs(job["kwargs"]) == {"stopwords": ["x"]}
    assert deserialize_kwargs(job["method_kwargs"]) == {"text": "t"}


def test_curl_hides_the_key_unless_revealed() -> None:
    target = EndpointTarget("api", "http://127.0.0.1:5", True, key="s3cret-key")
    post = CallSpec("api", True, method="POST", path="/compute")
    line = curl_command(target, post, {"numbers": [1]})
    assert "s3cret-key" not in line and "$FLASH_ENDPOINT_KEY" in line
    assert "http://127.0.0.1:5/compute" in line and '"numbers": [1]' in line
    assert "s3cret-key" in curl_command(target, post, {}, reveal=True)
    get = curl_command(target, CallSpec("api", True, method="GET", path="/greet"), {"name": "a"})
    assert "/greet?name=a" in get
    qb = curl_command(
        EndpointTarget("gpu", "http://h", False, key="k"), CallSpec("gpu", False, function="f")
    )
    assert "http://h/runsync" in qb and '"function_name": "f"' in qb
    assert "s3cret-key" not in repr(target)


# --- remote errors say what failed (real worker processes) -------------------------------------

FAILING_CODE = """
def explode(x: int = 0) -> int:
    table = {"a": 1}
    return table["missing"] + x
"""


@pytest.fixture(scope="module")
def failing_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import json

    root = tmp_path_factory.mktemp("failing-build")
    (root / "failing.py").write_text(FAILING_CODE)
    (root / "handler_jobs.py").write_text(
        "from runtime.qb_handler import create_handler\nimport failing\n"
        "handler = create_handler({'explode': failing.explode})\n"
    )
    (root / "handler_web.py").write_text(
        "from runtime.lb_app import create_lb_app\nimport failing\n"
        "app = create_lb_app({('POST', '/explode'): failing.explode})\n"
    )
    resources = {
        "jobs": {"resource_type": "LiveServerless", "handler_file": "handler_jobs.py"},
        "web": {"resource_type": "LoadBalancerSlsResource", "handler_file": "handler_web.py"},
    }
    (root / "flash_manifest.json").write_text(json.dumps({"resources": resources}))
    return root


@pytest.mark.parametrize("lb", [False, True])
def test_invoke_shows_the_remote_error_type_message_and_line(failing_build: Path, lb: bool) -> None:
    import asyncio

    from worker_harness import Worker

    from engine.invoke import invoke

    worker = Worker(failing_build, "web" if lb else "jobs")
    try:
        url = worker.wait_ready()
        target = EndpointTarget("web" if lb else "jobs", url, lb, key=worker.key)
        call = (
            CallSpec("web", True, method="POST", path="/explode")
            if lb
            else CallSpec("jobs", False, function="explode")
        )
        result = asyncio.run(invoke(target, call, {"x": 1}, timeout=30))
    finally:
        worker.stop()
    assert not result.ok
    remote = result.remote_error
    assert remote is not None, result
    assert remote.type == "KeyError" and remote.message == "'missing'"
    assert remote.location == "failing.py:4"
    assert "KeyError: 'missing'" in str(result.error) and "failing.py:4" in str(result.error)
    assert result.to_dict()["remote_error"]["location"] == "failing.py:4"
    # The route tester shows the same: type, message and the user-code line.
    from rich.console import Console

    from flash_tui.screens.route_tester import TesterResponse, render_response

    console = Console(width=200, record=True)
    shown = TesterResponse(status=result.status_code or "error", latency_ms=1.0, ok=False)
    shown.remote_error = result.remote_error
    console.print(render_response(shown))
    assert "KeyError: 'missing'  at failing.py:4" in console.export_text()
