"""A contract fake of RunPod Serverless on one port: control plane, uploads, data plane.

Run it alone with `python tests/fakes/runpod.py --port P`: it prints one `export NAME=value` line
per variable (the API key included) that points the CLI at it, and serves until Ctrl+C. In
tests, `FakeRunPod(workdir)` is a context manager serving it from a thread on a free port.

URL layout (base `http://127.0.0.1:P`):

| plane | where | variable |
|---|---|---|
| GraphQL | `POST /api/graphql` | `RUNPOD_API_BASE_URL=…/api` |
| REST v2 workers and logs (data plane) | `/api/v2/serverless/{id}/workers…` | (same base) |
| queue API (data plane) | `/v2/{id}/run`, `/status/{job}`, … | `RUNPOD_ENDPOINT_BASE_URL=…/v2` |
| REST v1 | `/rest/v1/networkvolumes`, `/rest/v1/endpoints` | `RUNPOD_REST_API_URL=…/rest/v1` |
| load-balanced endpoints (data plane) | `/lb/{id}/<path>` | `FLASH_RUNPOD_LB_URL=…/lb/{id}` |
| presigned uploads / downloads | `PUT`/`GET /upload/{objectKey}?sig=…` | — |

Auth (runpod_api.md §1): the account key as `Authorization: Bearer <key>` or the bare key on
every plane, or `?api_key=<key>` on GraphQL; the data plane also takes the endpoint's `aiKey`.
A missing or wrong key gets 401. Presigned URLs carry their own signature and refuse an
Authorization header, as S3 does.

What the fake does as RunPod documents it and what it infers is listed in the docstrings of
`runpod_endpoints` (endpoints and templates), `runpod_flash` (apps, environments, builds,
uploads) and `runpod_schema` (the GraphQL schema and its validation). Inferred here (Q): the body
of a 401 (`{"errors": [{"message": "Unauthorized"}]}`), and that a GraphQL document that does not
parse or validate gets HTTP 400 while errors of the operation itself come with HTTP 200.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a script, this directory is sys.path[0], where this file would shadow the real
    # `runpod` SDK and `fakes` would not be a package: import from the tests directory instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import dataclasses
import hmac
import json
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any, TypeVar

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from graphql import GraphQLError, OperationDefinitionNode, execute, parse, validate
from starlette.responses import FileResponse, JSONResponse, Response

from fakes.runpod_control import ControlPlane
from fakes.runpod_dataplane import DataPlane, EndpointView
from fakes.runpod_endpoints import Endpoint, Template, new_id
from fakes.runpod_faults import Fault, FaultMiddleware, Faults, apply
from fakes.runpod_flash import FlashApp, FlashBuild, FlashEnvironment, UploadRefused
from fakes.runpod_schema import build as build_schema
from fakes.runpod_workers import ImageWorker

T = TypeVar("T")
_LOOP_TIMEOUT = 60.0


@dataclass(frozen=True)
class GraphQLCall:
    """One GraphQL request the fake received (after authentication)."""

    operation: str | None
    fields: tuple[str, ...]
    variables: dict[str, Any]


def _same(presented: str, secret: str) -> bool:
    # compare_digest refuses non-ASCII str: compare bytes (a header may hold any latin-1 text)
    return hmac.compare_digest(presented.encode(), secret.encode())


def bearer_or_bare(header: str | None) -> str | None:
    """The key in an Authorization header value: `Bearer <key>` or the bare key."""
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest.strip() else header.strip()


class _Server:
    """The ASGI app and the state behind it (one account), bound to one base URL."""

    def __init__(
        self, workdir: Path, base_url: str, api_key: str, data_plane: bool, template_lag: float
    ) -> None:
        self.api_key = api_key
        self.faults = Faults()
        self.calls: list[GraphQLCall] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.schema = build_schema()
        storage = workdir / "objects"
        storage.mkdir(parents=True, exist_ok=True)
        self.plane, router, view = (
            _data_plane(workdir, base_url, self.authorize) if data_plane else (None, None, None)
        )
        self.control = ControlPlane(
            storage=storage,
            base_url=base_url,
            user_id="user_" + new_id(12),
            email="fake-user@example.com",
            data_plane=self.plane,
            view=view,
            template_release_lag=template_lag,
        )
        self.app = self._build_app(router)

    def account_key(self, presented: str | None) -> bool:
        """Whether `presented` is the account's API key (constant time)."""
        return presented is not None and _same(presented, self.api_key)

    def authorize(self, endpoint_id: str, header: str | None) -> bool:
        """Data-plane auth: the account key or that endpoint's aiKey, Bearer or bare."""
        key = bearer_or_bare(header)
        if key is None:
            return False
        if self.account_key(key):
            return True
        endpoint = self.control.book.endpoints.get(endpoint_id)
        return endpoint is not None and _same(key, endpoint.aiKey)

    def _build_app(self, router: APIRouter | None) -> FastAPI:
        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            self.loop = asyncio.get_running_loop()
            try:
                yield
            finally:
                if self.plane is not None:
                    await self.plane.close()

        app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
        app.add_api_route("/api/graphql", self.graphql, methods=["POST"])
        app.add_api_route("/upload/{object_key:path}", self.put_object, methods=["PUT"])
        app.add_api_route("/upload/{object_key:path}", self.get_object, methods=["GET"])
        app.add_api_route("/rest/v1/networkvolumes", self.rest_volumes, methods=["GET", "POST"])
        app.add_api_route("/rest/v1/endpoints", self.rest_endpoints, methods=["GET"])
        app.add_api_route(
            "/rest/v1/endpoints/{endpoint_id}", self.rest_endpoint, methods=["GET", "DELETE"]
        )
        if router is not None:
            app.include_router(router)
        app.add_middleware(FaultMiddleware, faults=self.faults)
        return app

    # --- GraphQL --------------------------------------------------------------------------
    async def graphql(self, request: Request) -> Response:
        """POST /api/graphql: auth, parse, record, faults, validate, execute."""
        presented = bearer_or_bare(request.headers.get("authorization"))
        if not self.account_key(presented) and not self.account_key(
            request.query_params.get("api_key")
        ):
            return JSONResponse({"errors": [{"message": "Unauthorized"}]}, status_code=401)
        try:
            payload = json.loads(await request.body())
            query, variables = payload["query"], payload.get("variables") or {}
            operation = payload.get("operationName")
            if not isinstance(query, str) or not isinstance(variables, dict):
                raise TypeError("query must be a string and variables an object")
        except (ValueError, KeyError, TypeError) as exc:
            return _request_error(f"Invalid GraphQL request body: {exc}")
        try:
            document = parse(query)
        except GraphQLError as exc:
            return _request_error(exc.message)
        names = _operation_names(document, operation)
        self.calls.append(GraphQLCall(operation or _first_name(document), names, variables))
        injected = await apply(self.faults.take_operation(names), graphql=True)
        if injected is not None:
            return injected
        problems = validate(self.schema, document)
        if problems:
            return JSONResponse({"errors": [p.formatted for p in problems]}, status_code=400)
        result = execute(
            self.schema,
            document,
            root_value=self.control,
            variable_values=variables,
            operation_name=operation,
        )
        if isawaitable(result):
            result = await result
        status = 400 if result.data is None and result.errors else 200
        return JSONResponse(result.formatted, status_code=status)

    # --- presigned object storage ----------------------------------------------------------
    async def put_object(self, object_key: str, request: Request) -> Response:
        """PUT to a presigned upload URL: no Authorization, Content-Length = declared size."""
        try:
            slot = self.control.flash.check_put(
                object_key,
                request.query_params.get("sig", ""),
                "authorization" in request.headers,
                request.headers.get("content-length"),
            )
        except UploadRefused as exc:
            return _s3_error(exc)
        received = 0
        partial = slot.path.with_suffix(".part")
        with partial.open("wb") as sink:
            async for chunk in request.stream():
                received += len(chunk)
                if received > slot.size:
                    break
                sink.write(chunk)
        if received != slot.size:
            partial.unlink(missing_ok=True)
            return _s3_error(UploadRefused(400, "IncompleteBody", "Body size != Content-Length"))
        partial.replace(slot.path)
        slot.received = True
        return Response(status_code=200, headers={"ETag": f'"{new_id(32)}"'})

    async def get_object(self, object_key: str, request: Request) -> Response:
        """GET of an uploaded artifact (the downloadUrl of an environment's activeArtifact)."""
        try:
            slot = self.control.flash.check_get(object_key, request.query_params.get("sig", ""))
        except UploadRefused as exc:
            return _s3_error(exc)
        return FileResponse(slot.path, media_type="application/gzip")

    # --- REST v1 (network volumes and a read/delete view of endpoints) ----------------------
    async def rest_volumes(self, request: Request) -> Response:
        """GET lists, POST creates a network volume: {name, size 0-4000, dataCenterId}."""
        if not self.account_key(bearer_or_bare(request.headers.get("authorization"))):
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        if request.method == "GET":
            return JSONResponse(list(self.control.volumes.values()))
        try:
            body = json.loads(await request.body())
            name, size, dc = body["name"], body["size"], body["dataCenterId"]
            if not isinstance(name, str) or not isinstance(dc, str):
                raise TypeError("name and dataCenterId must be strings")
            if not isinstance(size, int) or not 0 <= size <= 4000:
                raise ValueError("size must be an integer from 0 to 4000")
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"invalid network volume: {exc}"}, status_code=400)
        volume = {"id": new_id(10), "name": name, "size": size, "dataCenterId": dc}
        self.control.volumes[volume["id"]] = volume
        return JSONResponse(volume)

    async def rest_endpoints(self, request: Request) -> Response:
        """GET /endpoints: the account's endpoints (REST names are not mapped: GraphQL's)."""
        if not self.account_key(bearer_or_bare(request.headers.get("authorization"))):
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        book = self.control.book
        return JSONResponse([_rest_endpoint(book.wire(e)) for e in book.endpoints.values()])

    async def rest_endpoint(self, endpoint_id: str, request: Request) -> Response:
        """GET (404 when gone) or DELETE (204) one endpoint."""
        if not self.account_key(bearer_or_bare(request.headers.get("authorization"))):
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        endpoint = self.control.book.endpoints.get(endpoint_id)
        if endpoint is None:
            return JSONResponse({"error": "endpoint not found"}, status_code=404)
        if request.method == "GET":
            return JSONResponse(_rest_endpoint(self.control.book.wire(endpoint)))
        await self.control.deleteEndpoint(None, endpoint_id)
        return Response(status_code=204)


def _data_plane(
    workdir: Path, base_url: str, authorize: Callable[[str, str | None], bool]
) -> tuple[DataPlane, APIRouter, Callable[[Endpoint, Template, Path | None], EndpointView]]:
    """The data plane (real workers) and how an endpoint becomes its `EndpointView`."""
    plane = DataPlane(workdir / "dataplane", authorize, base_url=base_url)

    def view(endpoint: Endpoint, template: Template, artifact: Path | None) -> EndpointView:
        return EndpointView(
            id=endpoint.id,
            name=endpoint.name,
            type=endpoint.type,
            env=dict(template.env),
            image_name=template.imageName,
            # the platform keeps workersStandby workers warm even when workersMin is 0
            workers_min=max(endpoint.workersMin, endpoint.workersStandby),
            workers_max=endpoint.workersMax,
            ai_key=endpoint.aiKey,
            version=endpoint.version,
            artifact=artifact,
        )

    return plane, plane.router, view


def _rest_endpoint(wire: dict[str, Any]) -> dict[str, Any]:
    # REST v1 names (runpod_api.md §3) for the fields that differ from GraphQL's.
    return {
        "id": wire["id"],
        "name": wire["name"],
        "templateId": wire["templateId"],
        "version": wire["version"],
        "workersMin": wire["workersMin"],
        "workersMax": wire["workersMax"],
        "idleTimeout": wire["idleTimeout"],
        "dataCenterIds": [d for d in (wire["locations"] or "").split(",") if d],
        "computeType": wire["computeType"],
        "env": {item["key"]: item["value"] for item in wire["env"]},
    }


def _request_error(message: str) -> Response:
    return JSONResponse({"errors": [{"message": message}]}, status_code=400)


def _s3_error(exc: UploadRefused) -> Response:
    body = f"<Error><Code>{exc.code}</Code><Message>{exc}</Message></Error>"
    return Response(body, status_code=exc.status, media_type="application/xml")


def _first_name(document: Any) -> str | None:
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and definition.name:
            return definition.name.value
    return None


def _operation_names(document: Any, operation: str | None) -> tuple[str, ...]:
    """The operation's name and its root field names (what faults and calls are keyed by)."""
    names: list[str] = []
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        name = definition.name.value if definition.name else None
        if operation is not None and name != operation:
            continue
        if name:
            names.append(name)
        for selection in definition.selection_set.selections:
            field_name = getattr(selection, "name", None)
            if field_name is not None and field_name.value not in names:
                names.append(field_name.value)
    return tuple(names)


class FakeRunPod:
    """The fake served from a thread on a free 127.0.0.1 port, with test-side helpers.

    Use as a context manager (`with FakeRunPod(tmp_path) as fake:`); `stop()` shuts the server
    and the data plane's workers down. `data_plane=False` serves the control plane only;
    `template_release_lag` makes deleteTemplate fail for that many seconds after the template's
    last endpoint went away, as RunPod's can.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int = 0,
        api_key: str | None = None,
        data_plane: bool = True,
        template_release_lag: float = 0.0,
    ) -> None:
        self.workdir = workdir
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key or "rpa_" + secrets.token_hex(20).upper()
        self._server = _Server(workdir, self.url, self.api_key, data_plane, template_release_lag)
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"FakeRunPod(url={self.url!r})"  # never the key

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> FakeRunPod:
        """Serve in a daemon thread; returns once the server accepts requests."""
        config = uvicorn.Config(
            self._server.app, log_level="warning", lifespan="on", loop="asyncio"
        )
        self._uvicorn = uvicorn.Server(config)
        self._socket.listen(128)
        self._thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _LOOP_TIMEOUT
        while not self._uvicorn.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if not self._uvicorn.started:
            raise RuntimeError("the RunPod fake did not start")
        return self

    def stop(self) -> None:
        """Shut down (workers included) and wait for the server thread."""
        if self._uvicorn is not None and self._thread is not None:
            self._uvicorn.should_exit = True
            self._thread.join(timeout=30)
        self._socket.close()

    def wait(self) -> None:
        """Block until the server stops (Ctrl+C stops it in the script)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def __enter__(self) -> FakeRunPod:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what clients need ----------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The variables that point the CLI (and the SDKs) at this fake, the key included."""
        return {
            "RUNPOD_API_KEY": self.api_key,
            "RUNPOD_API_BASE_URL": f"{self.url}/api",
            "RUNPOD_ENDPOINT_BASE_URL": f"{self.url}/v2",
            "RUNPOD_REST_API_URL": f"{self.url}/rest/v1",
            "FLASH_RUNPOD_LB_URL": f"{self.url}/lb/{{id}}",
        }

    # --- state inspection (run on the server's loop: no torn reads) -------------------------
    @property
    def graphql_calls(self) -> list[GraphQLCall]:
        """Every authenticated GraphQL request so far, oldest first."""
        return self._on_loop(lambda: list(self._server.calls))

    def endpoints(self) -> list[Endpoint]:
        """Copies of the account's endpoints."""
        book = self._server.control.book
        return self._on_loop(lambda: [dataclasses.replace(e) for e in book.endpoints.values()])

    def templates(self) -> list[Template]:
        """Copies of the account's templates."""
        book = self._server.control.book
        return self._on_loop(
            lambda: [dataclasses.replace(t, env=dict(t.env)) for t in book.templates.values()]
        )

    def apps(self) -> list[FlashApp]:
        """Copies of the flash apps."""
        flash = self._server.control.flash
        return self._on_loop(lambda: [dataclasses.replace(a) for a in flash.apps.values()])

    def environments(self) -> list[FlashEnvironment]:
        """Copies of the flash environments."""
        flash = self._server.control.flash
        return self._on_loop(lambda: [dataclasses.replace(e) for e in flash.environments.values()])

    def builds(self) -> list[FlashBuild]:
        """Copies of the flash builds (manifests deep-copied)."""
        flash = self._server.control.flash
        return self._on_loop(
            lambda: [
                dataclasses.replace(b, manifest=json.loads(json.dumps(b.manifest)))
                for b in flash.builds.values()
            ]
        )

    def workers(self, endpoint_id: str) -> list[ImageWorker]:
        """The endpoint's current worker processes (none without a data plane)."""
        plane = self._server.plane
        return self._on_loop(lambda: plane.workers(endpoint_id) if plane is not None else [])

    # --- changes behind the client's back ---------------------------------------------------
    def edit_endpoint(
        self, endpoint_id: str, *, env: dict[str, str] | None = None, **fields: Any
    ) -> Endpoint:
        """Change an endpoint as the console would (EndpointInput fields; `env` = template env)."""
        control = self._server.control

        async def edit() -> Endpoint:
            endpoint = control.book.save_endpoint(
                {**fields, "id": endpoint_id}, set(control.flash.environments)
            )
            if env is not None:
                control.book.templates[endpoint.templateId].env = dict(env)
            await control.sync(endpoint)
            return dataclasses.replace(endpoint)

        return self._run(edit())

    # --- fault injection --------------------------------------------------------------------
    def fail_next(
        self,
        target: str,
        *,
        status: int | None = None,
        graphql_error: str | None = None,
        retry_after: float | str | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Make the next `times` requests to `target` fail (or only be slow).

        `target` is a path prefix (`/api/graphql`, `/v2/{id}/runsync`, `/upload/`) or a GraphQL
        operation/root field name (`saveEndpoint`, `myself`). Give `status` (401, 429, 5xx, …;
        `retry_after` sets the Retry-After header), or `graphql_error` (HTTP 200 with
        `errors`), or only `delay` seconds.
        """
        if status is not None and graphql_error is not None:
            raise ValueError("a fault is an HTTP status or a GraphQL error, not both")
        if status is None and graphql_error is None and delay <= 0:
            raise ValueError("a fault needs a status, a graphql_error or a delay")
        fault = Fault(
            target=target,
            status=status,
            graphql_error=graphql_error,
            retry_after=None if retry_after is None else str(retry_after),
            delay=delay,
            remaining=times,
        )
        self._server.faults.add(fault)

    def pending_faults(self) -> list[Fault]:
        """Faults that have not fired (all their times) yet."""
        return self._server.faults.pending()

    # --- running on the server's loop -------------------------------------------------------
    def _on_loop(self, read: Callable[[], T]) -> T:
        async def call() -> T:
            return read()

        return self._run(call())

    def _run(self, coroutine: Any) -> Any:
        loop = self._server.loop
        if loop is None:
            coroutine.close()
            raise RuntimeError("the RunPod fake is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(_LOOP_TIMEOUT)


@dataclass
class _Options:
    port: int
    workdir: Path | None
    api_key: str | None
    data_plane: bool


def _parse(argv: list[str] | None) -> _Options:
    parser = argparse.ArgumentParser(
        prog="python tests/fakes/runpod.py",
        description="Serve the RunPod contract fake on 127.0.0.1 and print the variables "
        "that point flash-tui (and the SDKs) at it.",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--workdir", type=Path, help="state directory (default: a temporary one)")
    parser.add_argument("--api-key", help="the account key to accept (default: a random one)")
    parser.add_argument(
        "--no-data-plane", action="store_true", help="control plane only (no workers)"
    )
    args = parser.parse_args(argv)
    return _Options(args.port, args.workdir, args.api_key, not args.no_data_plane)


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl+C, after printing the `export` lines."""
    options = _parse(argv)
    temporary = options.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="fake-runpod-")) if temporary else options.workdir
    assert workdir is not None
    try:
        fake = FakeRunPod(
            workdir, port=options.port, api_key=options.api_key, data_plane=options.data_plane
        )
    except OSError as exc:
        print(f"cannot listen on 127.0.0.1:{options.port}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        fake.start()
        for name, value in fake.env().items():
            print(f"export {name}={value}", flush=True)
        print(f"# RunPod fake on {fake.url}; Ctrl+C stops it", file=sys.stderr, flush=True)
        fake.wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
