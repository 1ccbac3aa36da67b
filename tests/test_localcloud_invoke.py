"""Resolving invocation targets, building jobs and curl lines (pure; e2e calls for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.invoke import CallSpec, InvokeError, build_job, curl_command, resolve_call
from engine.provider import EndpointTarget
from engine.scan import scan_project
from runtime.serialization import deserialize_kwargs

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"


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
