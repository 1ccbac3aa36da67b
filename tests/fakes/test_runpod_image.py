"""Our build artifacts in the emulated upstream worker image (tests/fakes/runpod_image.py).

The image's clean interpreter has only what the image preinstalls (runpod, fastapi, uvicorn,
cloudpickle, pydantic, aiohttp and their dependencies): everything else a handler needs must
come from the artifact. The examples are built for real and run through the fake data plane:
QB handlers get real job events from the runpod SDK's worker loop, LB apps are served by
uvicorn and called over HTTP, and an LB route calls a QB function on another endpoint through
the environment's state (resources_endpoints + aiKeys).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from waiting import wait_for

from engine.build import build_project
from fakes.dataplane_harness import Plane, artifact, serving
from fakes.runpod_dataplane import EndpointView
from fakes.runpod_image import image_site, worker_command
from runtime.serialization import class_job, deserialize, function_job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The quickstart example, built: (archive, manifest)."""
    root = tmp_path_factory.mktemp("quickstart") / "quickstart"
    shutil.copytree(EXAMPLES / "quickstart", root)
    result = build_project(root, import_check=False)
    return result.archive, result.manifest


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    with serving(tmp_path / "plane") as harness:
        yield harness


def view(manifest: dict, archive: Path, name: str, endpoint_id: str, **env: str) -> EndpointView:
    resource = manifest["resources"][name]
    kind = "LB" if resource["is_load_balanced"] else "QB"
    template_env = {"FLASH_RESOURCE_NAME": name, "FLASH_APP": "quickstart", "FLASH_ENV": "prod"}
    if kind == "LB":
        template_env["FLASH_ENDPOINT_TYPE"] = "lb"
    return EndpointView(
        id=endpoint_id,
        name=name,
        type=kind,
        env={**template_env, **env},
        image_name=resource["imageName"],
        workers_min=1,
        workers_max=1,
        ai_key=f"aikey-{endpoint_id}",
        version=1,
        artifact=archive,
    )


def test_the_image_interpreter_has_only_the_image_packages(tmp_path: Path) -> None:
    site = image_site(tmp_path / "site")
    code = (
        "import sys; sys.path.append(sys.argv[1]); import runpod, fastapi, uvicorn, pydantic, "
        "cloudpickle, aiohttp\n"
        "for name in ('httpx', 'httptools', 'runtime', 'textual', 'tetra_rp'):\n"
        "    try:\n        __import__(name)\n    except ImportError:\n        continue\n"
        "    raise SystemExit(name + ' is importable')\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(site)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_qb_handler_runs_real_job_events_in_the_image(
    plane: Plane, quickstart: tuple[Path, dict]
) -> None:
    archive, manifest = quickstart
    endpoint = view(manifest, archive, "cpu_worker", "qbcpu00001")
    plane.apply(endpoint)
    headers = plane.headers(endpoint.id)
    job = plane.http.post(
        f"/v2/{endpoint.id}/runsync",
        json={"input": function_job("preprocess", ["Hello   World"])},
        headers=headers,
    ).json()
    assert job["status"] == "COMPLETED", job
    assert job["output"]["success"] is True
    assert deserialize(job["output"]["result"]) == {
        "text": "hello world",
        "words": ["hello", "world"],
    }
    method = class_job("TextAnalyzer", "keywords", ((), {"stopwords": ["a"]}), ["a b b c"])
    job = plane.http.post(
        f"/v2/{endpoint.id}/runsync", json={"input": method}, headers=headers
    ).json()
    assert deserialize(job["output"]["result"]) == ["b", "c"]
    # a failure in user code is a FAILED job with the error, as the platform reports it
    job = plane.http.post(
        f"/v2/{endpoint.id}/runsync",
        json={"input": function_job("preprocess", [None])},
        headers=headers,
    ).json()
    assert job["status"] == "FAILED" and "AttributeError" in job["error"]


def test_lb_app_is_served_by_the_image_and_calls_qb_through_its_endpoint_table(
    plane: Plane, quickstart: tuple[Path, dict]
) -> None:
    archive, manifest = quickstart
    cpu = view(manifest, archive, "cpu_worker", "qbcpu00002", FLASH_ENVIRONMENT_ID="env-1")
    table = {"endpoints": {"cpu_worker": {"url": f"{plane.server.url}/v2/{cpu.id}"}}}
    table["endpoints"]["cpu_worker"]["key"] = cpu.ai_key
    gateway = view(
        manifest,
        archive,
        "gateway",
        "lbgate0002",
        FLASH_ENVIRONMENT_ID="env-1",
        FLASH_ENDPOINTS=json.dumps(table),
    )
    api = view(manifest, archive, "api", "lbapi00002")
    for endpoint in (cpu, gateway, api):
        plane.apply(endpoint)
    for endpoint in (gateway, api):
        wait_for(
            lambda e=endpoint: (
                plane.http.get(f"/lb/{e.id}/ping", headers=plane.headers(e.id)).status_code == 200
            ),
            timeout=60,
        )
    answer = plane.http.post(
        f"/lb/{api.id}/compute", json={"numbers": [1, 2], "scale": 2}, headers=plane.headers(api.id)
    )
    assert answer.json() == {"count": 2, "sum": 6.0, "max": 4.0}
    answer = plane.http.post(
        f"/lb/{gateway.id}/stats", json={"text": "a b c"}, headers=plane.headers(gateway.id)
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"words": 3, "chars": 5, "unique": 3}
    # it ran on the QB endpoint: a job there completed
    health = plane.http.get(f"/v2/{cpu.id}/health", headers=plane.headers(cpu.id)).json()
    assert health["jobs"]["completed"] == 1


def _boot(tmp_path: Path, files: dict[str, str], kind: str, **env: str) -> str:
    """Boot one image worker on an artifact of `files`; return its output (it must exit)."""
    tarball = artifact(tmp_path / "bad.tar.gz", files)
    environment = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "RUNPOD_ENDPOINT_ID": "e1",
        "FLASH_RESOURCE_NAME": "x",
        "FLASH_BUILD_ARTIFACT_PATH": str(tarball),
        **env,
    }
    site = image_site(tmp_path / "site")
    result = subprocess.run(
        worker_command(site, tmp_path / "app", kind, 1),
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    return result.stdout + result.stderr


def test_the_image_rejects_members_outside_its_code_dir(tmp_path: Path) -> None:
    output = _boot(tmp_path, {"../evil.py": "x = 1\n", "handler_x.py": ""}, "QB")
    assert "outside" in output
    assert not (tmp_path / "evil.py").exists()


def test_the_lb_image_wants_a_fastapi_instance(tmp_path: Path) -> None:
    code = "from starlette.applications import Starlette\napp = Starlette()\n"
    output = _boot(tmp_path, {"handler_x.py": code}, "LB", FLASH_ENDPOINT_TYPE="lb")
    assert "not a fastapi.FastAPI instance" in output
