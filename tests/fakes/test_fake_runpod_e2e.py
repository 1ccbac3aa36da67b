"""The RunPod fake end to end: control plane + data plane with real image-emulator workers.

A client deploys through GraphQL as upstream does (app, environment, presigned upload,
finalize, deployBuildToEnvironment, saveEndpoint); the runpod SDK's `Endpoint.run_sync` (in a
subprocess: it reads RUNPOD_ENDPOINT_BASE_URL when imported) gets the handler's result, an LB
route answers through `/lb/{id}`, and deleteEndpoint stops the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from headless import python_json
from waiting import wait_for

from fakes.runpod import FakeRunPod

QB_HANDLER = """
def handler(job):
    return {"echo": job["input"], "job": job["id"]}
"""
LB_HANDLER = """
from fastapi import FastAPI

app = FastAPI()


@app.post("/add")
async def add(body: dict) -> dict:
    return {"sum": body["a"] + body["b"]}
"""
RUN_SYNC = """
import json, os, runpod
runpod.api_key = os.environ["RUNPOD_API_KEY"]
result = runpod.Endpoint(os.environ["ENDPOINT_ID"]).run_sync({"n": 41}, timeout=90)
print(json.dumps(result))
"""


class Client:
    """A GraphQL client of the fake with the account key (what a deployer sends)."""

    def __init__(self, api_base: str, key: str) -> None:
        self.api_base, self.key = api_base, key
        self.http = httpx.Client(timeout=60)

    @classmethod
    def of(cls, fake: FakeRunPod) -> Client:
        """A client of an in-process fake."""
        return cls(fake.env()["RUNPOD_API_BASE_URL"], fake.api_key)

    def __call__(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = self.http.post(
            f"{self.api_base}/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {self.key}"},
        )
        assert reply.status_code == 200 and "errors" not in reply.json(), reply.text
        return reply.json()["data"]

    def upload_build(self, app_id: str, files: dict[str, str]) -> str:
        """Prepare, PUT and finalize an artifact of `files`; the build id."""
        body = _tarball({**files, "flash_manifest.json": json.dumps({"resources": {}})})
        slot = self(
            "mutation p($i: PrepareFlashArtifactUploadInput!) "
            "{ prepareFlashArtifactUpload(input: $i) { uploadUrl objectKey } }",
            {"i": {"flashAppId": app_id, "tarballSize": len(body)}},
        )["prepareFlashArtifactUpload"]
        gzip = {"Content-Type": "application/gzip"}
        put = httpx.put(slot["uploadUrl"], content=body, headers=gzip)
        assert put.status_code == 200, put.text
        return self(
            "mutation f($i: FinalizeFlashArtifactUploadInput!) "
            "{ finalizeFlashArtifactUpload(input: $i) { id } }",
            {"i": {"flashAppId": app_id, "objectKey": slot["objectKey"]}},
        )["finalizeFlashArtifactUpload"]["id"]

    def deploy_build(self, app: str, files: dict[str, str]) -> str:
        """App + production environment + upload + finalize + deploy; the environment id."""
        app_id = self(
            "mutation a($i: CreateFlashAppInput!) { createFlashApp(input: $i) { id } }",
            {"i": {"name": app}},
        )["createFlashApp"]["id"]
        env_id = self(
            "mutation e($i: CreateFlashEnvironmentInput!) "
            "{ createFlashEnvironment(input: $i) { id } }",
            {"i": {"flashAppId": app_id, "name": "production"}},
        )["createFlashEnvironment"]["id"]
        build_id = self.upload_build(app_id, files)
        self(
            "mutation d($i: DeployBuildToEnvironmentInput!) "
            "{ deployBuildToEnvironment(input: $i) { id } }",
            {"i": {"flashEnvironmentId": env_id, "flashBuildId": build_id}},
        )
        return env_id

    def save_endpoint(
        self,
        name: str,
        env_id: str,
        kind: str,
        extra_env: list[dict[str, str]] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """saveEndpoint (create) of a CPU endpoint running `handler_<name>.py`."""
        env = [{"key": "FLASH_RESOURCE_NAME", "value": name}, *(extra_env or [])]
        if kind == "LB":
            env.append({"key": "FLASH_ENDPOINT_TYPE", "value": "lb"})
        image = "runpod/flash-lb-cpu:py3.11" if kind == "LB" else "runpod/flash-cpu:py3.11"
        payload = {
            "name": name,
            "type": kind,
            "instanceIds": ["cpu3c-1-2"],
            "workersMin": 0,
            "workersMax": 1,
            "workersStandby": 0,
            "flashEnvironmentId": env_id,
            "template": {"name": f"{name}-{env_id}", "imageName": image, "env": env},
            **fields,
        }
        return self(
            "mutation s($i: EndpointInput!) { saveEndpoint(input: $i) { id aiKey version } }",
            {"i": payload},
        )["saveEndpoint"]


def _tarball(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            content = textwrap.dedent(text).encode()
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeRunPod]:
    """The fake with its data plane; stopping it stops every worker."""
    with FakeRunPod(tmp_path_factory.mktemp("fake-runpod-e2e")) as server:
        yield server


@pytest.fixture(scope="module")
def deployed(fake: FakeRunPod) -> dict[str, dict[str, Any]]:
    """One QB and one LB endpoint of one deployed build."""
    client = Client.of(fake)
    env_id = client.deploy_build(
        "e2e", {"handler_echo.py": QB_HANDLER, "handler_api.py": LB_HANDLER}
    )
    return {
        "qb": client.save_endpoint("echo", env_id, "QB"),
        "lb": client.save_endpoint("api", env_id, "LB", scalerType="REQUEST_COUNT"),
    }


def test_runpod_sdk_run_sync_gets_the_handlers_result(
    fake: FakeRunPod, deployed: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    env = {**os.environ, **fake.env(), "ENDPOINT_ID": deployed["qb"]["id"]}
    output = python_json(RUN_SYNC, env, cwd=tmp_path, timeout=120)
    assert output["echo"] == {"n": 41}


def test_lb_route_answers_with_the_endpoint_key(
    fake: FakeRunPod, deployed: dict[str, dict[str, Any]]
) -> None:
    lb = deployed["lb"]
    url = fake.env()["FLASH_RUNPOD_LB_URL"].format(id=lb["id"])
    headers = {"Authorization": f"Bearer {lb['aiKey']}"}

    def added() -> dict[str, Any] | None:
        reply = httpx.post(f"{url}/add", json={"a": 2, "b": 3}, headers=headers, timeout=10)
        return reply.json() if reply.status_code == 200 else None

    assert wait_for(added, 90, "LB /add through the fake") == {"sum": 5}
    assert httpx.post(f"{url}/add", json={"a": 1, "b": 1}).status_code == 401


def test_delete_endpoint_stops_its_workers(fake: FakeRunPod, tmp_path: Path) -> None:
    client = Client.of(fake)
    env_id = client.deploy_build("e2e-delete", {"handler_gone.py": QB_HANDLER})
    endpoint = client.save_endpoint("gone", env_id, "QB")
    assert wait_for(lambda: fake.workers(endpoint["id"]), 60, "a worker for the endpoint")
    processes = [w for w in fake.workers(endpoint["id"])]
    client("mutation d($id: String!) { deleteEndpoint(id: $id) }", {"id": endpoint["id"]})
    assert fake.workers(endpoint["id"]) == []
    assert all(not w.alive() for w in processes)
    health = httpx.get(
        f"{fake.url}/v2/{endpoint['id']}/health",
        headers={"Authorization": f"Bearer {fake.api_key}"},
    )
    assert health.status_code == 404


def test_env_changes_roll_workers_and_scaling_alone_does_not(fake: FakeRunPod) -> None:
    client = Client.of(fake)
    env_id = client.deploy_build("e2e-roll", {"handler_roll.py": QB_HANDLER})
    endpoint = client.save_endpoint("roll", env_id, "QB")
    first = wait_for(lambda: fake.workers(endpoint["id"]), 60, "a worker for the endpoint")
    client(
        "mutation s($i: EndpointInput!) { saveEndpoint(input: $i) { id } }",
        {"i": {"id": endpoint["id"], "workersMax": 2}},
    )
    assert [w.id for w in fake.workers(endpoint["id"])] == [w.id for w in first]
    edited = fake.edit_endpoint(
        endpoint["id"], env={"FLASH_RESOURCE_NAME": "roll", "_FLASH_SOURCE_FINGERPRINT": "2"}
    )
    assert edited.version == endpoint["version"]  # env rolls workers without a version bump
    rolled = wait_for(lambda: fake.workers(endpoint["id"]), 60, "a worker after the roll")
    assert {w.id for w in rolled}.isdisjoint(w.id for w in first)


def test_script_ctrl_c_stops_the_workers_it_started(tmp_path: Path) -> None:
    script = Path(__file__).with_name("runpod.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl+C reaches only the fake, as it would the fake alone
    )
    try:
        assert process.stdout is not None
        exports = dict(
            process.stdout.readline().removeprefix("export ").strip().split("=", 1)
            for _ in range(5)
        )
        client = Client(exports["RUNPOD_API_BASE_URL"], exports["RUNPOD_API_KEY"])
        env_id = client.deploy_build("script", {"handler_solo.py": QB_HANDLER})
        client.save_endpoint("solo", env_id, "QB")
        workers = tmp_path / "dataplane" / "workers"
        wait_for(lambda: any(workers.iterdir()), 60, "a worker directory", retry_errors=True)
        children = wait_for(lambda: psutil.Process(process.pid).children(), 60, "a worker")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_faults_reach_the_data_plane(fake: FakeRunPod, deployed: dict[str, dict[str, Any]]) -> None:
    qb = deployed["qb"]
    url = f"{fake.env()['RUNPOD_ENDPOINT_BASE_URL']}/{qb['id']}/health"
    headers = {"Authorization": qb["aiKey"]}  # the bare endpoint key
    fake.fail_next(f"/v2/{qb['id']}/health", status=429, retry_after=2)
    throttled = httpx.get(url, headers=headers)
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "2"
    health = httpx.get(url, headers=headers)
    assert health.status_code == 200 and set(health.json()["workers"]) >= {"idle", "running"}


def test_delete_racing_a_build_rollout_leaves_no_worker(fake: FakeRunPod) -> None:
    """deleteEndpoint while deployBuildToEnvironment is still rolling that endpoint's workers."""
    client = Client.of(fake)
    env_id = client.deploy_build("e2e-race", {"handler_race.py": QB_HANDLER})
    endpoint = client.save_endpoint("race", env_id, "QB")
    first = wait_for(lambda: fake.workers(endpoint["id"]), 60, "a worker for the endpoint")
    app_id = next(e.flashAppId for e in fake.environments() if e.id == env_id)
    build_id = client.upload_build(app_id, {"handler_race.py": QB_HANDLER + "\n# v2\n"})
    rollout = (
        "mutation d($i: DeployBuildToEnvironmentInput!) "
        "{ deployBuildToEnvironment(input: $i) { id } }"
    )

    async def race() -> None:
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        async with httpx.AsyncClient(
            base_url=fake.env()["RUNPOD_API_BASE_URL"], timeout=60
        ) as http:
            deploy = http.post(
                "/graphql",
                json={
                    "query": rollout,
                    "variables": {"i": {"flashEnvironmentId": env_id, "flashBuildId": build_id}},
                },
                headers=headers,
            )
            delete = http.post(
                "/graphql",
                json={
                    "query": "mutation x($id: String!) { deleteEndpoint(id: $id) }",
                    "variables": {"id": endpoint["id"]},
                },
                headers=headers,
            )
            for reply in await asyncio.gather(deploy, delete):
                assert reply.status_code == 200 and "errors" not in reply.json(), reply.text

    assert _processes_of(endpoint["id"])
    asyncio.run(race())
    assert fake.workers(endpoint["id"]) == []
    assert all(not w.alive() for w in first)
    assert _processes_of(endpoint["id"]) == []


def _processes_of(endpoint_id: str) -> list[psutil.Process]:
    """Live worker processes (children of this test process) serving that endpoint."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.environ().get("RUNPOD_ENDPOINT_ID") == endpoint_id and child.is_running():
                found.append(child)
    return found


def test_stop_with_an_open_log_stream_still_stops_the_workers(tmp_path: Path) -> None:
    """A client still following logs must not keep the fake (and its workers) alive."""
    server = FakeRunPod(tmp_path).start()
    try:
        client = Client.of(server)
        env_id = client.deploy_build("e2e-stop", {"handler_tail.py": QB_HANDLER})
        endpoint = client.save_endpoint("tail", env_id, "QB")
        worker = wait_for(lambda: server.workers(endpoint["id"]), 60, "a worker")[0]
        url = (
            f"{server.env()['RUNPOD_API_BASE_URL']}/v2/serverless/{endpoint['id']}"
            f"/workers/{worker.id}/logs"
        )
        opened = threading.Event()

        def follow() -> None:
            headers = {"Authorization": f"Bearer {server.api_key}"}
            with contextlib.suppress(httpx.HTTPError):
                with httpx.stream("GET", url, headers=headers, timeout=None) as stream:
                    opened.set()
                    for _ in stream.iter_lines():
                        pass

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        assert opened.wait(30), "the log stream did not open"
    finally:
        server.stop()
    assert wait_for(lambda: not _processes_of(endpoint["id"]), 30, "workers stopped")


ENV_HANDLER = """
import os
from fastapi import FastAPI

app = FastAPI()


@app.get("/env")
def env() -> dict:
    return dict(os.environ)
"""


def test_workers_get_the_template_env_and_no_invented_endpoint_table(fake: FakeRunPod) -> None:
    """RunPod gives a worker its template env and the platform's variables, and no route to
    look other endpoints up: a worker's table is what its template's FLASH_ENDPOINTS says."""
    client = Client.of(fake)
    env_id = client.deploy_build("e2e-env", {"handler_gw.py": ENV_HANDLER})
    table = json.dumps({"endpoints": {"qb": {"url": "http://127.0.0.1:9/v2/x", "key": "k"}}})
    extra = [
        {"key": "FLASH_ENVIRONMENT_ID", "value": env_id},
        {"key": "FLASH_ENDPOINTS", "value": table},
    ]
    gateway = client.save_endpoint("gw", env_id, "LB", scalerType="REQUEST_COUNT", extra_env=extra)
    url = fake.env()["FLASH_RUNPOD_LB_URL"].format(id=gateway["id"])
    headers = {"Authorization": f"Bearer {gateway['aiKey']}"}

    def env_of() -> dict[str, str] | None:
        reply = httpx.get(f"{url}/env", headers=headers, timeout=20)
        return reply.json() if reply.status_code == 200 else None

    seen = wait_for(env_of, 90, "the LB worker's env")
    assert seen["FLASH_ENDPOINTS"] == table and seen["FLASH_ENVIRONMENT_ID"] == env_id
    assert not {"FLASH_ENDPOINTS_URL", "FLASH_ENDPOINTS_TOKEN"} & set(seen)
    assert fake.api_key not in json.dumps(seen)
    (worker,) = fake.workers(gateway["id"])
    route = f"{fake.url}/_dataplane/{gateway['id']}/environment/{worker.id}"
    assert httpx.get(route, headers={"Authorization": f"Bearer {worker.token}"}).status_code == 404
