"""REST v1 of the fake RunPod account (runpod_api.md §3): endpoints, templates, network volumes.

Routes, all with the account key (Bearer or bare; 401 without):

- `/rest/v1/endpoints`: GET (`?includeTemplate=true` adds each endpoint's template) and POST
  (create; only `templateId` is required; 200 with the endpoint, 400 on bad input);
- `/rest/v1/endpoints/{id}`: GET (404 when gone), PATCH and POST `/update` (a partial update),
  DELETE (204);
- the same for `/rest/v1/templates` (create needs `name` and `imageName`; DELETE fails with 400
  while an endpoint uses the template) and `/rest/v1/networkvolumes` ({name, size 0-4000,
  dataCenterId}, all required on create).

The names differ from GraphQL's and are mapped onto the same records (`EndpointBook`), so what
REST creates GraphQL reads back and the other way round: `gpuTypeIds` (GPU models) <-> `gpuIds`
(pools, with `-<model>` negations for the pool's models not chosen), `dataCenterIds` <->
`locations`, `allowedCudaVersions` list <-> comma string, `flashboot` <-> `flashBootType`,
`computeType: CPU` + `cpuFlavorIds` + `vcpuCount` (default 2) <-> `instanceIds`, `env` {K: V}
<-> [{key, value}]. REST has no `type`. Q (inferred, the strict reading): a field REST does not
know is a 400 naming it, and so is a value of the wrong JSON type.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from fakes.runpod_catalog import GPU_MODELS, cpu_flavor, cpu_instance
from fakes.runpod_control import ControlPlane
from fakes.runpod_endpoints import ApiError, Endpoint, Template, new_id

__all__ = ["RestV1"]

_Record = TypeVar("_Record")
_Handler = Callable[[Request], Awaitable[Response]]

_DEFAULT_VCPU = 2
# REST endpoint field -> (JSON type, GraphQL EndpointInput field) for the ones that map 1:1.
_ENDPOINT_SCALARS: dict[str, type] = {
    "name": str,
    "templateId": str,
    "gpuCount": int,
    "workersMin": int,
    "workersMax": int,
    "idleTimeout": int,
    "executionTimeoutMs": int,
    "scalerType": str,
    "scalerValue": int,
    "networkVolumeId": str,
}
_ENDPOINT_MAPPED: dict[str, type] = {
    "gpuTypeIds": list,
    "dataCenterIds": list,
    "allowedCudaVersions": list,
    "flashboot": bool,
    "computeType": str,
    "cpuFlavorIds": list,
    "vcpuCount": int,
}
_TEMPLATE_FIELDS: dict[str, type] = {
    "name": str,
    "imageName": str,
    "env": dict,
    "isServerless": bool,
    "containerDiskInGb": int,
    "volumeInGb": int,
    "volumeMountPath": str,
    "dockerArgs": str,
    "readme": str,
    "ports": str,
    "startScript": str,
    "containerRegistryAuthId": str,
}


class _BadInput(Exception):
    """A request body the API answers with 400."""


def _body(raw: bytes, fields: Mapping[str, type], what: str) -> dict[str, Any]:
    """The JSON object of a request, every field known and of its type."""
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise _BadInput(f"invalid {what}: body is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _BadInput(f"invalid {what}: body must be a JSON object")
    for key, value in data.items():
        kind = fields.get(key)
        if kind is None:
            raise _BadInput(f"invalid {what}: unknown field {key!r}")
        # bool is an int in Python; JSON keeps them apart.
        if value is not None and (
            not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        ):
            raise _BadInput(f"invalid {what}: {key} must be {kind.__name__}")
    return data


def _gpu_ids(models: list[Any]) -> str:
    """REST `gpuTypeIds` (GPU models) as GraphQL `gpuIds`: their pools, minus the pools'
    other models."""
    known = {m.id: m for m in GPU_MODELS}
    unknown = [m for m in models if m not in known]
    if unknown:
        raise _BadInput(f"invalid endpoint: unknown GPU type {unknown[0]!r} in gpuTypeIds")
    pools = sorted({known[m].pool for m in models})
    excluded = [m.id for m in GPU_MODELS if m.pool in pools and m.id not in models]
    return ",".join([*pools, *(f"-{m}" for m in excluded)])


def _gpu_types(gpu_ids: str) -> list[str]:
    """GraphQL `gpuIds` back as the GPU models REST lists."""
    tokens = [t.strip() for t in gpu_ids.split(",") if t.strip()]
    pools = {t for t in tokens if not t.startswith("-")}
    excluded = {t[1:] for t in tokens if t.startswith("-")}
    return [m.id for m in GPU_MODELS if m.pool in pools and m.id not in excluded]


def _instance_ids(flavors: list[Any], vcpu: int) -> list[str]:
    out = []
    for flavor_id in flavors:
        flavor = cpu_flavor(str(flavor_id))
        if flavor is None:
            raise _BadInput(f"invalid endpoint: unknown CPU flavor {flavor_id!r} in cpuFlavorIds")
        instance = f"{flavor.id}-{vcpu}-{vcpu * flavor.ram_multiplier}"
        if cpu_instance(instance) is None:
            raise _BadInput(
                f"invalid endpoint: vcpuCount {vcpu} is outside {flavor.id}'s "
                f"{flavor.min_vcpu}-{flavor.max_vcpu}"
            )
        out.append(instance)
    return out


def endpoint_input(data: Mapping[str, Any], current: Endpoint | None) -> dict[str, Any]:
    """A REST endpoint body as GraphQL's EndpointInput (an update when `current`)."""
    out: dict[str, Any] = {k: v for k, v in data.items() if k in _ENDPOINT_SCALARS}
    if current is None:
        if not data.get("templateId"):
            raise _BadInput("invalid endpoint: templateId is required")
        out.setdefault("name", f"endpoint-{new_id(8)}")
    cpu = data.get("computeType", "CPU" if current and current.instanceIds else "GPU")
    if cpu not in ("GPU", "CPU"):
        raise _BadInput(f"invalid endpoint: computeType must be GPU or CPU, got {cpu!r}")
    if cpu == "CPU":
        if "gpuTypeIds" in data:
            raise _BadInput("invalid endpoint: a CPU endpoint takes cpuFlavorIds, not gpuTypeIds")
        if "cpuFlavorIds" in data or "vcpuCount" in data or current is None:
            flavors = data.get("cpuFlavorIds") or ["cpu3c"]
            out["instanceIds"] = _instance_ids(flavors, data.get("vcpuCount") or _DEFAULT_VCPU)
            out["gpuIds"], out["gpuCount"] = "", 0
    else:
        if "cpuFlavorIds" in data or "vcpuCount" in data:
            raise _BadInput("invalid endpoint: a GPU endpoint takes gpuTypeIds, not cpuFlavorIds")
        if "gpuTypeIds" in data or current is None:
            out["gpuIds"] = _gpu_ids(data.get("gpuTypeIds") or [])
            out["instanceIds"] = []
    if "dataCenterIds" in data:
        out["locations"] = ",".join(str(d) for d in data["dataCenterIds"] or [])
    if "allowedCudaVersions" in data:
        out["allowedCudaVersions"] = ",".join(str(v) for v in data["allowedCudaVersions"] or [])
    if "flashboot" in data:
        out["flashBootType"] = "FLASHBOOT" if data["flashboot"] else None
    if current is not None:
        out["id"] = current.id
    return out


def rest_endpoint(wire: Mapping[str, Any], template: Template | None = None) -> dict[str, Any]:
    """An endpoint record as REST v1 returns it (its template too when given)."""
    cpu = wire["computeType"] == "CPU"
    out: dict[str, Any] = {
        "id": wire["id"],
        "name": wire["name"],
        "templateId": wire["templateId"],
        "version": wire["version"],
        "userId": wire["userId"],
        "createdAt": wire["createdAt"],
        "computeType": wire["computeType"],
        "gpuTypeIds": [] if cpu else _gpu_types(wire["gpuIds"] or ""),
        "gpuCount": wire["gpuCount"],
        "allowedCudaVersions": [v for v in (wire["allowedCudaVersions"] or "").split(",") if v],
        "dataCenterIds": [d for d in (wire["locations"] or "").split(",") if d],
        "flashboot": wire["flashBootType"] == "FLASHBOOT",
        "networkVolumeId": wire["networkVolumeId"],
        "workersMin": wire["workersMin"],
        "workersMax": wire["workersMax"],
        "idleTimeout": wire["idleTimeout"],
        "executionTimeoutMs": wire["executionTimeoutMs"],
        "scalerType": wire["scalerType"],
        "scalerValue": wire["scalerValue"],
        "env": {item["key"]: item["value"] for item in wire["env"]},
    }
    if cpu:
        instances = [cpu_instance(i) for i in wire["instanceIds"]]
        out["cpuFlavorIds"] = sorted({i[0].id for i in instances if i is not None})
        out["vcpuCount"] = next((i[1] for i in instances if i is not None), _DEFAULT_VCPU)
    if template is not None:
        out["template"] = rest_template(template)
    return out


def rest_template(template: Template) -> dict[str, Any]:
    """A template as REST v1 returns it (`env` as an object)."""
    return {
        "id": template.id,
        "name": template.name,
        "imageName": template.imageName,
        "env": dict(template.env),
        "isServerless": template.isServerless,
        "containerDiskInGb": template.containerDiskInGb,
        "volumeInGb": template.volumeInGb,
        "volumeMountPath": template.volumeMountPath,
        "dockerArgs": template.dockerArgs,
        "readme": template.readme,
        "ports": template.ports,
        "startScript": template.startScript,
        "containerRegistryAuthId": template.containerRegistryAuthId,
    }


def _template_input(data: Mapping[str, Any], current: Template | None) -> dict[str, Any]:
    """A REST template body as GraphQL's saveTemplate input (an update when `current`)."""
    merged = {**(rest_template(current) if current is not None else {}), **data}
    for key in ("name", "imageName"):
        if not merged.get(key):
            raise _BadInput(f"invalid template: {key} is required")
    env = merged.get("env") or {}
    if not all(isinstance(v, str) for v in env.values()):
        raise _BadInput("invalid template: env values must be strings")
    out = {k: v for k, v in merged.items() if k in _TEMPLATE_FIELDS and k != "env"}
    out["env"] = [{"key": k, "value": v} for k, v in env.items()]
    out.setdefault("isServerless", True)
    if current is not None:
        out["id"] = current.id
    return out


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _NotFound(Exception):
    """A record the path names that is not there: a 404."""


def _found(records: Mapping[str, _Record], key: str, what: str) -> _Record:
    """The record `key` names, or a 404 naming `what`."""
    record = records.get(key)
    if record is None:
        raise _NotFound(f"{what} not found")
    return record


def _with_template(request: Request) -> bool:
    return request.query_params.get("includeTemplate") == "true"


class RestV1:
    """The REST v1 routes over one account's control plane."""

    def __init__(self, control: ControlPlane, account_key: Callable[[Request], bool]) -> None:
        self.control = control
        self._account_key = account_key
        self.router = APIRouter(prefix="/rest/v1")
        for path, handler in (
            ("/endpoints", self.endpoints),
            ("/templates", self.templates),
            ("/networkvolumes", self.volumes),
        ):
            self.router.add_api_route(path, self._guarded(handler), methods=["GET", "POST"])
        for path, handler in (
            ("/endpoints/{key}", self.endpoint),
            ("/templates/{key}", self.template),
            ("/networkvolumes/{key}", self.volume),
        ):
            item = self._guarded(handler)
            self.router.add_api_route(path, item, methods=["GET", "PATCH", "DELETE"])
            self.router.add_api_route(f"{path}/update", item, methods=["POST"])

    def _guarded(self, handler: _Handler) -> _Handler:
        """`handler` behind the account key (401 without) answering a missing record with 404."""

        async def guarded(request: Request) -> Response:
            if not self._account_key(request):
                return _error(401, "Unauthorized")
            try:
                return await handler(request)
            except _NotFound as exc:
                return _error(404, str(exc))

        return guarded

    # --- endpoints ------------------------------------------------------------------------
    async def endpoints(self, request: Request) -> Response:
        """GET lists the endpoints (`?includeTemplate=true`: with templates); POST creates."""
        book = self.control.book
        if request.method == "GET":
            with_template = _with_template(request)
            return JSONResponse(
                [
                    rest_endpoint(
                        book.wire(e), book.templates.get(e.templateId) if with_template else None
                    )
                    for e in book.endpoints.values()
                ]
            )
        return await self._save_endpoint(await request.body(), None)

    async def endpoint(self, request: Request) -> Response:
        """GET (404 when gone), PATCH / POST update (partial), DELETE (204) one endpoint."""
        book = self.control.book
        endpoint = _found(book.endpoints, request.path_params["key"], "endpoint")
        if request.method == "GET":
            template = book.templates.get(endpoint.templateId) if _with_template(request) else None
            return JSONResponse(rest_endpoint(book.wire(endpoint), template))
        if request.method == "DELETE":
            await self.control.deleteEndpoint(None, endpoint.id)
            return Response(status_code=204)
        return await self._save_endpoint(await request.body(), endpoint)

    async def _save_endpoint(self, raw: bytes, current: Endpoint | None) -> Response:
        book = self.control.book
        try:
            data = _body(raw, {**_ENDPOINT_SCALARS, **_ENDPOINT_MAPPED}, "endpoint")
            endpoint = book.save_endpoint(
                endpoint_input(data, current), set(self.control.flash.environments)
            )
        except (_BadInput, ApiError) as exc:
            return _error(400, str(exc))
        await self.control.sync(endpoint)
        return JSONResponse(rest_endpoint(book.wire(endpoint)))

    # --- templates ------------------------------------------------------------------------
    async def templates(self, request: Request) -> Response:
        """GET lists the templates; POST creates one."""
        if request.method == "GET":
            return JSONResponse([rest_template(t) for t in self.control.book.templates.values()])
        return await self._save_template(await request.body(), None)

    async def template(self, request: Request) -> Response:
        """GET (404 when gone), PATCH / POST update, DELETE (204; 400 while in use)."""
        book = self.control.book
        template = _found(book.templates, request.path_params["key"], "template")
        if request.method == "GET":
            return JSONResponse(rest_template(template))
        if request.method == "DELETE":
            try:
                book.delete_template(template.name)
            except ApiError as exc:
                return _error(400, str(exc))
            return Response(status_code=204)
        return await self._save_template(await request.body(), template)

    async def _save_template(self, raw: bytes, current: Template | None) -> Response:
        try:
            data = _body(raw, _TEMPLATE_FIELDS, "template")
            saved = await self.control.saveTemplate(None, _template_input(data, current))
        except (_BadInput, ApiError) as exc:
            return _error(400, str(exc))
        return JSONResponse(rest_template(self.control.book.templates[saved["id"]]))

    # --- network volumes ------------------------------------------------------------------
    async def volumes(self, request: Request) -> Response:
        """GET lists, POST creates a network volume: {name, size 0-4000, dataCenterId}."""
        if request.method == "GET":
            return JSONResponse(list(self.control.volumes.values()))
        try:
            fields = {"name": str, "size": int, "dataCenterId": str}
            body = _body(await request.body(), fields, "network volume")
            missing = [k for k in fields if body.get(k) is None]
            if missing:
                raise _BadInput(f"invalid network volume: {missing[0]} is required")
            _check_size(body["size"])
        except _BadInput as exc:
            return _error(400, str(exc))
        volume = {"id": new_id(10), **{k: body[k] for k in ("name", "size", "dataCenterId")}}
        self.control.volumes[volume["id"]] = volume
        return JSONResponse(volume)

    async def volume(self, request: Request) -> Response:
        """GET (404 when gone), PATCH / POST update ({name, size}; size never shrinks),
        DELETE (204)."""
        volume = _found(self.control.volumes, request.path_params["key"], "network volume")
        if request.method == "GET":
            return JSONResponse(volume)
        if request.method == "DELETE":
            del self.control.volumes[volume["id"]]
            return Response(status_code=204)
        try:
            body = _body(await request.body(), {"name": str, "size": int}, "network volume")
            if body.get("size") is not None:
                _check_size(body["size"])
                if body["size"] < volume["size"]:
                    raise _BadInput("invalid network volume: size can only grow")
        except _BadInput as exc:
            return _error(400, str(exc))
        volume.update({k: v for k, v in body.items() if v is not None})
        return JSONResponse(volume)


def _check_size(size: int) -> None:
    if not 0 <= size <= 4000:
        raise _BadInput("invalid network volume: size must be an integer from 0 to 4000")
