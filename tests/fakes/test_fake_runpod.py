"""Contract tests of the RunPod fake's control plane: the wire shapes real clients send.

Requests are real HTTP to the fake on 127.0.0.1; tetra-rp 0.20.0's own GraphQL client runs in a
subprocess (it reads RUNPOD_API_BASE_URL when imported), runpod-python's query builders and
transport in-process (they read the base URL at call time).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from headless import python_json
from waiting import wait_for

from fakes.runpod import FakeRunPod

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "fakes" / "runpod.py"

SAVE_ENDPOINT = """
mutation saveEndpoint($input: EndpointInput!) {
  saveEndpoint(input: $input) {
    id name aiKey templateId version type workersMin workersMax workersStandby
    gpuIds gpuCount instanceIds idleTimeout env { key value }
  }
}"""
SAVE_TEMPLATE = """
mutation saveTemplate($input: SaveTemplateInput) {
  saveTemplate(input: $input) { id name imageName env { key value } }
}"""


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeRunPod]:
    """One control-plane-only fake for the module (tests use their own names)."""
    with FakeRunPod(tmp_path_factory.mktemp("fake-runpod"), data_plane=False) as server:
        yield server


def gql(
    fake: FakeRunPod,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    auth: str | None = "bearer",
) -> httpx.Response:
    """POST one GraphQL document; `auth` is bearer, bare, query or None."""
    headers, params = {}, {}
    if auth == "bearer":
        headers["Authorization"] = f"Bearer {fake.api_key}"
    elif auth == "bare":
        headers["Authorization"] = fake.api_key
    elif auth == "query":
        params["api_key"] = fake.api_key
    body = {"query": query, "variables": variables or {}}
    return httpx.post(f"{fake.url}/api/graphql", json=body, headers=headers, params=params)


def data(response: httpx.Response) -> dict[str, Any]:
    """The `data` of a successful reply (fails the test with the errors otherwise)."""
    assert response.status_code == 200, response.text
    payload = response.json()
    assert "errors" not in payload, payload["errors"]
    return payload["data"]


def error(response: httpx.Response) -> str:
    """The first error message of a reply that failed inside the operation (HTTP 200)."""
    assert response.status_code == 200, response.text
    return response.json()["errors"][0]["message"]


def endpoint_input(name: str, **fields: Any) -> dict[str, Any]:
    """A GPU QB EndpointInput with an inline template."""
    template = {"name": f"{name}-tpl", "imageName": "runpod/flash:py3.11", "env": []}
    return {"name": name, "gpuIds": "AMPERE_16", "template": template, **fields}


def save(fake: FakeRunPod, payload: dict[str, Any]) -> dict[str, Any]:
    """saveEndpoint that must succeed."""
    return data(gql(fake, SAVE_ENDPOINT, {"input": payload}))["saveEndpoint"]


# --- auth ------------------------------------------------------------------------------------
@pytest.mark.parametrize("auth", ["bearer", "bare", "query"])
def test_the_account_key_is_accepted_as_bearer_bare_or_query(fake: FakeRunPod, auth: str) -> None:
    assert data(gql(fake, "{ myself { id email } }", auth=auth))["myself"]["id"]


def test_a_missing_or_wrong_key_gets_401(fake: FakeRunPod) -> None:
    assert gql(fake, "{ myself { id } }", auth=None).status_code == 401
    wrong = httpx.post(
        f"{fake.url}/api/graphql",
        json={"query": "{ myself { id } }"},
        headers={"Authorization": "Bearer rpa_NOTTHEKEY"},
    )
    assert wrong.status_code == 401
    assert "errors" in wrong.json()


# --- endpoints and templates -------------------------------------------------------------------
def test_create_assigns_id_ai_key_template_and_version(fake: FakeRunPod) -> None:
    created = save(fake, endpoint_input("assign", workersStandby=0))
    assert len(created["id"]) == 14 and created["aiKey"] and created["templateId"]
    assert created["version"] == 1
    assert created["instanceIds"] == []  # the API answers [] on GPU endpoints
    assert created["id"] in {e.id for e in fake.endpoints()}
    template = next(t for t in fake.templates() if t.id == created["templateId"])
    assert template.name == "assign-tpl" and template.imageName == "runpod/flash:py3.11"


def test_workers_standby_defaults_to_one_when_not_sent(fake: FakeRunPod) -> None:
    assert save(fake, endpoint_input("standby"))["workersStandby"] == 1
    assert save(fake, endpoint_input("standby0", workersStandby=0))["workersStandby"] == 0


def test_duplicate_endpoint_names_are_allowed(fake: FakeRunPod) -> None:
    first = save(fake, endpoint_input("twin", template=None, templateId=_template(fake, "twin-a")))
    second = save(fake, endpoint_input("twin", template=None, templateId=_template(fake, "twin-b")))
    assert first["id"] != second["id"]


def test_template_and_template_id_together_are_rejected(fake: FakeRunPod) -> None:
    payload = endpoint_input("both", templateId=_template(fake, "both-t"))
    assert "not both" in error(gql(fake, SAVE_ENDPOINT, {"input": payload}))
    assert "both" not in {e.name for e in fake.endpoints()}


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"idleTimeout": 0}, "idleTimeout"),
        ({"workersMin": 3, "workersMax": 1}, "workersMin"),
        ({"type": "XX"}, "type"),
        ({"gpuIds": "AMPERE_17"}, "AMPERE_17"),
        ({"gpuIds": "", "instanceIds": ["cpu9z-1-1"]}, "cpu9z-1-1"),
        ({"gpuIds": ""}, "needs gpuIds"),
        ({"instanceIds": ["cpu3c-1-2"]}, "not both"),
        ({"gpuIds": "NVIDIA L4"}, "NVIDIA L4"),
        ({"gpuIds": "ADA_24,-NVIDIA Q9"}, "NVIDIA Q9"),
        ({"templateId": "nosuchtpl", "template": None}, "Template not found"),
    ],
)
def test_invalid_endpoint_input_is_rejected(
    fake: FakeRunPod, fields: dict[str, Any], words: str
) -> None:
    payload = {k: v for k, v in endpoint_input("invalid", **fields).items() if v is not None}
    assert words in error(gql(fake, SAVE_ENDPOINT, {"input": payload}))


def test_unknown_input_fields_and_wrong_types_fail_validation(fake: FakeRunPod) -> None:
    unknown = gql(fake, SAVE_ENDPOINT, {"input": {**endpoint_input("x"), "gpuz": "A"}})
    assert unknown.status_code == 400 and "gpuz" in unknown.text
    wrong_type = gql(fake, SAVE_ENDPOINT, {"input": {**endpoint_input("x"), "workersMax": "3"}})
    assert wrong_type.status_code == 400
    no_field = gql(fake, "{ myself { endpoints { id noSuchField } } }")
    assert no_field.status_code == 400 and "noSuchField" in no_field.text


def test_updates_bump_version_only_for_structural_changes(fake: FakeRunPod) -> None:
    created = save(fake, endpoint_input("bump", workersStandby=0))
    scaled = save(fake, {"id": created["id"], "workersMax": 7, "idleTimeout": 30})
    assert (scaled["workersMax"], scaled["version"]) == (7, 1)
    moved = save(fake, {"id": created["id"], "gpuIds": "ADA_24"})
    assert moved["version"] == 2
    assert save(fake, {"id": created["id"], "gpuIds": "ADA_24"})["version"] == 2
    assert "Endpoint not found" in error(
        gql(fake, SAVE_ENDPOINT, {"input": {"id": "nosuchendpoint", "workersMax": 1}})
    )


def test_save_template_needs_env_and_a_unique_name(fake: FakeRunPod) -> None:
    no_env = gql(fake, SAVE_TEMPLATE, {"input": {"name": "noenv", "imageName": "img"}})
    assert no_env.status_code == 400 and "env" in no_env.text
    payload = {"name": "uniq", "imageName": "img", "env": [{"key": "A", "value": "1"}]}
    template = data(gql(fake, SAVE_TEMPLATE, {"input": payload}))["saveTemplate"]
    assert template["env"] == [{"key": "A", "value": "1"}]
    assert "unique" in error(gql(fake, SAVE_TEMPLATE, {"input": payload}))
    update = {**payload, "id": template["id"], "env": [{"key": "B", "value": "2"}]}
    assert data(gql(fake, SAVE_TEMPLATE, {"input": update}))["saveTemplate"]["env"] == [
        {"key": "B", "value": "2"}
    ]


def test_delete_endpoint_returns_null_and_keeps_its_template_until_deleted(
    fake: FakeRunPod,
) -> None:
    created = save(fake, endpoint_input("gone"))
    delete_template = "mutation d($n: String!) { deleteTemplate(templateName: $n) }"
    assert "in use" in error(gql(fake, delete_template, {"n": "gone-tpl"}))
    literal = "mutation { deleteEndpoint(id: " + json.dumps(created["id"]) + ") }"
    deleted = data(gql(fake, literal))
    assert deleted == {"deleteEndpoint": None}
    probe = data(
        gql(
            fake,
            "query p($id: String!) { myself { endpoint(id: $id) { id } } }",
            {"id": created["id"]},
        )
    )
    assert probe["myself"]["endpoint"] is None
    assert "gone-tpl" in {t.name for t in fake.templates()}  # templates leak, as on RunPod
    assert data(gql(fake, delete_template, {"n": "gone-tpl"})) == {"deleteTemplate": None}
    assert "gone-tpl" not in {t.name for t in fake.templates()}


def test_lb_endpoints_get_the_platform_port_in_their_template_env(fake: FakeRunPod) -> None:
    created = save(fake, endpoint_input("lb-port", type="LB", scalerType="REQUEST_COUNT"))
    env = {item["key"]: item["value"] for item in created["env"]}
    assert env["PORT"] == env["PORT_HEALTH"]


def test_edit_endpoint_changes_it_behind_the_clients_back(fake: FakeRunPod) -> None:
    created = save(fake, endpoint_input("console", workersStandby=0))
    fake.edit_endpoint(created["id"], workersMax=9, env={"X": "y"})
    listed = data(gql(fake, "{ myself { endpoints { id workersMax env { key value } } } }"))
    mine = next(e for e in listed["myself"]["endpoints"] if e["id"] == created["id"])
    assert mine["workersMax"] == 9 and mine["env"] == [{"key": "X", "value": "y"}]


def test_runpod_sdk_literal_queries_work(fake: FakeRunPod, monkeypatch: pytest.MonkeyPatch) -> None:
    """runpod-python writes values into the query text (no variables) and sends Bearer."""
    from runpod.api.graphql import run_graphql_query
    from runpod.api.mutations.endpoints import generate_endpoint_mutation
    from runpod.api.mutations.templates import generate_pod_template
    from runpod.api.queries.endpoints import QUERY_ENDPOINT

    monkeypatch.setenv("RUNPOD_API_BASE_URL", f"{fake.url}/api")
    template = run_graphql_query(
        generate_pod_template("sdk-tpl", "runpod/x:1", env={"K": "v"}, is_serverless=True),
        api_key=fake.api_key,
    )["data"]["saveTemplate"]
    created = run_graphql_query(
        generate_endpoint_mutation("sdk-ep", template["id"], flashboot=True),
        api_key=fake.api_key,
    )["data"]["saveEndpoint"]
    assert created["flashBootType"] == "FLASHBOOT" and created["templateId"] == template["id"]
    listed = run_graphql_query(QUERY_ENDPOINT, api_key=fake.api_key)["data"]["myself"]
    mine = next(e for e in listed["endpoints"] if e["id"] == created["id"])
    assert mine["env"] == [{"key": "K", "value": "v"}]


def test_prices_for_gpu_types_and_cpu_flavors(fake: FakeRunPod) -> None:
    gpus = data(
        gql(
            fake,
            "query g($f: GpuTypeFilter, $p: GpuLowestPriceInput) { gpuTypes(input: $f) "
            "{ id lowestPrice(input: $p) { uninterruptablePrice stockStatus } } }",
            {"f": {"id": "NVIDIA RTX A4000"}, "p": {"gpuCount": 2}},
        )
    )["gpuTypes"]
    assert len(gpus) == 1 and gpus[0]["lowestPrice"]["uninterruptablePrice"] > 0
    cpus = data(
        gql(
            fake,
            "query c($f: CpuFlavorInput, $s: SpecificsInput) { cpuFlavors(input: $f) "
            "{ id specifics(input: $s) { slsPrice stockStatus } } }",
            {"f": {"id": "cpu3c"}, "s": {"instanceId": "cpu3c-2-4"}},
        )
    )["cpuFlavors"]
    assert cpus[0]["id"] == "cpu3c" and cpus[0]["specifics"]["slsPrice"] > 0


# --- flash apps, environments, builds, uploads -------------------------------------------------
def _tarball(manifest: dict[str, Any] | None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        files = {"handler_api.py": b"app = None\n"}
        if manifest is not None:
            files["flash_manifest.json"] = json.dumps(manifest).encode()
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _input_operation(kind: str, operation: str, selection: str) -> str:
    """A `kind` document calling `operation(input: $input) { selection }`; the input's type is
    the operation's name capitalized + `Input`, as the schema names them all."""
    input_type = f"{operation[0].upper()}{operation[1:]}Input"
    return f"{kind} op($input: {input_type}!) {{ {operation}(input: $input) {{ {selection} }} }}"


def _call(
    fake: FakeRunPod,
    operation: str,
    payload: dict[str, Any],
    selection: str,
    kind: str = "mutation",
) -> dict[str, Any]:
    """Run `operation` with `payload` as its input: its result (the test fails on errors)."""
    document = _input_operation(kind, operation, selection)
    return data(gql(fake, document, {"input": payload}))[operation]


def _upload(fake: FakeRunPod, app_id: str, body: bytes) -> tuple[str, str]:
    slot = _call(
        fake,
        "prepareFlashArtifactUpload",
        {"flashAppId": app_id, "tarballSize": len(body)},
        "uploadUrl objectKey expiresAt",
    )
    return slot["uploadUrl"], slot["objectKey"]


def _app(fake: FakeRunPod, name: str) -> str:
    return _call(fake, "createFlashApp", {"name": name}, "id")["id"]


FINALIZE = _input_operation("mutation", "finalizeFlashArtifactUpload", "id manifest resourceSpec")


def test_presigned_upload_refuses_auth_header_and_wrong_size(fake: FakeRunPod) -> None:
    app_id = _app(fake, "upload-rules")
    body = _tarball({"resources": {}})
    url, key = _upload(fake, app_id, body)
    gz = {"Content-Type": "application/gzip"}
    finalize = {"input": {"flashAppId": app_id, "objectKey": key}}
    assert "not uploaded" in error(gql(fake, FINALIZE, finalize))
    with_auth = httpx.put(
        url, content=body, headers={**gz, "Authorization": f"Bearer {fake.api_key}"}
    )
    assert with_auth.status_code == 400
    assert httpx.put(url, content=body + b"x", headers=gz).status_code == 403
    assert httpx.put(url.replace("sig=", "sig=x"), content=body, headers=gz).status_code == 403
    assert httpx.put(url, content=body, headers=gz).status_code == 200
    build = data(gql(fake, FINALIZE, finalize))["finalizeFlashArtifactUpload"]
    assert build["manifest"] == {"resources": {}} == build["resourceSpec"]


def test_finalize_rejects_a_tarball_without_manifest(fake: FakeRunPod) -> None:
    app_id = _app(fake, "no-manifest")
    body = _tarball(None)
    url, key = _upload(fake, app_id, body)
    assert httpx.put(url, content=body).status_code == 200
    message = error(gql(fake, FINALIZE, {"input": {"flashAppId": app_id, "objectKey": key}}))
    assert "flash_manifest.json" in message


def test_flash_app_env_build_flow_with_mutable_manifest(fake: FakeRunPod) -> None:
    missing = gql(
        fake, "query a($n: String!) { flashAppByName(flashAppName: $n) { id } }", {"n": "nope"}
    )
    assert "app not found" in error(missing).lower()
    app_id = _app(fake, "flow")
    env = _call(
        fake,
        "createFlashEnvironment",
        {"flashAppId": app_id, "name": "production"},
        "id name state",
    )
    body = _tarball({"version": "1.0", "resources": {"api": {}}})
    url, key = _upload(fake, app_id, body)
    assert httpx.put(url, content=body).status_code == 200
    build = data(gql(fake, FINALIZE, {"input": {"flashAppId": app_id, "objectKey": key}}))
    build_id = build["finalizeFlashArtifactUpload"]["id"]
    deployed = _call(
        fake,
        "deployBuildToEnvironment",
        {"flashEnvironmentId": env["id"], "flashBuildId": build_id},
        "id name activeArtifact { objectKey downloadUrl expiresAt }",
    )
    assert deployed["activeArtifact"]["objectKey"] == key
    assert httpx.get(deployed["activeArtifact"]["downloadUrl"]).content == body
    manifest = {"resources_endpoints": {"api": "http://x"}, "resources": {"api": {}}}
    _call(fake, "updateFlashBuildManifest", {"flashBuildId": build_id, "manifest": manifest}, "id")
    read = data(
        gql(
            fake,
            "query b($id: String!) { flashBuild(flashBuildId: $id) { manifest } }",
            {"id": build_id},
        )
    )
    assert read["flashBuild"]["manifest"] == manifest
    by_name = _call(
        fake,
        "flashEnvironmentByName",
        {"flashAppId": app_id, "name": "production"},
        "id activeBuildId endpoints { id }",
        kind="query",
    )
    assert by_name["activeBuildId"] == build_id


def _template(fake: FakeRunPod, name: str) -> str:
    payload = {"name": name, "imageName": "img", "env": [], "isServerless": True, "volumeInGb": 0}
    return data(gql(fake, SAVE_TEMPLATE, {"input": payload}))["saveTemplate"]["id"]


# --- tetra-rp 0.20.0's own client --------------------------------------------------------------
TETRA_SCRIPT = textwrap.dedent(
    """
    import asyncio, gzip, io, json, sys, tarfile, tempfile
    from pathlib import Path
    from tetra_rp import CpuServerlessEndpoint, LiveServerless
    from tetra_rp.core.api.runpod import RunpodGraphQLClient
    from tetra_rp.core.resources.app import FlashApp

    async def main():
        resource = CpuServerlessEndpoint(name="tetra-contract", imageName="runpod/x:1")
        deployed = await resource._do_deploy()
        async with RunpodGraphQLClient() as client:
            exists = await client.endpoint_exists(deployed.id)
        app, env = await FlashApp.create_environment_and_app("tetra-app", "production")
        tar_path = Path(tempfile.mkdtemp()) / "artifact.tar.gz"
        with tarfile.open(tar_path, "w:gz") as tar:
            content = json.dumps({"resources": {"tetra-contract": {}}}).encode()
            info = tarfile.TarInfo("flash_manifest.json"); info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        # (tetra-rp's LB deploy then polls https://{id}.api.runpod.ai/ping: not pointable here)
        others = [await LiveServerless(name="tetra-gpu")._do_deploy()]
        kinds = [(o.type.value, bool(o.templateId), bool(o.aiKey)) for o in others]
        removed = [await o._do_undeploy() for o in others]
        build = await app.upload_build(tar_path)
        await app.deploy_build_to_environment(build["id"], environment_name="production")
        await app._register_endpoint_to_environment(env["id"], deployed.id)
        envs = await app.list_environments()
        undeployed = await deployed._do_undeploy()
        async with RunpodGraphQLClient() as client:
            gone = not await client.endpoint_exists(deployed.id)
        print(json.dumps({"id": deployed.id, "templateId": deployed.templateId,
                          "exists": exists, "undeployed": undeployed, "gone": gone,
                          "build": build["id"], "envs": envs,
                          "others": kinds, "others_removed": removed}))

    asyncio.run(main())
    """
)


def test_tetra_rp_client_deploys_and_deletes_an_endpoint(fake: FakeRunPod, tmp_path: Path) -> None:
    report = python_json(TETRA_SCRIPT, {**os.environ, **fake.env()}, cwd=tmp_path, timeout=90)
    assert report["exists"] and report["undeployed"] and report["gone"]
    assert report["others"] == [["QB", True, True]]
    assert report["others_removed"] == [True]
    assert report["envs"][0]["activeBuildId"] == report["build"]
    assert report["id"] not in {e.id for e in fake.endpoints()}
    calls = [c.fields[-1] for c in fake.graphql_calls]
    assert "saveEndpoint" in calls and "deleteEndpoint" in calls
    assert "finalizeFlashArtifactUpload" in calls and "addEndpointToFlashEnvironment" in calls


# --- the script ---------------------------------------------------------------------------------
def test_script_prints_exports_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--port", "0", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        exports = dict(
            process.stdout.readline().removeprefix("export ").strip().split("=", 1)
            for _ in range(5)
        )
        assert set(exports) == {
            "RUNPOD_API_KEY",
            "RUNPOD_API_BASE_URL",
            "RUNPOD_ENDPOINT_BASE_URL",
            "RUNPOD_REST_API_URL",
            "FLASH_RUNPOD_LB_URL",
        }
        unknown = httpx.get(
            f"{exports['RUNPOD_ENDPOINT_BASE_URL']}/nosuchendpoint/health",
            headers={"Authorization": f"Bearer {exports['RUNPOD_API_KEY']}"},
        )
        assert unknown.status_code == 404  # the data plane is mounted too
        reply = httpx.post(
            f"{exports['RUNPOD_API_BASE_URL']}/graphql",
            json={"query": "{ myself { id } }"},
            headers={"Authorization": f"Bearer {exports['RUNPOD_API_KEY']}"},
        )
        assert reply.status_code == 200 and reply.json()["data"]["myself"]["id"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_delete_template_lags_after_last_use_when_asked(tmp_path: Path) -> None:
    with FakeRunPod(tmp_path, data_plane=False, template_release_lag=1.0) as lagging:
        created = save(lagging, endpoint_input("lag"))
        data(
            gql(
                lagging,
                "mutation d($id: String!) { deleteEndpoint(id: $id) }",
                {"id": created["id"]},
            )
        )
        delete = "mutation d($n: String!) { deleteTemplate(templateName: $n) }"
        assert "in use" in error(gql(lagging, delete, {"n": "lag-tpl"}))

        def deleted() -> bool:
            return "errors" not in gql(lagging, delete, {"n": "lag-tpl"}).json()

        assert wait_for(deleted, 15, "deleteTemplate after the lag")
        assert lagging.templates() == []


def test_gpu_pools_are_not_gpu_type_ids(fake: FakeRunPod) -> None:
    query = "query g($f: GpuTypeFilter) { gpuTypes(input: $f) { id } }"
    assert data(gql(fake, query, {"f": {"id": "AMPERE_16"}}))["gpuTypes"] == []
    listed = data(gql(fake, query, {"f": {"ids": ["NVIDIA L4", "NVIDIA H200"]}}))["gpuTypes"]
    assert {g["id"] for g in listed} == {"NVIDIA L4", "NVIDIA H200"}


def test_secret_sightings_find_a_key_in_a_template_env(tmp_path: Path) -> None:
    with FakeRunPod(tmp_path, data_plane=False) as clean:
        save(clean, endpoint_input("clean"))
        assert clean.secret_sightings() == []
        leaky = endpoint_input("leaky")
        leaky["template"]["env"] = [{"key": "RUNPOD_API_KEY", "value": clean.api_key}]
        save(clean, leaky)
        sightings = clean.secret_sightings()
        assert any("leaky-tpl" in where and "RUNPOD_API_KEY" in where for where in sightings)
        assert all(clean.api_key not in where for where in sightings)


def test_script_says_in_one_line_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "--port", str(port), "--no-data-plane"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == f"cannot listen on 127.0.0.1:{port}: Address already in use"
