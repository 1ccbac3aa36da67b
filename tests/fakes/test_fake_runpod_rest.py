"""REST v1 of the contract fake (runpod_api.md §3): endpoints, templates and network volumes
with REST's own names, validation and status codes, on the same records GraphQL reads.

Our provider calls no REST v1 route (GraphQL for the control plane, REST v2 for worker logs);
these are what other clients of the account (runpodctl, the console, scripts) do to it behind
our back, so the fake answers them as the API documents."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fakes.runpod import FakeRunPod


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeRunPod]:
    with FakeRunPod(tmp_path_factory.mktemp("fake"), data_plane=False) as running:
        yield running


@pytest.fixture
def rest(fake: FakeRunPod) -> Iterator[httpx.Client]:
    auth = {"Authorization": f"Bearer {fake.api_key}"}
    with httpx.Client(base_url=f"{fake.url}/rest/v1", headers=auth) as client:
        yield client


def _template(rest: httpx.Client, name: str, **extra: Any) -> dict[str, Any]:
    made = rest.post("/templates", json={"name": name, "imageName": "img:1", **extra})
    assert made.status_code == 200, made.text
    return made.json()


def test_every_route_wants_the_account_key(fake: FakeRunPod) -> None:
    for path in ("/endpoints", "/templates", "/networkvolumes", "/endpoints/x", "/templates/x"):
        assert httpx.get(f"{fake.url}/rest/v1{path}").status_code == 401, path
        wrong = {"Authorization": "Bearer rpa_WRONG"}
        assert httpx.get(f"{fake.url}/rest/v1{path}", headers=wrong).status_code == 401


def test_templates_create_read_update_delete(rest: httpx.Client) -> None:
    made = _template(rest, "t-crud", env={"A": "1"})
    assert made["env"] == {"A": "1"} and made["isServerless"] is True
    assert rest.get(f"/templates/{made['id']}").json() == made
    assert made["id"] in {t["id"] for t in rest.get("/templates").json()}
    patched = rest.patch(f"/templates/{made['id']}", json={"env": {"A": "2"}})
    assert patched.status_code == 200 and patched.json()["env"] == {"A": "2"}
    assert patched.json()["imageName"] == "img:1"  # a partial update keeps the rest
    again = rest.post(f"/templates/{made['id']}/update", json={"imageName": "img:2"})
    assert again.json()["imageName"] == "img:2" and again.json()["env"] == {"A": "2"}
    assert rest.delete(f"/templates/{made['id']}").status_code == 204
    assert rest.get(f"/templates/{made['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"imageName": "img"}, "name is required"),
        ({"name": "t-bad"}, "imageName is required"),
        ({"name": "t-bad", "imageName": "img", "env": {"A": 1}}, "env values"),
        ({"name": "t-bad", "imageName": "img", "env": [{"key": "A"}]}, "env must be dict"),
        ({"name": "t-bad", "imageName": "img", "bogus": 1}, "unknown field 'bogus'"),
    ],
)
def test_a_bad_template_is_a_400_naming_the_field(
    rest: httpx.Client, body: dict[str, Any], says: str
) -> None:
    answer = rest.post("/templates", json=body)
    assert answer.status_code == 400 and says in answer.json()["error"], answer.text


def test_template_names_are_unique(rest: httpx.Client) -> None:
    _template(rest, "t-unique")
    answer = rest.post("/templates", json={"name": "t-unique", "imageName": "img"})
    assert answer.status_code == 400 and "unique" in answer.json()["error"]


def test_endpoint_create_needs_only_a_template_and_maps_rest_names(
    rest: httpx.Client, fake: FakeRunPod
) -> None:
    template = _template(rest, "t-gpu")
    assert rest.post("/endpoints", json={"name": "e"}).json() == {
        "error": "invalid endpoint: templateId is required"
    }
    made = rest.post(
        "/endpoints",
        json={
            "templateId": template["id"],
            "name": "rest-gpu",
            "gpuTypeIds": ["NVIDIA GeForce RTX 4090"],
            "dataCenterIds": ["EU-RO-1", "US-TX-3"],
            "allowedCudaVersions": ["12.4", "12.6"],
            "flashboot": True,
            "workersMax": 2,
        },
    )
    assert made.status_code == 200, made.text
    endpoint = made.json()
    assert endpoint["gpuTypeIds"] == ["NVIDIA GeForce RTX 4090"]
    assert endpoint["dataCenterIds"] == ["EU-RO-1", "US-TX-3"]
    assert endpoint["allowedCudaVersions"] == ["12.4", "12.6"]
    assert endpoint["flashboot"] is True and endpoint["computeType"] == "GPU"
    assert "type" not in endpoint and "aiKey" not in endpoint
    # the same record as GraphQL sees it: the pool, minus the pool's other model
    (seen,) = [e for e in fake.endpoints() if e.id == endpoint["id"]]
    assert seen.gpuIds == "ADA_24,-NVIDIA L4" and seen.locations == "EU-RO-1,US-TX-3"
    assert seen.flashBootType == "FLASHBOOT" and seen.templateId == template["id"]

    bare = rest.post("/endpoints", json={"templateId": template["id"], "gpuTypeIds": ["NVIDIA L4"]})
    assert bare.status_code == 200 and bare.json()["name"].startswith("endpoint-")
    listed = rest.get("/endpoints", params={"includeTemplate": "true"}).json()
    mine = next(e for e in listed if e["id"] == endpoint["id"])
    assert mine["template"]["name"] == "t-gpu"
    assert "template" not in rest.get(f"/endpoints/{endpoint['id']}").json()


def test_cpu_endpoints_take_flavors_and_vcpus(rest: httpx.Client, fake: FakeRunPod) -> None:
    template = _template(rest, "t-cpu")
    body = {"templateId": template["id"], "computeType": "CPU", "cpuFlavorIds": ["cpu3g"]}
    made = rest.post("/endpoints", json={**body, "vcpuCount": 4}).json()
    assert (made["cpuFlavorIds"], made["vcpuCount"], made["gpuTypeIds"]) == (["cpu3g"], 4, [])
    (seen,) = [e for e in fake.endpoints() if e.id == made["id"]]
    assert seen.instanceIds == ["cpu3g-4-16"] and seen.gpuCount == 0
    default = rest.post("/endpoints", json=body).json()
    assert default["vcpuCount"] == 2  # REST's default
    too_big = rest.post("/endpoints", json={**body, "vcpuCount": 64})
    assert too_big.status_code == 400 and "vcpuCount 64" in too_big.json()["error"]
    mixed = rest.post("/endpoints", json={**body, "gpuTypeIds": ["NVIDIA L4"]})
    assert mixed.status_code == 400 and "not gpuTypeIds" in mixed.json()["error"]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"gpuTypeIds": ["RTX 9999"]}, "unknown GPU type 'RTX 9999'"),
        ({"gpuTypeIds": ["NVIDIA L4"], "workersMin": 3, "workersMax": 1}, "must not exceed"),
        ({"gpuTypeIds": ["NVIDIA L4"], "idleTimeout": 0}, "idleTimeout"),
        ({"gpuTypeIds": ["NVIDIA L4"], "type": "LB"}, "unknown field 'type'"),
        ({"gpuTypeIds": ["NVIDIA L4"], "workersMax": "2"}, "workersMax must be int"),
        ({"gpuTypeIds": ["NVIDIA L4"], "flashboot": 1}, "flashboot must be bool"),
        ({"gpuTypeIds": []}, "gpuIds"),
        ({"templateId": "nope", "gpuTypeIds": ["NVIDIA L4"]}, "Template not found"),
    ],
)
def test_a_bad_endpoint_is_a_400_naming_what_is_wrong(
    rest: httpx.Client, extra: dict[str, Any], says: str
) -> None:
    template = _template(rest, f"t-bad-{abs(hash(says))}")
    answer = rest.post("/endpoints", json={"templateId": template["id"], **extra})
    assert answer.status_code == 400 and says in answer.json()["error"], answer.text


def test_endpoint_update_and_delete(rest: httpx.Client, fake: FakeRunPod) -> None:
    template = _template(rest, "t-upd")
    body = {"templateId": template["id"], "gpuTypeIds": ["NVIDIA L4"], "name": "upd"}
    made = rest.post("/endpoints", json=body).json()
    patched = rest.patch(f"/endpoints/{made['id']}", json={"workersMax": 5})
    assert patched.status_code == 200 and patched.json()["workersMax"] == 5
    assert patched.json()["gpuTypeIds"] == ["NVIDIA L4"] and patched.json()["version"] == 1
    moved = rest.post(f"/endpoints/{made['id']}/update", json={"gpuTypeIds": ["NVIDIA A40"]})
    assert moved.json()["gpuTypeIds"] == ["NVIDIA A40"] and moved.json()["version"] == 2
    bad = rest.patch(f"/endpoints/{made['id']}", json={"workersMin": 9})
    assert bad.status_code == 400 and "must not exceed" in bad.json()["error"]
    assert rest.get(f"/endpoints/{made['id']}").json()["workersMin"] == 0  # nothing changed
    in_use = rest.delete(f"/templates/{template['id']}")
    assert in_use.status_code == 400 and "in use" in in_use.json()["error"]
    assert rest.delete(f"/endpoints/{made['id']}").status_code == 204
    assert rest.get(f"/endpoints/{made['id']}").status_code == 404
    assert rest.patch(f"/endpoints/{made['id']}", json={}).status_code == 404
    assert made["id"] not in {e.id for e in fake.endpoints()}
    assert rest.delete(f"/templates/{template['id']}").status_code == 204


def test_network_volumes_read_grow_and_delete(rest: httpx.Client) -> None:
    made = rest.post("/networkvolumes", json={"name": "v", "size": 10, "dataCenterId": "EU-RO-1"})
    volume = made.json()
    assert rest.get(f"/networkvolumes/{volume['id']}").json() == volume
    grown = rest.patch(f"/networkvolumes/{volume['id']}", json={"size": 20, "name": "w"})
    assert grown.json() == {**volume, "size": 20, "name": "w"}
    shrink = rest.post(f"/networkvolumes/{volume['id']}/update", json={"size": 5})
    assert shrink.status_code == 400 and "only grow" in shrink.json()["error"]
    missing = rest.post("/networkvolumes", json={"name": "v", "size": 10})
    assert missing.status_code == 400 and "dataCenterId is required" in missing.json()["error"]
    assert rest.delete(f"/networkvolumes/{volume['id']}").status_code == 204
    assert rest.get(f"/networkvolumes/{volume['id']}").status_code == 404
