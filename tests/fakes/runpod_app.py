"""The RunPod fake's one ASGI app: GraphQL, presigned object storage, REST v1, data plane.

`FakeApp` holds one account (its key, `ControlPlane`, fault queue and the GraphQL calls
received) and serves every plane on one port; `fakes.runpod.FakeRunPod` runs it. See
`fakes.runpod` for the URL layout and the auth rules, and `runpod_endpoints`, `runpod_flash`
and `runpod_schema` for what is documented and what is inferred.

Inferred here (Q): the body of a 401 (`{"errors": [{"message": "Unauthorized"}]}`), and that a
GraphQL document that does not parse or validate gets HTTP 400 while errors of the operation
itself come with HTTP 200.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from inspect import isawaitable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from graphql import GraphQLError, OperationDefinitionNode, execute, parse, validate
from starlette.responses import FileResponse, JSONResponse, Response

from fakes.runpod_control import ControlPlane
from fakes.runpod_dataplane import DataPlane, EndpointView
from fakes.runpod_endpoints import Endpoint, Template, new_id
from fakes.runpod_faults import FaultMiddleware, Faults, apply
from fakes.runpod_flash import UploadRefused
from fakes.runpod_rest import RestV1
from fakes.runpod_schema import build as build_schema


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


class FakeApp:
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
        rest = RestV1(
            self.control, lambda r: self.account_key(bearer_or_bare(r.headers.get("authorization")))
        )
        app.include_router(rest.router)
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


def _data_plane(
    workdir: Path,
    base_url: str,
    authorize: Callable[[str, str | None], bool],
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
