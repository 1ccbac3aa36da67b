"""The LB app factory and the bearer-auth middleware, over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi import HTTPException, Request
from pydantic import BaseModel
from worker_harness import serve_asgi

from runtime.auth import BearerAuthMiddleware, check_bearer, endpoint_key
from runtime.lb_app import create_lb_app
from runtime.serialization import deserialize, serialize_args, serialize_kwargs


class Item(BaseModel):
    name: str
    qty: int = 1


async def compute(numbers: list[float], scale: float = 1.0) -> dict:
    return {"sum": sum(numbers) * scale}


def greet(name: str = "world", times: int = 1, loud: bool = False) -> dict:
    text = " ".join([f"Hello, {name}!"] * times)
    return {"message": text.upper() if loud else text}


def whole(payload: dict) -> dict:
    return {"keys": sorted(payload)}


def order(item: Item) -> dict:
    return {"name": item.name, "qty": item.qty}


def total(values: list[int]) -> int:
    return sum(values)


def get_user(user_id: int, verbose: bool = False) -> dict:
    return {"id": user_id, "verbose": verbose}


def remove(tags: list[str]) -> dict:
    return {"removed": tags}


def flexible(a: int, **rest: object) -> dict:
    return {"a": a, "rest": rest}


def explode(x: int = 0) -> None:
    raise KeyError("missing thing")


def teapot() -> None:
    raise HTTPException(status_code=418, detail="short and stout")


ROUTES = {
    ("POST", "/compute"): compute,
    ("GET", "/greet"): greet,
    ("POST", "/whole"): whole,
    ("PUT", "/order"): order,
    ("POST", "/total"): total,
    ("GET", "/users/{user_id}"): get_user,
    ("DELETE", "/tags"): remove,
    ("PATCH", "/flexible"): flexible,
    ("POST", "/explode"): explode,
    ("GET", "/teapot"): teapot,
}


@pytest.fixture(scope="module")
def lb():
    with serve_asgi(create_lb_app(ROUTES)) as url, httpx.Client(base_url=url, timeout=10) as c:
        yield c


def test_json_body_binds_by_name_with_coercion(lb: httpx.Client) -> None:
    assert lb.post("/compute", json={"numbers": [1, "2", 3.5], "scale": "2"}).json() == {
        "sum": 13.0
    }
    assert lb.post("/compute", json={"numbers": [1]}).json() == {"sum": 1.0}


def test_query_parameters_bind_for_get_and_delete(lb: httpx.Client) -> None:
    r = lb.get("/greet", params={"name": "Ada", "times": "2", "loud": "true"})
    assert r.json() == {"message": "HELLO, ADA! HELLO, ADA!"}
    assert lb.get("/greet").json() == {"message": "Hello, world!"}
    assert lb.request("DELETE", "/tags", params=[("tags", "a"), ("tags", "b")]).json() == {
        "removed": ["a", "b"]
    }


def test_get_accepts_a_json_body_when_there_is_no_query(lb: httpx.Client) -> None:
    # Upstream stubs send a JSON body even for GET.
    r = lb.request("GET", "/greet", json={"name": "Body"})
    assert r.json() == {"message": "Hello, Body!"}


def test_path_parameters(lb: httpx.Client) -> None:
    assert lb.get("/users/42", params={"verbose": "1"}).json() == {"id": 42, "verbose": True}
    r = lb.get("/users/abc")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "user_id"]


def test_single_dict_parameter_receives_the_whole_body(lb: httpx.Client) -> None:
    assert lb.post("/whole", json={"b": 1, "a": 2}).json() == {"keys": ["a", "b"]}


def test_single_model_parameter_receives_the_whole_body(lb: httpx.Client) -> None:
    assert lb.put("/order", json={"name": "tea", "qty": "3"}).json() == {"name": "tea", "qty": 3}
    r = lb.put("/order", json={"qty": 3})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "name"]


def test_single_list_parameter_accepts_array_or_named_body(lb: httpx.Client) -> None:
    assert lb.post("/total", json=[1, 2, 3]).json() == 6
    assert lb.post("/total", json={"values": [4, 5]}).json() == 9


def test_var_keyword_accepts_extra_fields(lb: httpx.Client) -> None:
    assert lb.patch("/flexible", json={"a": "1", "z": True}).json() == {"a": 1, "rest": {"z": True}}


def test_422_names_missing_extra_and_invalid_fields(lb: httpx.Client) -> None:
    r = lb.post("/compute", json={"scale": 2, "bogus": 1})
    assert r.status_code == 422
    body = r.json()
    locs = {tuple(d["loc"]): d["type"] for d in body["detail"]}
    assert locs == {("body", "numbers"): "missing", ("body", "bogus"): "extra_forbidden"}
    assert "'numbers'" in body["error"] and "'bogus'" in body["error"]
    r = lb.post("/compute", json={"numbers": ["x"]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "numbers", 0]
    r = lb.get("/greet", params={"times": "many"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "times"]


def test_non_json_and_non_object_bodies_are_422(lb: httpx.Client) -> None:
    r = lb.post("/compute", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = lb.post("/compute", json=[1, 2])
    assert r.status_code == 422 and "numbers" in r.json()["error"]


def test_exceptions_give_500_with_optional_traceback(lb: httpx.Client) -> None:
    r = lb.post("/explode", json={})
    assert r.status_code == 500 and r.json()["error"] == "KeyError: 'missing thing'"
    assert "traceback" not in r.json()
    r = lb.post("/explode", json={}, headers={"x-flash-traceback": "1"})
    assert "in explode" in r.json()["traceback"]
    assert lb.get("/greet").status_code == 200  # still serving


def test_user_http_exceptions_keep_their_status(lb: httpx.Client) -> None:
    r = lb.get("/teapot")
    assert r.status_code == 418 and r.json()["detail"] == "short and stout"


def test_ping_execute_manifest_on_a_plain_lb(lb: httpx.Client) -> None:
    assert lb.get("/ping").status_code == 200
    assert lb.post("/execute", json={"function_name": "compute"}).status_code == 404
    r = lb.get("/manifest")
    assert r.status_code == 403 and r.json() == {"error": "Only mothership serves manifest"}


def test_openapi_lists_the_routes(lb: httpx.Client) -> None:
    paths = lb.get("/openapi.json").json()["paths"]
    assert {"/compute", "/greet", "/users/{user_id}"} <= set(paths)
    assert "requestBody" in paths["/compute"]["post"]


def test_ping_is_204_until_startup_finished() -> None:
    app = create_lb_app({("GET", "/greet"): greet})
    with serve_asgi(app, lifespan="off") as url:
        assert httpx.get(f"{url}/ping").status_code == 204
    with serve_asgi(app) as url:
        assert httpx.get(f"{url}/ping").status_code == 200


def test_execute_on_a_live_lb() -> None:
    app = create_lb_app({("POST", "/compute"): compute}, include_execute=True)
    with serve_asgi(app) as url, httpx.Client(base_url=url) as client:
        r = client.post(
            "/execute",
            json={
                "function_name": "compute",
                "args": serialize_args([[1.0, 2.0]]),
                "kwargs": serialize_kwargs({"scale": 3}),
            },
        ).json()
        assert r["success"] and deserialize(r["result"]) == {"sum": 9.0}
        code = "def shipped(x):\n    return x * 2\n"
        r = client.post(
            "/execute",
            json={"function_name": "shipped", "function_code": code, "args": serialize_args([21])},
        ).json()
        assert r["success"] and deserialize(r["result"]) == 42
        r = client.post("/execute", json={"function_name": "nope"})
        assert r.status_code == 200 and r.json()["success"] is False
        assert client.post("/execute", content=b"x").json()["success"] is False


def test_manifest_on_the_mothership(tmp_path: Path) -> None:
    manifest = tmp_path / "flash_manifest.json"
    manifest.write_text(json.dumps({"version": "1.0", "resources": {}}))
    app = create_lb_app({}, is_mothership=True, manifest_path=manifest)
    with serve_asgi(app) as url:
        assert httpx.get(f"{url}/manifest").json() == {"version": "1.0", "resources": {}}
    app = create_lb_app({}, is_mothership=True, manifest_path=tmp_path / "missing.json")
    with serve_asgi(app) as url:
        assert httpx.get(f"{url}/manifest").status_code == 404


@pytest.mark.parametrize(
    "routes",
    [
        {("GET", "/ping"): greet},
        {("POST", "/execute"): greet},
        {("GET", "x"): greet},
        {("TRACE", "/x"): greet},
    ],
)
def test_reserved_paths_and_bad_routes_are_refused(routes: dict) -> None:
    with pytest.raises(ValueError):
        create_lb_app(routes)


def test_remote_wrapped_functions_are_unwrapped() -> None:
    from runtime import LiveLoadBalancer, remote

    config = LiveLoadBalancer(name="t")

    @remote(config, method="POST", path="/double")
    def double(x: int) -> int:
        return 2 * x

    with serve_asgi(create_lb_app({("POST", "/double"): double})) as url:
        assert httpx.post(f"{url}/double", json={"x": "4"}).json() == 8


def test_check_bearer() -> None:
    assert check_bearer(b"Bearer s3cret", b"s3cret")
    assert check_bearer(b"bearer s3cret", b"s3cret")
    assert not check_bearer(b"Bearer s3cre", b"s3cret")
    assert not check_bearer(b"Basic s3cret", b"s3cret")
    assert not check_bearer(None, b"s3cret")
    assert endpoint_key({"FLASH_ENDPOINT_KEY": "  "}) is None
    assert endpoint_key({"FLASH_ENDPOINT_KEY": "k"}) == "k"


def test_auth_middleware_guards_everything_but_ping() -> None:
    app = BearerAuthMiddleware(create_lb_app({("GET", "/greet"): greet}), "s3cret")
    with serve_asgi(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/ping").status_code == 200
        r = client.get("/greet")
        assert r.status_code == 401 and "s3cret" not in r.text
        assert client.get("/greet", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/openapi.json").status_code == 401
        ok = client.get("/greet", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_a_request_parameter_receives_the_request() -> None:
    async def whoami(request: Request, n: int = 1) -> dict:
        return {"agent": request.headers.get("user-agent"), "n": n}

    with serve_asgi(create_lb_app({("GET", "/whoami"): whoami})) as url:
        r = httpx.get(f"{url}/whoami", params={"n": "2"}, headers={"user-agent": "t/1"})
        assert r.json() == {"agent": "t/1", "n": 2}


def test_route_errors_are_structured_and_422_never_echoes_the_value() -> None:
    app = create_lb_app({("POST", "/explode"): explode, ("POST", "/greet"): greet})
    with serve_asgi(app) as url, httpx.Client(timeout=10) as client:
        failed = client.post(f"{url}/explode", json={"x": 1})
        body = failed.json()
        assert failed.status_code == 500 and "traceback" not in body
        assert body["type"] == "KeyError" and body["message"] == "'missing thing'"
        assert body["location"].startswith("tests/runtime/test_runtime_lb.py:")
        secret = "sk-do-not-echo-1234"
        bad = client.post(f"{url}/greet", json={"times": secret})
        assert bad.status_code == 422 and "times" in bad.json()["error"]
        assert secret not in bad.text


def test_json_limits_and_body_cap_apply_to_execute() -> None:
    app = create_lb_app({("POST", "/greet"): greet}, include_execute=True)
    app.state.flash_calls.max_body_bytes = 1000
    with serve_asgi(app) as url, httpx.Client(timeout=10) as client:
        big = client.post(f"{url}/execute", json={"function_name": "greet", "pad": "x" * 2000})
        assert big.status_code == 413
        deep = client.post(f"{url}/greet", content=b'{"name": ' + b"[" * 70 + b"]" * 70 + b"}")
        assert deep.status_code == 400 and "nested" in deep.json()["error"]


def own_timeout() -> None:
    raise TimeoutError("the database did not answer")


async def slow_async(seconds: float = 30.0) -> dict:
    import asyncio

    await asyncio.sleep(seconds)
    return {}


def test_request_timeout_is_a_504_only_for_the_route_outliving_it() -> None:
    app = create_lb_app({("POST", "/own"): own_timeout, ("POST", "/slow"): slow_async})
    app.state.flash_calls.timeout = 0.3
    with serve_asgi(app) as url, httpx.Client(timeout=10) as client:
        own = client.post(f"{url}/own", json={})
        assert own.status_code == 500 and own.json()["type"] == "TimeoutError"
        slow = client.post(f"{url}/slow", json={})
        assert slow.status_code == 504 and "0.3s" in slow.json()["error"]
        # A coroutine is cancelled, not left running: nothing counts as stuck.
        assert app.state.flash_calls.stuck == 0
        assert client.get(f"{url}/ping").status_code == 200


def test_fixed_path_routes_are_served_without_fastapi_middleware_stack() -> None:
    """A route without `{name}` segments goes straight to its endpoint; the rest still works."""

    def stack(request: Request) -> dict:
        # Starlette's exception middleware marks the scope of every request it passes on.
        return {
            "full_stack": "starlette.exception_handlers" in request.scope,
            "same_app": request.app is app,
            "url": str(request.url_for("whoami")),
        }

    async def whoami(request: Request) -> dict:
        return stack(request)

    async def whois(request: Request, n: int) -> dict:
        return {**stack(request), "n": n}

    routes = {
        ("POST", "/compute"): compute,
        ("GET", "/whoami"): whoami,
        ("GET", "/whois/{n}"): whois,
        ("GET", "/teapot"): teapot,
    }
    app = create_lb_app(routes)
    with serve_asgi(app) as url:
        assert httpx.post(f"{url}/compute", json={"numbers": [1, 2]}).json() == {"sum": 3.0}
        me = httpx.get(f"{url}/whoami").json()
        assert me == {"full_stack": False, "same_app": True, "url": f"{url}/whoami"}
        r = httpx.get(f"{url}/teapot")  # the user's HTTPException: FastAPI's handler renders it
        assert r.status_code == 418 and r.json() == {"detail": "short and stout"}
        them = httpx.get(f"{url}/whois/7").json()
        assert them == {"full_stack": True, "same_app": True, "url": f"{url}/whoami", "n": 7}
        assert httpx.head(f"{url}/whoami").status_code == 200  # HEAD: the full stack


def test_middleware_added_to_the_app_sees_every_route() -> None:
    app = create_lb_app({("POST", "/compute"): compute})

    class Stamp:
        def __init__(self, inner: object) -> None:
            self.inner = inner

        async def __call__(self, scope: dict, receive: object, send: object) -> None:
            async def stamped(message: dict) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message["headers"], (b"x-stamp", b"1")]}
                await send(message)  # type: ignore[operator]

            await self.inner(scope, receive, stamped)  # type: ignore[operator]

    app.add_middleware(Stamp)
    with serve_asgi(app) as url:
        r = httpx.post(f"{url}/compute", json={"numbers": [2]})
        assert r.json() == {"sum": 2.0} and r.headers["x-stamp"] == "1"
