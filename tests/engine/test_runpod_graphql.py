"""The RunPod config and GraphQL client: where the key comes from, what each failure of the API
does (401/403, 429 + Retry-After, 5xx, timeouts, GraphQL errors with HTTP 200), which operations
are retried, and that the key is in no message or repr.

The failures are played by a small scripted HTTP server on 127.0.0.1 (real sockets, real
uvicorn): each request takes the next scripted answer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from waiting import wait_for

from engine.runpod.config import ConfigError, load_config
from engine.runpod.graphql import (
    AuthError,
    GraphQLClient,
    GraphQLError,
    RetryPolicy,
    TransientError,
)
from runtime.runpod_wire import Operation

KEY = "rpa_TESTKEY_graphql_0123456789"


@dataclass
class Answer:
    """One scripted reply."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Script:
    """The answers to give, in order, and the requests seen."""

    answers: list[Answer] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)


class ScriptedServer:
    """A real HTTP server on a free port answering `POST /graphql` from a script."""

    def __init__(self) -> None:
        self.script = Script()
        app = Starlette(routes=[Route("/graphql", self._graphql, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def _graphql(self, request: Request) -> Response:
        self.script.seen.append(
            {"auth": request.headers.get("authorization"), "body": await request.json()}
        )
        answer = self.script.answers.pop(0) if self.script.answers else Answer(500)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    def start(self) -> str:
        self.thread.start()
        wait_for(lambda: self.server.started, 10, "scripted server up")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ScriptedServer, str]]:
    scripted = ScriptedServer()
    url = scripted.start()
    try:
        yield scripted, url
    finally:
        scripted.stop()


@pytest.fixture
def script(server: tuple[ScriptedServer, str]) -> Script:
    scripted, _ = server
    scripted.script = Script()
    return scripted.script


def _client(url: str, http: httpx.AsyncClient, **kwargs: Any) -> GraphQLClient:
    config = load_config(
        {"RUNPOD_API_KEY": KEY, "RUNPOD_API_BASE_URL": url}, home=Path("/nonexistent")
    )
    policy = RetryPolicy(attempts=3, base=0.05, cap=0.2)
    return GraphQLClient(config, http, policy=policy, **kwargs)


OK = Answer(200, {"data": {"myself": {"id": "u1", "email": "me@example.com"}}})
QUERY = "query myself { myself { id email } }"
CREATE = "mutation saveEndpoint($input: EndpointInput!) { saveEndpoint(input: $input) { id } }"


# -- config ---------------------------------------------------------------------------------


def test_key_from_env_wins_over_the_file(tmp_path: Path) -> None:
    (tmp_path / ".runpod").mkdir()
    (tmp_path / ".runpod" / "config.toml").write_text('[default]\napi_key = "from-file-key"\n')
    config = load_config({"RUNPOD_API_KEY": KEY}, home=tmp_path)
    assert config.api_key == KEY and config.key_source == "RUNPOD_API_KEY"
    blank = load_config({"RUNPOD_API_KEY": "  "}, home=tmp_path)
    assert blank.api_key == "from-file-key"
    assert str(tmp_path / ".runpod" / "config.toml") in blank.key_source
    assert KEY not in repr(config) and "from-file-key" not in repr(blank)


def test_missing_key_says_where_it_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({}, home=tmp_path)
    message = str(caught.value)
    assert "RUNPOD_API_KEY" in message and str(tmp_path / ".runpod" / "config.toml") in message
    assert "\n" not in message


def test_urls_default_and_override(tmp_path: Path) -> None:
    default = load_config({"RUNPOD_API_KEY": KEY}, home=tmp_path)
    assert default.graphql_url == "https://api.runpod.io/graphql"
    assert default.queue_url("abc") == "https://api.runpod.ai/v2/abc"
    assert default.lb_url("abc") == "https://abc.api.runpod.ai"
    assert default.rest_base == "https://rest.runpod.io/v1"
    moved = load_config(
        {
            "RUNPOD_API_KEY": KEY,
            "RUNPOD_API_BASE_URL": "http://127.0.0.1:9/api/",
            "RUNPOD_ENDPOINT_BASE_URL": "http://127.0.0.1:9/v2",
            "RUNPOD_REST_API_URL": "http://127.0.0.1:9/rest/v1",
            "FLASH_RUNPOD_LB_URL": "http://127.0.0.1:9/lb/{id}",
        },
        home=tmp_path,
    )
    assert moved.graphql_url == "http://127.0.0.1:9/api/graphql"
    assert moved.queue_url("e1") == "http://127.0.0.1:9/v2/e1"
    assert moved.lb_url("e1") == "http://127.0.0.1:9/lb/e1"
    assert moved.rest_base == "http://127.0.0.1:9/rest/v1"


# -- the client -----------------------------------------------------------------------------


async def test_bearer_key_and_data(server: tuple[ScriptedServer, str], script: Script) -> None:
    script.answers = [OK]
    async with httpx.AsyncClient() as http:
        client = _client(server[1], http)
        data = await client.execute(Operation(QUERY))
    assert data["myself"]["email"] == "me@example.com"
    assert script.seen[0]["auth"] == f"Bearer {KEY}"
    assert KEY not in repr(client)


@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_key_names_its_source(
    server: tuple[ScriptedServer, str], script: Script, status: int
) -> None:
    script.answers = [Answer(status, {"error": f"bad key {KEY}"})]
    async with httpx.AsyncClient() as http:
        client = _client(server[1], http)
        with pytest.raises(AuthError) as caught:
            await client.execute(Operation(QUERY))
    assert "RUNPOD_API_KEY" in str(caught.value) and str(status) in str(caught.value)
    assert KEY not in str(caught.value)
    assert client.calls == 1  # a refused key is not retried


async def test_429_waits_for_retry_after_then_succeeds(
    server: tuple[ScriptedServer, str], script: Script
) -> None:
    script.answers = [Answer(429, {"errors": [{"message": "slow down"}]}, {"Retry-After": "1"}), OK]
    async with httpx.AsyncClient() as http:
        client = _client(server[1], http)
        # Even a create: a 429 applied nothing.
        data = await client.execute(Operation(CREATE, {"input": {}}))
    assert data["myself"]["id"] == "u1"
    assert client.calls == 2 and client.waits == [1.0]


async def test_5xx_retries_queries_with_backoff(
    server: tuple[ScriptedServer, str], script: Script
) -> None:
    script.answers = [Answer(502, {}), Answer(503, {}), OK]
    async with httpx.AsyncClient() as http:
        client = _client(server[1], http)
        data = await client.execute(Operation(QUERY))
    assert data["myself"]["id"] == "u1" and client.calls == 3
    first, second = client.waits
    assert 0.04 <= first <= 0.06 and 0.08 <= second <= 0.12  # base·2^n ± 20 % jitter


async def test_5xx_retries_are_bounded(server: tuple[ScriptedServer, str], script: Script) -> None:
    script.answers = [Answer(500, {})] * 5
    async with httpx.AsyncClient() as http:
        client = _client(server[1], http)
        with pytest.raises(TransientError, match="HTTP 500"):
            await client.execute(Operation(QUERY))
    assert client.calls == 3


async def test_a_create_is_not_retried_after_a_5xx(
    server: tuple[ScriptedServer, str], script: Script
) -> None:
    script.answers = [Answer(503, {}), OK]
    async with httpx.AsyncClient() as http:
        client = _client(server[1], http)
        with pytest.raises(TransientError, match="not retried"):
            await client.execute(Operation(CREATE, {"input": {}}))
        assert client.calls == 1
        script.answers = [Answer(503, {}), OK]
        # An update is idempotent: retried.
        await client.execute(Operation(CREATE, {"input": {"id": "e1"}}, idempotent=True))
    assert client.calls == 3


async def test_timeouts_are_retried_for_queries(
    server: tuple[ScriptedServer, str], script: Script
) -> None:
    script.answers = [Answer(200, OK.body, delay=1.0), OK]
    async with httpx.AsyncClient() as http:
        client = _client(server[1], http, timeout=0.3)
        data = await client.execute(Operation(QUERY))
    assert data["myself"]["id"] == "u1" and client.calls == 2


async def test_graphql_errors_with_http_200(
    server: tuple[ScriptedServer, str], script: Script
) -> None:
    script.answers = [Answer(200, {"errors": [{"message": f"invalid input for key {KEY}"}]})]
    async with httpx.AsyncClient() as http:
        client = _client(server[1], http)
        with pytest.raises(GraphQLError) as caught:
            await client.execute(Operation(QUERY))
        assert client.calls == 1 and KEY not in str(caught.value)
        assert "invalid input" in str(caught.value)
        script.answers = [
            Answer(200, {"errors": [{"message": "Service Unavailable, try again later"}]}),
            OK,
        ]
        await client.execute(Operation(QUERY))
    assert client.calls == 3  # the transient one was retried


async def test_unreachable_api_is_one_line_without_key(tmp_path: Path) -> None:
    config = load_config(
        {"RUNPOD_API_KEY": KEY, "RUNPOD_API_BASE_URL": "http://127.0.0.1:9"}, home=tmp_path
    )
    async with httpx.AsyncClient() as http:
        client = GraphQLClient(config, http, policy=RetryPolicy(attempts=2, base=0.01))
        with pytest.raises(TransientError) as caught:
            await client.execute(Operation(QUERY))
    assert "unreachable" in str(caught.value) and KEY not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_operation_knows_its_kind_name_and_whether_a_failure_may_be_retried() -> None:
    create = Operation("mutation saveEndpoint($input: EndpointInput!) { x }", {"input": {}})
    assert (create.kind, create.name, create.retryable) == ("mutation", "saveEndpoint", False)
    assert Operation(create.document, idempotent=True).retryable
    anonymous = Operation("  { myself { id } }")
    assert (anonymous.kind, anonymous.name, anonymous.retryable) == ("query", "query", True)
    assert not Operation("query myself { myself { id } }", idempotent=False).retryable
    assert create.body() == {"query": create.document, "variables": {"input": {}}}
