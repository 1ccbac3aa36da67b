"""RunPod's GraphQL operations with pydantic models of their wire shapes: the one wire model of
that protocol, used by the engine's RunPod target and by a mothership provisioning on RunPod.

`RunPodApi` runs over any client with `execute(operation)` (the engine's `GraphQLClient`, the
mothership's plane), an `Operation` being a document, its variables and whether it is
idempotent; it raises its `error` class, `ApiError` unless a subclass names another. Every
document declares its variables with the API's own input type names (`EndpointInput`,
`SaveTemplateInput`, ...), as tetra-rp and flash send them.
Replies are validated into models; an endpoint's `aiKey` never shows in a repr.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ApiError",
    "Build",
    "GraphQLExecutor",
    "Endpoint",
    "Operation",
    "EndpointInput",
    "EnvVar",
    "FlashApp",
    "FlashEnvironment",
    "RunPodApi",
    "TemplateInput",
    "TemplateRef",
    "Upload",
    "template_name",
    "with_env",
]


class ApiError(Exception):
    """A RunPod operation failed; the message is for a person and holds no key."""


_OPERATION = re.compile(r"^\s*(query|mutation)\b\s*(\w+)?", re.IGNORECASE)


@dataclass(frozen=True)
class Operation:
    """One GraphQL operation: its document and variables, and whether it is `idempotent`
    (None: queries are, mutations are not), which says whether a failure may be retried."""

    document: str
    variables: Mapping[str, Any] = field(default_factory=dict)
    idempotent: bool | None = None

    @property
    def kind(self) -> str:
        """`query` or `mutation` (an anonymous `{…}` is a query)."""
        match = _OPERATION.match(self.document)
        return match.group(1).lower() if match else "query"

    @property
    def name(self) -> str:
        """The operation's name for messages (its kind when it has none)."""
        match = _OPERATION.match(self.document)
        return (match.group(2) if match else None) or self.kind

    @property
    def retryable(self) -> bool:
        """Whether a failure that may have reached the server can be sent again."""
        return self.kind == "query" if self.idempotent is None else self.idempotent

    def body(self) -> dict[str, Any]:
        """The JSON body of its HTTP request."""
        return {"query": self.document, "variables": dict(self.variables)}


class GraphQLExecutor(Protocol):
    """Sends one GraphQL operation and returns its `data`."""

    async def execute(self, operation: Operation) -> dict[str, Any]:
        """The operation's `data`; raises on a failure."""
        ...


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class EnvVar(_Wire):
    """One `{key, value}` of a template's env."""

    key: str
    value: str = ""


def with_env(env: Sequence[EnvVar], extra: Mapping[str, str]) -> list[EnvVar]:
    """A template's env with `extra` set over it (sorted by key)."""
    out = {e.key: e.value for e in env}
    out.update(extra)
    return [EnvVar(key=k, value=v) for k, v in sorted(out.items())]


def template_name(app: str, env: str, name: str) -> str:
    """A new template's name: unique per account (the app, env and resource in a short
    digest), plus a random part so a template leaked by a crash never blocks a new one."""
    digest = hashlib.sha256(f"{app}\0{env}\0{name}".encode()).hexdigest()[:8]
    return f"{name}-{digest}-{secrets.token_hex(3)}"


class TemplateInput(_Wire):
    """An inline template (saveEndpoint `template`) or a `SaveTemplateInput` (with `id`)."""

    id: str | None = None
    name: str
    imageName: str
    env: list[EnvVar]
    containerDiskInGb: int = 64
    dockerArgs: str = ""
    isServerless: bool = True
    volumeInGb: int = 0


class EndpointInput(_Wire):
    """`EndpointInput` of saveEndpoint: create without `id`, update with it."""

    id: str | None = None
    name: str
    templateId: str | None = None
    template: TemplateInput | None = None
    gpuIds: str = ""
    gpuCount: int = 0
    allowedCudaVersions: str = ""
    instanceIds: list[str] | None = None
    locations: str | None = None
    networkVolumeId: str | None = None
    idleTimeout: int = 5
    executionTimeoutMs: int = 0
    scalerType: str = "QUEUE_DELAY"
    scalerValue: int = 4
    workersMin: int = 0
    workersMax: int = 3
    workersStandby: int = 0
    workersPFBTarget: int = 0
    type: str = "QB"
    flashBootType: str | None = None
    flashEnvironmentId: str | None = None

    def variables(self) -> dict[str, Any]:
        """The `input` variable (None fields left out: the API rejects template + templateId)."""
        return self.model_dump(exclude_none=True)


class TemplateRef(_Wire):
    """The template an endpoint runs (id and name)."""

    id: str | None = None
    name: str | None = None


class Endpoint(_Wire):
    """An endpoint as the API reports it."""

    id: str
    name: str = ""
    aiKey: str | None = Field(default=None, repr=False)
    templateId: str | None = None
    gpuIds: str | None = None
    gpuCount: int | None = None
    allowedCudaVersions: str | None = None
    instanceIds: list[str] | None = None
    locations: str | None = None
    networkVolumeId: str | None = None
    idleTimeout: int | None = None
    executionTimeoutMs: int | None = None
    scalerType: str | None = None
    scalerValue: int | None = None
    workersMin: int | None = None
    workersMax: int | None = None
    workersStandby: int | None = None
    type: str | None = None
    version: int | None = None
    flashEnvironmentId: str | None = None
    env: list[EnvVar] | None = None
    template: TemplateRef | None = None

    def env_value(self, key: str) -> str | None:
        """The value of `key` in the endpoint's template env (None when absent)."""
        return next((e.value for e in self.env or () if e.key == key), None)


class FlashEnvironment(_Wire):
    """An environment of a Flash app."""

    id: str
    name: str = ""
    activeBuildId: str | None = None


class FlashApp(_Wire):
    """A Flash app and its environments."""

    id: str
    name: str = ""
    flashEnvironments: list[FlashEnvironment] = Field(default_factory=list)


class Upload(_Wire):
    """Where to PUT a build artifact (the URL is a bearer credential: never shown)."""

    uploadUrl: str = Field(repr=False)
    objectKey: str
    expiresAt: str | None = None


class Build(_Wire):
    """A Flash build and its (mutable) manifest."""

    id: str
    manifest: dict[str, Any] | None = None


_ENDPOINT_FIELDS = (
    "id name aiKey templateId gpuIds gpuCount allowedCudaVersions instanceIds locations "
    "networkVolumeId idleTimeout executionTimeoutMs scalerType scalerValue workersMin "
    "workersMax workersStandby type version flashEnvironmentId env { key value } "
    "template { id name }"
)
_APP_FIELDS = "id name flashEnvironments { id name activeBuildId }"


class RunPodApi:
    """Typed operations over one GraphQL client."""

    error: type[Exception] = ApiError

    def __init__(self, client: GraphQLExecutor) -> None:
        self.client = client

    async def account(self) -> str:
        """Who the key belongs to: the account's email, else its id."""
        data = await self.client.execute(Operation("query myself { myself { id email } }"))
        me = data.get("myself") or {}
        return str(me.get("email") or me.get("id") or "unknown account")

    async def endpoints(self) -> list[Endpoint]:
        """Every endpoint of the account (`myself { endpoints }`)."""
        data = await self.client.execute(
            Operation(f"query myEndpoints {{ myself {{ endpoints {{ {_ENDPOINT_FIELDS} }} }} }}")
        )
        me = data.get("myself") or {}
        return [Endpoint.model_validate(e) for e in me.get("endpoints") or [] if e]

    async def save_endpoint(self, endpoint: EndpointInput) -> Endpoint:
        """Create (no `id`) or update an endpoint; an update is safe to retry."""
        data = await self.client.execute(
            Operation(
                f"mutation saveEndpoint($input: EndpointInput!) {{ saveEndpoint(input: $input) "
                f"{{ {_ENDPOINT_FIELDS} }} }}",
                {"input": endpoint.variables()},
                idempotent=endpoint.id is not None,
            )
        )
        saved = data.get("saveEndpoint")
        if not saved:
            raise self.error(f"RunPod API: saveEndpoint of {endpoint.name!r} returned nothing")
        return Endpoint.model_validate(saved)

    async def delete_endpoint(self, endpoint_id: str) -> None:
        """Delete an endpoint (idempotent: deleting a gone endpoint is checked by the caller)."""
        await self.client.execute(
            Operation(
                "mutation deleteEndpoint($id: String!) { deleteEndpoint(id: $id) }",
                {"id": endpoint_id},
                idempotent=True,
            )
        )

    async def save_template(self, template: TemplateInput) -> str:
        """Update (with `id`) a template's image and env; returns its id."""
        data = await self.client.execute(
            Operation(
                "mutation saveTemplate($input: SaveTemplateInput) { saveTemplate(input: $input) "
                "{ id name } }",
                {"input": template.model_dump(exclude_none=True)},
                idempotent=template.id is not None,
            )
        )
        saved = data.get("saveTemplate") or {}
        return str(saved.get("id") or template.id or "")

    async def delete_template(self, name: str) -> None:
        """Delete a template by name (fails while an endpoint still uses it)."""
        await self.client.execute(
            Operation(
                "mutation deleteTemplate($templateName: String!) "
                "{ deleteTemplate(templateName: $templateName) }",
                {"templateName": name},
                idempotent=True,
            )
        )

    async def app_by_name(self, name: str) -> FlashApp | None:
        """The Flash app named `name`, or None."""
        try:
            data = await self.client.execute(
                Operation(
                    f"query flashAppByName($flashAppName: String!) "
                    f"{{ flashAppByName(flashAppName: $flashAppName) {{ {_APP_FIELDS} }} }}",
                    {"flashAppName": name},
                )
            )
        except ApiError as exc:
            if "not found" in str(exc).lower():
                return None
            raise
        app = data.get("flashAppByName")
        return FlashApp.model_validate(app) if app else None

    async def create_app(self, name: str) -> FlashApp:
        """Create a Flash app."""
        data = await self.client.execute(
            Operation(
                f"mutation createFlashApp($input: CreateFlashAppInput!) "
                f"{{ createFlashApp(input: $input) {{ {_APP_FIELDS} }} }}",
                {"input": {"name": name}},
            )
        )
        return FlashApp.model_validate(data.get("createFlashApp") or {})

    async def create_environment(self, app_id: str, name: str) -> FlashEnvironment:
        """Create an environment of an app."""
        data = await self.client.execute(
            Operation(
                "mutation createFlashEnvironment($input: CreateFlashEnvironmentInput!) "
                "{ createFlashEnvironment(input: $input) { id name activeBuildId } }",
                {"input": {"flashAppId": app_id, "name": name}},
            )
        )
        return FlashEnvironment.model_validate(data.get("createFlashEnvironment") or {})

    async def prepare_upload(self, app_id: str, size: int) -> Upload:
        """A presigned URL to upload a build of `size` bytes to."""
        data = await self.client.execute(
            Operation(
                "mutation prepareFlashArtifactUpload($input: PrepareFlashArtifactUploadInput!) "
                "{ prepareFlashArtifactUpload(input: $input) { uploadUrl objectKey expiresAt } }",
                {"input": {"flashAppId": app_id, "tarballSize": size}},
            )
        )
        return Upload.model_validate(data.get("prepareFlashArtifactUpload") or {})

    async def finalize_upload(self, app_id: str, object_key: str) -> Build:
        """Turn an uploaded artifact into a build."""
        data = await self.client.execute(
            Operation(
                "mutation finalizeFlashArtifactUpload($input: FinalizeFlashArtifactUploadInput!) "
                "{ finalizeFlashArtifactUpload(input: $input) { id manifest } }",
                {"input": {"flashAppId": app_id, "objectKey": object_key}},
                idempotent=True,
            )
        )
        return Build.model_validate(data.get("finalizeFlashArtifactUpload") or {})

    async def deploy_build(self, environment_id: str, build_id: str) -> None:
        """Make a build the environment's active build."""
        await self.client.execute(
            Operation(
                "mutation deployBuildToEnvironment($input: DeployBuildToEnvironmentInput!) "
                "{ deployBuildToEnvironment(input: $input) { id name } }",
                {"input": {"flashEnvironmentId": environment_id, "flashBuildId": build_id}},
                idempotent=True,
            )
        )

    async def build(self, build_id: str) -> Build | None:
        """A build with its manifest."""
        data = await self.client.execute(
            Operation(
                "query flashBuild($flashBuildId: String!) "
                "{ flashBuild(flashBuildId: $flashBuildId) { id manifest } }",
                {"flashBuildId": build_id},
            )
        )
        build = data.get("flashBuild")
        return Build.model_validate(build) if build else None

    async def update_manifest(self, build_id: str, manifest: dict[str, Any]) -> None:
        """Replace a build's persisted manifest (the environment's state)."""
        await self.client.execute(
            Operation(
                "mutation updateFlashBuildManifest($input: UpdateFlashBuildManifestInput!) "
                "{ updateFlashBuildManifest(input: $input) { id } }",
                {"input": {"flashBuildId": build_id, "manifest": manifest}},
                idempotent=True,
            )
        )

    async def gpu_prices(self, gpu_types: list[str], count: int) -> dict[str, float]:
        """Lowest hourly price of `count` GPUs of each GPU type (types the API does not list
        are left out)."""
        data = await self.client.execute(
            Operation(
                "query gpuTypes($input: GpuTypeFilter, $count: Int) { gpuTypes(input: $input) "
                "{ id lowestPrice(input: {gpuCount: $count}) { uninterruptablePrice } } }",
                {"input": {"ids": gpu_types}, "count": max(1, count)},
            )
        )
        out: dict[str, float] = {}
        for item in data.get("gpuTypes") or []:
            price = (item.get("lowestPrice") or {}).get("uninterruptablePrice") if item else None
            if isinstance(price, (int, float)):
                out[str(item["id"])] = float(price)
        return out

    async def cpu_price(self, instance_id: str) -> float | None:
        """Hourly serverless price of a CPU instance type, e.g. `cpu3c-2-4` (None if unknown)."""
        flavor = instance_id.split("-", 1)[0]
        data = await self.client.execute(
            Operation(
                "query cpuFlavors($input: CpuFlavorInput, $specifics: SpecificsInput) "
                "{ cpuFlavors(input: $input) { id specifics(input: $specifics) { slsPrice } } }",
                {"input": {"id": flavor}, "specifics": {"instanceId": instance_id}},
            )
        )
        prices = [
            (f.get("specifics") or {}).get("slsPrice") for f in data.get("cpuFlavors") or [] if f
        ]
        known = [float(p) for p in prices if isinstance(p, (int, float))]
        return min(known) if known else None
