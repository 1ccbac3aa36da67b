"""Fault injection and the REST v1 plane of the RunPod fake, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fakes.runpod import FakeRunPod


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeRunPod]:
    """A control-plane-only fake; each test leaves no fault pending."""
    with FakeRunPod(tmp_path_factory.mktemp("fake-runpod-faults"), data_plane=False) as server:
        yield server


@pytest.fixture(autouse=True)
def no_leftover_faults(fake: FakeRunPod) -> Iterator[None]:
    yield
    assert fake.pending_faults() == []


def ask(
    fake: FakeRunPod, query: str = "query me { myself { id } }", **kw: object
) -> httpx.Response:
    """POST a GraphQL document with the account key."""
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    return httpx.post(f"{fake.url}/api/graphql", json={"query": query}, headers=headers, **kw)


def test_429_with_retry_after_then_normal(fake: FakeRunPod) -> None:
    fake.fail_next("myself", status=429, retry_after=3)
    throttled = ask(fake)
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "3"
    assert ask(fake).status_code == 200


def test_graphql_error_comes_with_http_200(fake: FakeRunPod) -> None:
    fake.fail_next("me", graphql_error="Something went wrong. Please try again later.")
    reply = ask(fake)
    assert reply.status_code == 200
    assert reply.json()["errors"][0]["message"].endswith("try again later.")
    assert reply.json()["data"] is None


def test_5xx_on_a_path_for_n_requests(fake: FakeRunPod) -> None:
    fake.fail_next("/api/graphql", status=503, times=2)
    assert [ask(fake).status_code for _ in range(3)] == [503, 503, 200]


def test_401_fault_even_with_the_right_key(fake: FakeRunPod) -> None:
    fake.fail_next("myself", status=401)
    assert ask(fake).status_code == 401
    assert ask(fake).status_code == 200


def test_operation_faults_hit_only_their_operation(fake: FakeRunPod) -> None:
    fake.fail_next("saveEndpoint", status=500)
    assert ask(fake).status_code == 200  # a query of myself is not saveEndpoint
    failed = ask(fake, 'mutation { saveEndpoint(input: {name: "f", templateId: "t"}) { id } }')
    assert failed.status_code == 500


def test_slow_response_then_normal(fake: FakeRunPod) -> None:
    fake.fail_next("myself", delay=3.0)
    with pytest.raises(httpx.ReadTimeout):
        ask(fake, timeout=0.3)
    assert ask(fake, timeout=10).status_code == 200


def test_faults_on_the_upload_plane(fake: FakeRunPod) -> None:
    fake.fail_next("/upload/", status=503)
    assert httpx.put(f"{fake.url}/upload/any?sig=x", content=b"x").status_code == 503


def test_fault_arguments_are_checked(fake: FakeRunPod) -> None:
    with pytest.raises(ValueError):
        fake.fail_next("myself")
    with pytest.raises(ValueError):
        fake.fail_next("myself", status=500, graphql_error="x")


def test_rest_v1_network_volumes(fake: FakeRunPod) -> None:
    url = f"{fake.url}/rest/v1/networkvolumes"
    auth = {"Authorization": f"Bearer {fake.api_key}"}
    assert httpx.get(url).status_code == 401
    bad = httpx.post(url, json={"name": "v", "size": 5000, "dataCenterId": "EU-RO-1"}, headers=auth)
    assert bad.status_code == 400 and "size" in bad.text
    assert httpx.post(url, json={"name": "v"}, headers=auth).status_code == 400
    made = httpx.post(url, json={"name": "v", "size": 10, "dataCenterId": "EU-RO-1"}, headers=auth)
    assert made.status_code == 200
    assert made.json()["id"] in {v["id"] for v in httpx.get(url, headers=auth).json()}


def test_rest_v1_endpoint_get_and_delete(fake: FakeRunPod) -> None:
    auth = {"Authorization": fake.api_key}  # the bare key, as the docs' curl examples send it
    query = (
        'mutation { saveEndpoint(input: {name: "rest", gpuIds: "AMPERE_16", template: '
        '{name: "rest-tpl", imageName: "img", env: [{key: "A", value: "1"}]}}) { id } }'
    )
    endpoint_id = ask(fake, query).json()["data"]["saveEndpoint"]["id"]
    url = f"{fake.url}/rest/v1/endpoints/{endpoint_id}"
    assert httpx.get(url, headers=auth).json()["env"] == {"A": "1"}
    assert httpx.delete(url, headers=auth).status_code == 204
    assert httpx.get(url, headers=auth).status_code == 404


def test_a_non_ascii_key_is_refused_not_a_crash(fake: FakeRunPod) -> None:
    headers = {"Authorization": "Bearer clé".encode("latin-1")}
    reply = httpx.post(
        f"{fake.url}/api/graphql", json={"query": "{ myself { id } }"}, headers=headers
    )
    assert reply.status_code == 401
    assert httpx.put(f"{fake.url}/upload/k?sig=é", content=b"x").status_code == 403
