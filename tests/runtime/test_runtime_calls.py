"""Service registry and cross-endpoint calls, against real servers on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from worker_harness import serve_asgi

from runtime import calls
from runtime.auth import BearerAuthMiddleware
from runtime.errors import EndpointNotFoundError, RemoteExecutionError
from runtime.lb_app import create_lb_app
from runtime.qb_handler import create_handler
from runtime.queue_server import QueueServer
from runtime.registry import EndpointInfo, ServiceRegistry, parse_endpoints


def square(x: int) -> int:
    return x * x


def divide(a: float, b: float) -> float:
    return a / b


async def lookup(user_id: int, fields: list[str], verbose: bool = False) -> dict:
    return {"id": user_id, "fields": fields, "verbose": verbose}


def describe(name: str, tags: list[str] | None = None, size: int = 1) -> dict:
    return {"name": name, "tags": tags or [], "size": size}


def ingest(payload: dict) -> dict:
    return {"keys": sorted(payload)}


def fail_route(x: int) -> int:
    raise RuntimeError(f"route failed for {x}")


def live_fn(a: int, b: int = 2) -> int:
    return a**b


class Counter:
    """State kept between method calls on the same (remote) instance."""

    def __init__(self, start: int = 0) -> None:
        self.value = start

    def add(self, n: int = 1) -> int:
        self.value += n
        return self.value

    def boom(self) -> None:
        raise ValueError("counter broke")


MANIFEST: dict[str, Any] = {
    "resources": {
        "qb": {
            "resource_type": "LiveServerless",
            "functions": [
                {"name": "square"},
                {"name": "divide"},
                {"name": "Counter", "is_class": True},
            ],
        },
        "lb": {
            "resource_type": "CpuLoadBalancerSlsResource",
            "functions": [
                {"name": "lookup", "http_method": "GET", "http_path": "/users/{user_id}"},
                {"name": "describe", "http_method": "POST", "http_path": "/describe"},
                {"name": "ingest", "http_method": "POST", "http_path": "/ingest"},
                {"name": "fail_route", "http_method": "POST", "http_path": "/fail"},
            ],
        },
        "live": {
            "resource_type": "LiveLoadBalancer",
            "functions": [{"name": "live_fn", "http_method": "POST", "http_path": "/live"}],
        },
    },
    "function_registry": {"square": "qb", "divide": "qb", "lookup": "lb", "describe": "lb"},
}


@pytest.fixture(scope="module")
def servers():
    qb = BearerAuthMiddleware(
        QueueServer(create_handler({"square": square, "divide": divide, "Counter": Counter})), "kq"
    )
    lb = BearerAuthMiddleware(
        create_lb_app(
            {
                ("GET", "/users/{user_id}"): lookup,
                ("POST", "/describe"): describe,
                ("POST", "/ingest"): ingest,
                ("POST", "/fail"): fail_route,
            }
        ),
        "kl",
    )
    live = create_lb_app({("POST", "/live"): live_fn}, include_execute=True)
    with serve_asgi(qb) as qb_url, serve_asgi(lb) as lb_url, serve_asgi(live) as live_url:
        yield {
            "qb": EndpointInfo("qb", qb_url, "kq"),
            "lb": EndpointInfo("lb", lb_url, "kl"),
            "live": EndpointInfo("live", live_url),
        }


@pytest.fixture
def registry(servers):
    reg = ServiceRegistry(MANIFEST, current_resource="gateway", inline=servers)
    calls.set_registry(reg)
    yield reg
    calls.reset()


async def test_qb_call_round_trips_pickled_values(registry) -> None:
    assert await calls.dispatch(square, "qb", (7,), {}) == 49
    assert await calls.dispatch(divide, "qb", (1,), {"b": 8}) == 0.125


async def test_qb_remote_error_carries_the_remote_traceback(registry) -> None:
    with pytest.raises(RemoteExecutionError) as info:
        await calls.dispatch(divide, "qb", (1, 0), {})
    assert "ZeroDivisionError" in str(info.value) and info.value.endpoint == "qb"
    assert "in divide" in info.value.remote_traceback


async def test_lb_route_call_get_with_path_and_query(registry) -> None:
    result = await calls.dispatch(lookup, "lb", (5, ["a", "b"]), {"verbose": True})
    assert result == {"id": 5, "fields": ["a", "b"], "verbose": True}


async def test_lb_route_call_post_body_by_name_and_whole_dict(registry) -> None:
    assert await calls.dispatch(describe, "lb", ("box",), {"size": 3}) == {
        "name": "box",
        "tags": [],
        "size": 3,
    }
    assert await calls.dispatch(ingest, "lb", ({"z": 1, "a": 2},), {}) == {"keys": ["a", "z"]}


async def test_lb_route_error_carries_status_and_traceback(registry) -> None:
    with pytest.raises(RemoteExecutionError) as info:
        await calls.dispatch(fail_route, "lb", (3,), {})
    assert info.value.status == 500 and "route failed for 3" in str(info.value)
    assert "in fail_route" in info.value.remote_traceback


async def test_live_lb_uses_execute(registry) -> None:
    assert await calls.dispatch(live_fn, "live", (3,), {"b": 3}) == 27


async def test_local_calls(registry) -> None:
    async def mine(x: int) -> int:
        return x + 1

    assert await calls.dispatch(mine, "gateway", (1,), {}) == 2  # this process's resource
    calls.set_registry(None)  # no registry configured: everything local
    assert await calls.dispatch(square, "qb", (3,), {}) == 9


async def test_unknown_endpoint(registry) -> None:
    with pytest.raises(EndpointNotFoundError, match="'nowhere'"):
        await calls.dispatch(square, "nowhere", (1,), {})


async def test_wrong_key_is_an_http_error(servers) -> None:
    bad = dict(servers)
    bad["qb"] = EndpointInfo("qb", servers["qb"].url, "wrong")
    calls.set_registry(ServiceRegistry(MANIFEST, current_resource="x", inline=bad))
    try:
        with pytest.raises(RemoteExecutionError) as info:
            await calls.dispatch(square, "qb", (1,), {})
        assert info.value.status == 401
    finally:
        calls.reset()


def test_endpoint_info_hides_the_key() -> None:
    info = EndpointInfo("a", "http://x", "super-secret")
    assert "super-secret" not in repr(info)
    assert info.headers() == {"Authorization": "Bearer super-secret"}


def test_parse_endpoints_shapes() -> None:
    table = parse_endpoints(
        {
            "endpoints": {"a": {"url": "http://a/", "key": "ka"}, "b": "http://b"},
            "resources": {"c": {"endpoint_url": "http://c", "endpoint_key": "kc"}, "d": {}},
        }
    )
    assert table["a"] == EndpointInfo("a", "http://a", "ka")
    assert table["b"].url == "http://b" and table["b"].key is None
    assert table["c"].key == "kc" and "d" not in table
    assert parse_endpoints([1]) == {} and parse_endpoints(None) == {}


def test_from_env_needs_an_endpoint_source(tmp_path: Path) -> None:
    assert ServiceRegistry.from_env({}) is None
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(MANIFEST))
    reg = ServiceRegistry.from_env(
        {
            "FLASH_ENDPOINTS_FILE": str(tmp_path / "e.json"),
            "FLASH_MANIFEST_PATH": str(manifest),
            "FLASH_RESOURCE_NAME": "qb",
        }
    )
    assert reg is not None and reg.is_local("qb") and not reg.is_local("lb")
    target = reg.function_target("lookup", "lb")
    assert target.is_load_balanced and not target.is_live
    assert (target.http_method, target.http_path) == ("GET", "/users/{user_id}")
    assert reg.function_target("live_fn", "live").is_live


async def test_endpoints_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"endpoints": {"a": {"url": "http://127.0.0.1:1", "key": "k"}}}))
    reg = ServiceRegistry({}, endpoints_file=path)
    assert (await reg.endpoint("a")).url == "http://127.0.0.1:1"
    # a new endpoint (refresh on miss) and a moved one (file changed)
    path.write_text(
        json.dumps(
            {"endpoints": {"a": {"url": "http://127.0.0.1:2"}, "b": {"url": "http://127.0.0.1:3"}}}
        )
    )
    assert (await reg.endpoint("b")).url == "http://127.0.0.1:3"
    assert (await reg.endpoint("a")).url == "http://127.0.0.1:2"
    with pytest.raises(EndpointNotFoundError):
        await reg.endpoint("zzz")


async def test_endpoints_url_with_ttl_cache_and_refresh_on_miss() -> None:
    state: dict[str, Any] = {"hits": 0, "auth": [], "table": {"a": {"url": "http://h:1"}}}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        state["hits"] += 1
        state["auth"].append(dict(scope["headers"]).get(b"authorization"))
        body = json.dumps({"endpoints": state["table"]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    with serve_asgi(app, lifespan="off") as url:
        reg = ServiceRegistry({}, endpoints_url=url, endpoints_token="tok", ttl=300)
        assert (await reg.endpoint("a")).url == "http://h:1"
        assert (await reg.endpoint("a")).url == "http://h:1"
        assert state["hits"] == 1  # cached
        state["table"]["b"] = {"url": "http://h:2"}
        reg._last_refresh = 0.0  # let the miss refresh at once
        assert (await reg.endpoint("b")).url == "http://h:2"
        assert state["hits"] == 2 and state["auth"][0] == b"Bearer tok"


async def test_endpoints_url_retries_with_backoff_and_keeps_stale_entries() -> None:
    """A mothership's /manifest failing twice is retried; one that cannot be had leaves the
    table it served last in use (a brief outage does not fail every call)."""
    state: dict[str, Any] = {"hits": 0, "fail": 2, "down": False}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        state["hits"] += 1
        if state["down"] or state["fail"] > 0:
            state["fail"] -= 1
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        body = json.dumps({"resources": {"a": {"endpoint_url": "http://h:1"}}}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    with serve_asgi(app, lifespan="off") as url:
        reg = ServiceRegistry({}, endpoints_url=url, ttl=0)
        assert (await reg.endpoint("a")).url == "http://h:1"
        assert state["hits"] == 3  # two failures, then the table
        state["down"], state["hits"] = True, 0
        assert (await reg.endpoint("a")).url == "http://h:1"  # stale, kept
        assert state["hits"] == 3


async def test_unreachable_endpoint_then_moved(servers, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"endpoints": {"qb": {"url": dead, "key": "kq"}}}))
    calls.set_registry(ServiceRegistry(MANIFEST, current_resource="x", endpoints_file=path))
    try:
        with pytest.raises(RemoteExecutionError, match="cannot reach"):
            await calls.dispatch(square, "qb", (2,), {})
        # the supervisor restarted it elsewhere and rewrote the file
        path.write_text(json.dumps({"endpoints": {"qb": {"url": servers["qb"].url, "key": "kq"}}}))
        assert await calls.dispatch(square, "qb", (2,), {}) == 4
    finally:
        calls.reset()


async def test_call_timeout(servers, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    async def nap(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    with serve_asgi(create_lb_app({("POST", "/nap"): nap})) as url:
        manifest = {
            "resources": {
                "slow": {
                    "resource_type": "LoadBalancerSlsResource",
                    "functions": [{"name": "nap", "http_method": "POST", "http_path": "/nap"}],
                }
            }
        }
        endpoints = {"slow": EndpointInfo("slow", url)}
        calls.set_registry(ServiceRegistry(manifest, current_resource="x", inline=endpoints))
        monkeypatch.setenv("FLASH_CALL_TIMEOUT", "0.3")
        calls._clients.clear()
        try:
            assert await calls.dispatch(nap, "slow", (0.01,), {}) == 0.01
            with pytest.raises(TimeoutError):
                await calls.dispatch(nap, "slow", (3,), {})
        finally:
            calls.reset()


async def test_remote_class_instances_run_on_their_endpoint_and_keep_state(registry) -> None:
    from runtime.remote_class import RemoteClass

    remote_counter = RemoteClass(Counter, "qb", {})
    first, second = remote_counter(start=10), remote_counter(start=100)
    assert await first.add(5) == 15
    assert await first.add() == 16, "the second call reuses the instance the first created"
    assert await second.add(1) == 101, "another proxy is another instance"
    with pytest.raises(RemoteExecutionError) as info:
        await first.boom()
    assert "counter broke" in str(info.value) and "in boom" in info.value.remote_traceback
    with pytest.raises(AttributeError):
        first.missing  # noqa: B018 - no such method: refused before any call
    with pytest.raises(AttributeError):
        first._private  # noqa: B018


async def test_remote_decorator_makes_a_class_remote_only_in_another_endpoints_worker(
    registry,
) -> None:
    from runtime.remote import remote
    from runtime.remote_class import RemoteClass
    from runtime.resources import LiveServerless

    def decorate(resource: str) -> object:
        class Thing:
            def ping(self) -> str:
                return "pong"

        return remote(LiveServerless(name=resource))(Thing)

    elsewhere = decorate("qb")  # this process serves "gateway"
    assert isinstance(elsewhere, RemoteClass) and elsewhere.__name__ == "Thing"
    assert elsewhere.__remote_config__["resource_name"] == "qb"
    here = decorate("gateway")
    assert isinstance(here, type) and here().ping() == "pong"
    calls.set_registry(None)  # no registry: plain development run, classes stay local
    assert isinstance(decorate("qb"), type)


async def test_remote_class_on_a_load_balancer_is_refused(registry) -> None:
    from runtime.remote_class import RemoteClass

    with pytest.raises(RemoteExecutionError, match="queue-based"):
        await RemoteClass(Counter, "lb", {})().add()


async def test_concurrent_calls_reuse_keep_alive_connections() -> None:
    """Many concurrent calls to one endpoint ride a few kept-alive connections: the server
    sees at most one client connection per call in flight, not one per call."""
    import asyncio

    peers: set[tuple[str, int]] = set()
    queue = QueueServer(create_handler({"square": square}), concurrency=64)

    async def recording(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            peers.add(tuple(scope["client"]))
        await queue(scope, receive, send)

    with serve_asgi(BearerAuthMiddleware(recording, "kq")) as url:
        endpoints = {"qb": EndpointInfo("qb", url, "kq")}
        calls.set_registry(ServiceRegistry(MANIFEST, current_resource="x", inline=endpoints))
        try:
            in_flight, rounds = 32, 10
            for round_ in range(rounds):
                results = await asyncio.gather(
                    *(calls.dispatch(square, "qb", (i,), {}) for i in range(in_flight))
                )
                assert results == [i * i for i in range(in_flight)], round_
        finally:
            calls.reset()
    # One connection per call in flight; a few more only if the server dropped idle ones
    # between rounds (uvicorn does after 5 s, which a very loaded machine might reach).
    served = f"{len(peers)} connections for {in_flight * rounds} calls"
    assert 1 <= len(peers) <= 2 * in_flight, served


async def test_a_connection_the_server_closed_while_idle_is_replaced_not_resent() -> None:
    """The server drops each connection after answering (as an idle timeout does): the next
    call notices on the reused connection, opens a fresh one, and each call runs once."""
    import asyncio

    from runtime.httpwire import ConnectionPool

    handled: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        handled.append(await reader.readexactly(length))
        body = b'{"n":%d}' % len(handled)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()  # no "Connection: close": the client learns only by trying

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = ConnectionPool(timeout=10.0)
    try:
        for expected in (1, 2, 3):
            await asyncio.sleep(0)  # let the server's close land before the next call
            response = await pool.request("POST", f"http://127.0.0.1:{port}/x", json={"i": 1})
            assert response.status_code == 200 and response.json() == {"n": expected}
        assert handled == [b'{"i":1}'] * 3 and pool.opened == 3
        # Without the pause the close may land while the next request is on its way: that
        # request is resent once on a fresh connection, and still runs once.
        for expected in (4, 5, 6):
            response = await pool.request("POST", f"http://127.0.0.1:{port}/x", json={"i": 1})
            assert response.json() == {"n": expected}
        assert handled == [b'{"i":1}'] * 6 and pool.opened == 6
    finally:
        await pool.aclose()
        server.close()
        await server.wait_closed()


async def test_chunked_and_close_delimited_answers_are_read_whole() -> None:
    import asyncio

    import httpx

    from runtime.httpwire import ConnectionPool

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"/chunked" in head:
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\n[1,\r\n2;x=y\r\n2]\r\n0\r\n\r\n"
            )
        elif b"/short" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        else:
            writer.write(b"HTTP/1.1 201 Created\r\nConnection: close\r\n\r\n" + b"z" * 70000)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = ConnectionPool(timeout=10.0)
    try:
        chunked = await pool.request("GET", f"http://127.0.0.1:{port}/chunked")
        assert chunked.json() == [1, 2]
        closed = await pool.request("GET", f"http://127.0.0.1:{port}/close")
        assert closed.status_code == 201 and closed.content == b"z" * 70000
        with pytest.raises(httpx.RemoteProtocolError, match="before the end of the answer"):
            await pool.request("GET", f"http://127.0.0.1:{port}/short")
        with pytest.raises(httpx.LocalProtocolError):
            await pool.request("GET", f"http://127.0.0.1:{port}/x", headers={"X-Bad": "a\nb"})
    finally:
        await pool.aclose()
        server.close()
        await server.wait_closed()


async def test_repeated_requests_carry_their_own_headers_query_and_body() -> None:
    """Request heads are built once per (method, URL, headers): each request still says
    exactly its own, and a header that would split the request is refused every time."""
    import asyncio

    import httpx

    from runtime.httpwire import ConnectionPool

    seen: list[tuple[bytes, bytes, bytes]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed its connection
            lines = head.split(b"\r\n")
            fields = dict(line.lower().split(b": ", 1) for line in lines[1:] if b": " in line)
            body = await reader.readexactly(int(fields[b"content-length"]))
            seen.append((lines[0], fields.get(b"authorization", b""), body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    pool = ConnectionPool(timeout=10.0)
    try:
        a, b = {"Authorization": "Bearer a"}, {"Authorization": "Bearer b"}
        await pool.request("POST", f"{url}/x", json={"i": 1}, headers=a)
        await pool.request("POST", f"{url}/x", json={"i": 22}, headers=b)
        await pool.request("POST", f"{url}/x", json={"i": 333}, headers=a)
        await pool.request("GET", f"{url}/x", params={"q": "1"}, headers=a)
        await pool.request("GET", f"{url}/x", params={"q": "2"}, headers=a)
        assert seen == [
            (b"POST /x HTTP/1.1", b"bearer a", b'{"i":1}'),
            (b"POST /x HTTP/1.1", b"bearer b", b'{"i":22}'),
            (b"POST /x HTTP/1.1", b"bearer a", b'{"i":333}'),
            (b"GET /x?q=1 HTTP/1.1", b"bearer a", b""),
            (b"GET /x?q=2 HTTP/1.1", b"bearer a", b""),
        ]
        for _ in range(2):
            with pytest.raises(httpx.LocalProtocolError):
                await pool.request("GET", f"{url}/x", headers={"X-Bad": "1\r\nX-Evil: 1"})
        assert len(seen) == 5
        # A key read with its newline: the error names the header, never its value.
        secret = {"Authorization": "Bearer s3cr3t-key\n"}
        with pytest.raises(httpx.LocalProtocolError, match="header Authorization") as refused:
            await pool.request("GET", f"{url}/x", headers=secret)
        assert "s3cr3t" not in str(refused.value)
    finally:
        await pool.aclose()
        server.close()
        await server.wait_closed()
