"""Endpoints and templates of the fake RunPod account: records, validation, version rules.

`EndpointBook` holds the account's endpoints and templates and implements saveEndpoint,
deleteEndpoint, saveTemplate, deleteTemplate and updateEndpointTemplate as the API does. Each
rule says where it comes from: D = documented (runpod_api.md §2.2/§2.3, DOCS, SDK code),
Q = inferred (runpod_api.md "Q:" items or no source; the fake picks the strict reading).

- D: `template` together with `templateId` is rejected; `templateId` must exist.
- D: names need not be unique; every create assigns a new `id`, `aiKey`, version 1 and, for an
  inline `template`, a new template (`templateId`).
- D: an update (`id` present) that changes the image/template, GPU pools/count, CUDA versions,
  instanceIds, locations, volumes or flashboot bumps `version`; workers, scaler, timeouts and env
  roll without a bump.
- D: `workersStandby` not sent on create -> 1 (observed in flash #364: no scale to zero).
- D: the API returns `instanceIds: []` on GPU endpoints.
- D: LB endpoints get `PORT` and `PORT_HEALTH` in their template env once, at creation.
- D: saveTemplate needs `env` (schema) and unique names; a serverless template needs
  `volumeInGb: 0`. deleteTemplate deletes by name and fails while an endpoint uses it.
- D: deleteEndpoint returns null; deleting an endpoint does not delete its template.
- Q: deleteEndpoint does not require workersMin = workersMax = 0 first (DOCS ask for it, no SDK
  scales down before deleting, and their deletes succeed).
- D: deleteTemplate can lag after the template's last use: `template_release_lag` seconds
  (default 0) during which it still fails as "in use".
- Q: a missing name or image, idleTimeout outside 1-3600, negative workers, workersMin > workersMax,
  an unknown type/scalerType/GPU pool/CPU instance, or an unknown id/flashEnvironmentId is an error;
  so are neither or both of gpuIds and instanceIds. `gpuIds` takes pools and `-<GPU type>`
  negations (what flash sends), not bare GPU type names.
- Q: an inline template's name must be unique too, except the endpoint's own template's name on
  update, which updates that template in place.
"""

from __future__ import annotations

import dataclasses
import secrets
import string
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fakes.runpod_catalog import cpu_instance, gpu_ids_problem

PLATFORM_PORT = "80"  # what the platform injects into an LB template as PORT / PORT_HEALTH
_ID_ALPHABET = string.ascii_lowercase + string.digits

# EndpointInput fields that say what an endpoint runs on and where.
_PLACEMENT = (
    "gpuIds",
    "gpuCount",
    "allowedCudaVersions",
    "minCudaVersion",
    "instanceIds",
    "locations",
    "networkVolumeId",
    "networkVolumeIds",
)
# EndpointInput fields that bump `version` when an update changes them (D, runpod_api.md §2.2).
_VERSIONED = ("templateId", *_PLACEMENT, "flashBootType")
# EndpointInput fields copied onto the record as they are.
_PLAIN = (
    "name",
    *_PLACEMENT,
    "idleTimeout",
    "executionTimeoutMs",
    "scalerType",
    "scalerValue",
    "workersMin",
    "workersMax",
    "workersStandby",
    "workersPFBTarget",
    "type",
    "flashBootType",
    "flashEnvironmentId",
)


class ApiError(Exception):
    """An error the API reports in `errors[].message` (HTTP 200)."""


def new_id(length: int) -> str:
    """A RunPod-style lower-case alphanumeric id."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def now() -> str:
    """The current time as the API writes it (ISO 8601, UTC)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Template:
    """A pod template (wire field names)."""

    id: str
    name: str
    imageName: str
    env: dict[str, str]
    containerDiskInGb: int = 64
    dockerArgs: str = ""
    readme: str = ""
    isServerless: bool = True
    volumeInGb: int = 0
    volumeMountPath: str = ""
    ports: str = ""
    startScript: str = ""
    advancedStart: bool = False
    containerRegistryAuthId: str = ""
    config: Any = None
    isPublic: bool = False
    startSsh: bool = False

    def wire(self) -> dict[str, Any]:
        """The object GraphQL returns for it."""
        data = dataclasses.asdict(self)
        data["env"] = [{"key": k, "value": v} for k, v in self.env.items()]
        return data


@dataclass
class Endpoint:
    """A serverless endpoint (wire field names; what saveEndpoint stores)."""

    id: str
    name: str
    templateId: str
    aiKey: str = field(repr=False)  # an endpoint-scoped key: kept out of test output
    userId: str
    createdAt: str
    version: int = 1
    type: str = "QB"
    gpuIds: str = ""
    gpuCount: int = 1
    allowedCudaVersions: str = ""
    minCudaVersion: str | None = None
    instanceIds: list[str] = field(default_factory=list)
    locations: str = ""
    networkVolumeId: str | None = None
    networkVolumeIds: list[dict[str, Any]] = field(default_factory=list)
    idleTimeout: int = 5
    executionTimeoutMs: int = 0
    scalerType: str = "QUEUE_DELAY"
    scalerValue: int = 4
    workersMin: int = 0
    workersMax: int = 3
    workersStandby: int = 1
    workersPFBTarget: int = 0
    flashBootType: str | None = None
    flashEnvironmentId: str | None = None


class EndpointBook:
    """The account's endpoints and templates, with the API's rules (see the module docstring)."""

    def __init__(self, user_id: str, template_release_lag: float = 0.0) -> None:
        self.user_id = user_id
        self.endpoints: dict[str, Endpoint] = {}
        self.templates: dict[str, Template] = {}
        # D: deleteTemplate "can lag 2 min after last use"; 0 (the default) turns the lag off.
        self.template_release_lag = template_release_lag
        self._released_at: dict[str, float] = {}  # template id -> when its last user left

    # --- templates ------------------------------------------------------------------------
    def template_named(self, name: str) -> Template | None:
        """The template of that name, or None."""
        return next((t for t in self.templates.values() if t.name == name), None)

    def save_template(self, data: dict[str, Any]) -> Template:
        """saveTemplate: create (no `id`) or update a template; returns it."""
        name, image = data["name"], data["imageName"]
        if not name.strip():
            raise ApiError("Template name must not be empty")
        if not image.strip():
            raise ApiError("imageName must not be empty")
        env = _env_dict(data["env"])
        template_id = data.get("id")
        clash = self.template_named(name)
        if template_id is None:
            if clash is not None:
                raise ApiError(f"Template name must be unique: {name!r} is taken")
            if data.get("isServerless") and data.get("volumeInGb", 0) != 0:
                raise ApiError("A serverless template must have volumeInGb 0")
            template = Template(id=new_id(10), name=name, imageName=image, env=env)
            self.templates[template.id] = template
        else:
            template = self.templates.get(template_id)
            if template is None:
                raise ApiError(f"Template not found: {template_id}")
            if clash is not None and clash.id != template.id:
                raise ApiError(f"Template name must be unique: {name!r} is taken")
            template.name, template.imageName, template.env = name, image, env
        for key in _TEMPLATE_OPTIONAL:
            if data.get(key) is not None:
                setattr(template, key, data[key])
        return template

    def delete_template(self, name: str) -> None:
        """deleteTemplate: by NAME; fails while an endpoint uses the template."""
        template = self.template_named(name)
        if template is None:
            raise ApiError(f"Template not found: {name!r}")
        users = [e.id for e in self.endpoints.values() if e.templateId == template.id]
        if users:
            raise ApiError(f"Template {name!r} is in use by endpoint(s) {', '.join(users)}")
        released = self._released_at.get(template.id)
        if released is not None and time.monotonic() - released < self.template_release_lag:
            raise ApiError(f"Template {name!r} is in use")
        del self.templates[template.id]
        self._released_at.pop(template.id, None)

    # --- endpoints ------------------------------------------------------------------------
    def save_endpoint(self, data: dict[str, Any], environments: set[str]) -> Endpoint:
        """saveEndpoint: create (no `id`) or update; `environments` are the known env ids."""
        if data.get("template") is not None and data.get("templateId") is not None:
            raise ApiError("Provide either template or templateId, not both")
        env_id = data.get("flashEnvironmentId")
        if env_id is not None and env_id not in environments:
            raise ApiError(f"Flash environment not found: {env_id}")
        if data.get("id") is None:
            return self._create(data)
        endpoint = self.endpoints.get(data["id"])
        if endpoint is None:
            raise ApiError(f"Endpoint not found: {data['id']}")
        return self._update(endpoint, data)

    def _create(self, data: dict[str, Any]) -> Endpoint:
        if not (data.get("name") or "").strip():
            raise ApiError("Endpoint name is required")
        if data.get("template") is None and data.get("templateId") is None:
            raise ApiError("Provide a template or a templateId")
        fields = _checked(data, None)
        if data.get("templateId") is not None:
            template_id = self._existing_template(data["templateId"]).id
        else:
            template_id = self._inline_template(data["template"], None).id
        endpoint = Endpoint(
            id=new_id(14),
            name=fields.pop("name"),
            templateId=template_id,
            aiKey="rpa_" + secrets.token_hex(20).upper(),
            userId=self.user_id,
            createdAt=now(),
        )
        if not fields.get("instanceIds") and "gpuCount" not in fields:
            fields["gpuCount"] = 1
        elif fields.get("instanceIds") and "gpuCount" not in fields:
            fields["gpuCount"] = 0
        for key, value in fields.items():
            setattr(endpoint, key, value)
        if endpoint.type == "LB":
            env = self.templates[template_id].env
            env.setdefault("PORT", PLATFORM_PORT)
            env.setdefault("PORT_HEALTH", env["PORT"])
        self.endpoints[endpoint.id] = endpoint
        return endpoint

    def _update(self, endpoint: Endpoint, data: dict[str, Any]) -> Endpoint:
        fields = _checked(data, endpoint)
        before = {key: getattr(endpoint, key) for key in _VERSIONED}
        image_before = self.templates[endpoint.templateId].imageName
        if data.get("templateId") is not None:
            fields["templateId"] = self._existing_template(data["templateId"]).id
        elif data.get("template") is not None:
            fields["templateId"] = self._inline_template(data["template"], endpoint).id
        for key, value in fields.items():
            setattr(endpoint, key, value)
        self._release(before["templateId"])
        changed = any(getattr(endpoint, key) != value for key, value in before.items())
        if changed or self.templates[endpoint.templateId].imageName != image_before:
            endpoint.version += 1
        return endpoint

    def delete_endpoint(self, endpoint_id: str) -> Endpoint:
        """deleteEndpoint: forget it (its template stays, as on RunPod); returns the record."""
        endpoint = self.endpoints.pop(endpoint_id, None)
        if endpoint is None:
            raise ApiError(f"Endpoint not found: {endpoint_id}")
        self._release(endpoint.templateId)
        return endpoint

    def set_template(self, endpoint_id: str, template_id: str) -> Endpoint:
        """updateEndpointTemplate: point the endpoint at another template (a version bump)."""
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise ApiError(f"Endpoint not found: {endpoint_id}")
        previous = endpoint.templateId
        endpoint.templateId = self._existing_template(template_id).id
        endpoint.version += 1
        self._release(previous)
        return endpoint

    def _release(self, template_id: str) -> None:
        if not self.users_of(template_id):
            self._released_at[template_id] = time.monotonic()

    def users_of(self, template_id: str) -> list[Endpoint]:
        """The endpoints that use a template."""
        return [e for e in self.endpoints.values() if e.templateId == template_id]

    def wire(self, endpoint: Endpoint) -> dict[str, Any]:
        """The object GraphQL returns for an endpoint (its template and env included)."""
        data = dataclasses.asdict(endpoint)
        template = self.templates.get(endpoint.templateId)
        data["template"] = template.wire() if template else None
        data["env"] = template.wire()["env"] if template else []
        data["computeType"] = "CPU" if endpoint.instanceIds else "GPU"
        data["activeBuildid"] = None
        data["idePodId"] = None
        data["networkVolume"] = (
            {"id": endpoint.networkVolumeId, "dataCenterId": None}
            if endpoint.networkVolumeId
            else None
        )
        return data

    def _existing_template(self, template_id: str) -> Template:
        template = self.templates.get(template_id)
        if template is None:
            raise ApiError(f"Template not found: {template_id}")
        return template

    def _inline_template(self, data: dict[str, Any], owner: Endpoint | None) -> Template:
        name = data.get("name") or f"endpoint-template-{new_id(8)}"
        own = self.templates.get(owner.templateId) if owner else None
        payload = {**data, "name": name, "env": data.get("env") or []}
        if own is not None and own.name == name:
            payload["id"] = own.id
            payload["env"] = _carry_platform_env(own.env, payload["env"])
        return self.save_template(payload)


_TEMPLATE_OPTIONAL = (
    "containerDiskInGb",
    "dockerArgs",
    "readme",
    "isServerless",
    "volumeInGb",
    "volumeMountPath",
    "ports",
    "startScript",
    "advancedStart",
    "containerRegistryAuthId",
    "config",
    "isPublic",
    "startSsh",
)


def _env_dict(items: list[dict[str, str] | None]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        if item is None:
            raise ApiError("env entries must not be null")
        env[item["key"]] = item["value"]
    return env


def _carry_platform_env(old: dict[str, str], new: list[dict[str, str]]) -> list[dict[str, str]]:
    # An inline template replaces the env as given; the platform's own keys are not the
    # client's to drop when it re-sends its template for the same endpoint (Q).
    keys = {item["key"] for item in new if item}
    kept = [{"key": k, "value": old[k]} for k in ("PORT", "PORT_HEALTH") if k in old]
    return [*new, *(item for item in kept if item["key"] not in keys)]


def _checked(data: dict[str, Any], current: Endpoint | None) -> dict[str, Any]:
    """The EndpointInput fields to store, validated against the merged result."""
    fields = {key: data[key] for key in _PLAIN if key in data and data[key] is not None}
    if fields.get("networkVolumeId") == "":
        fields["networkVolumeId"] = None
    if current is None and "workersStandby" not in fields:
        fields["workersStandby"] = 1  # D: the server's choice when not sent (flash #364)
    merged = {**(dataclasses.asdict(current) if current else {}), **fields}
    problem = _problem(merged)
    if problem:
        raise ApiError(problem)
    return fields


def _problem(merged: dict[str, Any]) -> str | None:
    idle = merged.get("idleTimeout", 5)
    if not 1 <= idle <= 3600:
        return f"idleTimeout must be between 1 and 3600 seconds, got {idle}"
    low, high = merged.get("workersMin", 0), merged.get("workersMax", 3)
    if low < 0 or high < 0:
        return "workersMin and workersMax must not be negative"
    if low > high:
        return f"workersMin ({low}) must not exceed workersMax ({high})"
    if merged.get("workersStandby", 0) < 0:
        return "workersStandby must not be negative"
    if merged.get("type", "QB") not in ("QB", "LB"):
        return f"type must be QB or LB, got {merged['type']!r}"
    if merged.get("scalerType", "QUEUE_DELAY") not in ("QUEUE_DELAY", "REQUEST_COUNT"):
        return f"scalerType must be QUEUE_DELAY or REQUEST_COUNT, got {merged['scalerType']!r}"
    if merged.get("gpuCount", 1) < 0:
        return "gpuCount must not be negative"
    gpu_problem = gpu_ids_problem(merged.get("gpuIds") or "")
    if gpu_problem:
        return gpu_problem
    for instance in merged.get("instanceIds") or []:
        if instance is None or cpu_instance(instance) is None:
            return f"unknown CPU instance id {instance!r} in instanceIds"
    has_gpus = bool((merged.get("gpuIds") or "").strip(", "))
    if merged.get("instanceIds") and has_gpus:
        return "an endpoint takes gpuIds or instanceIds, not both"
    if not merged.get("instanceIds") and not has_gpus:
        return "an endpoint needs gpuIds (GPU pools) or instanceIds (CPU instance types)"
    return None
