"""A resource of the manifest as a RunPod endpoint, and a live endpoint read back as config.

`endpoint_input` is what saveEndpoint gets for a resource: the API fields derived from its
config (GPU pools, CPU instance types, workers, scaler...), `workersStandby` = `workersMin` so
`workers=(0, N)` really scales to zero, and an inline template (image by resource class and
Python version, env with the Flash variables and the code fingerprint). The account key never
goes into a template. `endpoint_table` is the `FLASH_ENDPOINTS` value a caller's template gets
once every endpoint exists: the other endpoints' URLs and endpoint-scoped keys (aiKey), which
is how deployed workers find each other (RunPod gives a worker nothing else to look them up).

`save_endpoint` creates or updates one endpoint with its template, the same steps for the
engine's deploy and a mothership's children.

`live_config` reads a live endpoint back: every API field the console can change that differs
from what its recorded config would send becomes the config value it stands for, so a change
made behind our back is a field of the drift. Empty and absent lists are the same thing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runtime.resources import ServerlessResource, resource_class
from runtime.runpod_state import ResourceState
from runtime.runpod_wire import (
    Endpoint,
    EndpointInput,
    EnvVar,
    RunPodApi,
    TemplateInput,
    with_env,
)
from runtime.runpod_wire import template_name as new_template_name

__all__ = [
    "DEFAULT_API_BASE",
    "DEFAULT_ENDPOINT_BASE",
    "DEFAULT_LB_URL",
    "ENDPOINTS_ENV",
    "FINGERPRINT_ENV",
    "OUR_ENV_KEYS",
    "PLATFORM_ENV_KEYS",
    "Deployment",
    "SavedEndpoint",
    "default_image",
    "endpoint_input",
    "endpoint_table",
    "expected_tables",
    "stale_entries",
    "with_table",
    "image_for",
    "live_config",
    "lb_url",
    "save_endpoint",
    "table_of",
    "template_env",
]

DEFAULT_API_BASE = "https://api.runpod.io"
DEFAULT_ENDPOINT_BASE = "https://api.runpod.ai/v2"
# A load-balanced endpoint's host, `{id}` its endpoint id (`FLASH_RUNPOD_LB_URL` overrides it).
DEFAULT_LB_URL = "https://{id}.api.runpod.ai"
FINGERPRINT_ENV = "_FLASH_SOURCE_FINGERPRINT"
# The caller's endpoint table (runtime/registry.py reads it): set after every endpoint exists.
ENDPOINTS_ENV = "FLASH_ENDPOINTS"
# Variables this target writes into templates (not the user's `env`).
OUR_ENV_KEYS = frozenset(
    {
        "FLASH_RESOURCE_NAME",
        "FLASH_RESOURCE_TYPE",
        "FLASH_ENVIRONMENT_ID",
        "FLASH_APP",
        "FLASH_ENV",
        "FLASH_ENDPOINT_TYPE",
        FINGERPRINT_ENV,
        ENDPOINTS_ENV,
        # A mothership's (engine.runpod.deploy.mothership_env) and its children's.
        "FLASH_IS_MOTHERSHIP",
        "FLASH_MOTHERSHIP_PLANE",
        "FLASH_BUILD_ID",
        "FLASH_RUNPOD_BUILD_ID",
        "RUNPOD_API_KEY",
        "RUNPOD_API_BASE_URL",
        "RUNPOD_ENDPOINT_BASE_URL",
        "FLASH_RUNPOD_LB_URL",
        "FLASH_ENDPOINTS_URL",
        "FLASH_ENDPOINTS_TOKEN",
        "FLASH_MOTHERSHIP_ID",
    }
)
# Variables the platform injects into a template once, at creation (kept on update).
PLATFORM_ENV_KEYS = frozenset({"PORT", "PORT_HEALTH"})

_IMAGE_PYTHON = "3.12"  # the Python of upstream's default worker images (`py3.12-latest`)
_IMAGES = {  # (load balanced, cpu) -> image repository of upstream's worker images
    (False, False): "runpod/flash",
    (False, True): "runpod/flash-cpu",
    (True, False): "runpod/flash-lb",
    (True, True): "runpod/flash-lb-cpu",
}


@dataclass(frozen=True)
class Deployment:
    """Where a resource goes: app, environment and the names it gets there."""

    app: str
    env: str
    environment_id: str


def lb_url(template: str | None, endpoint_id: str) -> str:
    """Base URL of a load-balanced endpoint: `template` (the default when empty) with its id."""
    return (template or DEFAULT_LB_URL).replace("{id}", endpoint_id).rstrip("/")


def default_image(model: ServerlessResource, python: str | None = None) -> str:
    """Upstream's worker image for a resource class and Python version (`py3.12` default)."""
    version = python or _IMAGE_PYTHON
    repo = _IMAGES[(model.is_load_balanced, model.is_cpu)]
    return f"{repo}:py{version}-latest"


def _model(resource_type: str, config: Mapping[str, Any]) -> ServerlessResource:
    return resource_class(resource_type).model_validate(dict(config))


def image_for(resource_type: str, config: Mapping[str, Any], entry: Mapping[str, Any]) -> str:
    """The image a resource runs: fixed at build time in the manifest, else by class."""
    for key in ("imageName", "image_name"):
        value = entry.get(key)
        if isinstance(value, str) and value:
            return value
    model = _model(resource_type, config)
    if not model.is_live and model.imageName:
        return model.imageName
    python = entry.get("python_version")
    return default_image(model, python if isinstance(python, str) else None)


def template_env(
    name: str,
    resource_type: str,
    config: Mapping[str, Any],
    where: Deployment,
    *,
    load_balanced: bool,
    fingerprint: str,
    keep: Mapping[str, str] | None = None,
) -> list[EnvVar]:
    """The template env: the user's env, the Flash variables, and the platform's keys and the
    endpoint table to keep (the table is set once every endpoint exists: `with_table`)."""
    kept = PLATFORM_ENV_KEYS | {ENDPOINTS_ENV}
    env: dict[str, str] = {k: v for k, v in (keep or {}).items() if k in kept}
    user = config.get("env")
    if isinstance(user, Mapping):
        env.update({str(k): "" if v is None else str(v) for k, v in user.items()})
    env.update(
        {
            "FLASH_RESOURCE_NAME": name,
            "FLASH_RESOURCE_TYPE": resource_type,
            "FLASH_APP": where.app,
            "FLASH_ENV": where.env,
            # Marks a deployed worker: a call to an endpoint missing from its table fails
            # rather than running locally.
            "FLASH_ENVIRONMENT_ID": where.environment_id,
            FINGERPRINT_ENV: fingerprint,
        }
    )
    if load_balanced:
        env["FLASH_ENDPOINT_TYPE"] = "lb"
    return [EnvVar(key=k, value=v) for k, v in sorted(env.items())]


def endpoint_table(name: str, peers: Mapping[str, tuple[str, str | None]]) -> str | None:
    """`name`'s endpoint table as `FLASH_ENDPOINTS` carries it: every other endpoint's URL and
    endpoint-scoped key (aiKey; never the account key), from `peers` {name: (url, aiKey)};
    None when there is no other endpoint. Canonical JSON: an unchanged table compares equal."""
    endpoints = {
        peer: {"url": url, "key": key} if key else {"url": url}
        for peer, (url, key) in sorted(peers.items())
        if peer != name
    }
    if not endpoints:
        return None
    return json.dumps({"endpoints": endpoints}, sort_keys=True, separators=(",", ":"))


def expected_tables(
    peers: Mapping[str, tuple[str, str | None]], callers: Iterable[str]
) -> dict[str, str | None]:
    """The endpoint table each endpoint of `peers` should hold: the others' for a caller
    (its code calls another endpoint), none for the rest, so no key goes where it is unused."""
    calling = set(callers)
    return {
        name: endpoint_table(name, peers) if name in calling else None for name in sorted(peers)
    }


def _entries(table: str | None) -> dict[str, Any] | None:
    if table is None:
        return {}
    try:
        parsed = json.loads(table)
    except ValueError:
        return None
    endpoints = parsed.get("endpoints") if isinstance(parsed, dict) else None
    return endpoints if isinstance(endpoints, dict) else None


def stale_entries(live: str | None, expected: str | None) -> tuple[str, ...]:
    """The endpoint names whose entries differ between a live table and the expected one
    (missing, extra or another URL/key), sorted; never a URL or key. A live table that cannot
    be read has every expected entry out of date (and `FLASH_ENDPOINTS` itself when empty)."""
    if live == expected:
        return ()
    want = _entries(expected) or {}
    have = _entries(live)
    if have is None:
        return tuple(sorted(want)) or (ENDPOINTS_ENV,)
    return tuple(sorted(n for n in set(want) | set(have) if want.get(n) != have.get(n)))


def with_table(env: Sequence[EnvVar], table: str | None) -> list[EnvVar]:
    """`env` with its endpoint table replaced by `table` (removed when None)."""
    out = {e.key: e.value for e in env if e.key != ENDPOINTS_ENV}
    if table is not None:
        out[ENDPOINTS_ENV] = table
    return [EnvVar(key=k, value=v) for k, v in sorted(out.items())]


def table_of(env: Sequence[EnvVar] | None) -> str | None:
    """The endpoint table in a template env (None: none)."""
    return next((e.value for e in env or () if e.key == ENDPOINTS_ENV), None)


def endpoint_input(
    name: str,
    resource_type: str,
    config: Mapping[str, Any],
    where: Deployment,
    *,
    endpoint_id: str | None = None,
    template_id: str | None = None,
    template: TemplateInput | None = None,
) -> EndpointInput:
    """saveEndpoint's input for a resource: create with `template`, update with the ids."""
    model = _model(resource_type, config)
    cpu_types = getattr(model, "instanceIds", None) if model.is_cpu else None
    instance_ids = None
    if cpu_types is not None:
        from runtime.enums import CpuInstanceType

        instance_ids = [t.value for t in CpuInstanceType.expand(cpu_types)]
    return EndpointInput(
        id=endpoint_id,
        name=name,
        templateId=template_id if template is None else None,
        template=template,
        gpuIds="" if model.is_cpu else model.gpuIds,
        gpuCount=0 if model.is_cpu else model.gpuCount,
        allowedCudaVersions="" if model.is_cpu else model.allowedCudaVersions,
        instanceIds=instance_ids,
        locations=model.locations,
        networkVolumeId=model.networkVolumeId,
        idleTimeout=model.idleTimeout,
        executionTimeoutMs=model.executionTimeoutMs,
        scalerType=model.scalerType.value,
        scalerValue=model.scalerValue,
        workersMin=model.workersMin,
        workersMax=model.workersMax,
        workersStandby=model.workersMin,
        workersPFBTarget=model.workersPFBTarget,
        type=model.type.value,
        flashBootType="FLASHBOOT" if model.flashboot else None,
        flashEnvironmentId=where.environment_id,
    )


# API field -> config field, for the fields compared one to one.
_SCALARS = (
    "workersMin",
    "workersMax",
    "idleTimeout",
    "executionTimeoutMs",
    "scalerType",
    "scalerValue",
)


@dataclass(frozen=True)
class SavedEndpoint:
    """One endpoint as `save_endpoint` left it: the manifest's `spec` it was saved from, the
    endpoint, and its template's name and image."""

    spec: Mapping[str, Any]
    endpoint: Endpoint
    template_name: str | None
    image: str

    def record(
        self, url: str, build_id: str, *, role: str, mothership: str | None
    ) -> ResourceState:
        """Its entry in the environment's state (`deployments`), saved now."""
        return ResourceState(
            endpoint_id=self.endpoint.id,
            resource_type=str(self.spec.get("resource_type") or ""),
            is_load_balanced=bool(self.spec.get("is_load_balanced")),
            template_id=self.endpoint.templateId,
            template_name=self.template_name,
            image=self.image,
            config=dict(self.spec.get("config") or {}),
            config_hash=self.spec.get("config_hash"),
            code_hash=self.spec.get("code_hash"),
            build_id=build_id,
            url=url,
            ai_key=self.endpoint.aiKey,
            deployed_at=time.time(),
            role=role,
            mothership=mothership,
        )


async def save_endpoint(
    api: RunPodApi,
    where: Deployment,
    spec: Mapping[str, Any],
    entry: Mapping[str, Any],
    live: Endpoint | None,
    *,
    recorded_template: str | None = None,
    extra: Mapping[str, str] | None = None,
    on_template: Callable[[list[EnvVar]], None] | None = None,
) -> SavedEndpoint:
    """Save the endpoint of `spec` (the manifest's name, resource_type, config,
    is_load_balanced, code_hash; `entry` its manifest entry): without `live`, created with an
    inline template; else its template's image and env rewritten first (the template by
    `recorded_template`, else the live one's name), then the endpoint updated by id. A new
    template gets the env afresh; an update keeps the platform's keys and the endpoint table
    of the live one; `extra` is set over it. `on_template` gets each env a template is given
    as soon as it has it: an update's even when the endpoint's save then fails. A template
    that is unknown is not written."""
    name = str(spec["name"])
    resource_type = str(spec.get("resource_type") or "")
    config = dict(spec.get("config") or {})
    image = image_for(resource_type, config, entry)
    env = template_env(
        name,
        resource_type,
        config,
        where,
        load_balanced=bool(spec.get("is_load_balanced")),
        fingerprint=str(spec.get("code_hash") or ""),
        keep=None if live is None else {e.key: e.value for e in live.env or ()},
    )
    if extra:
        env = with_env(env, extra)
    if live is None:
        new_name = new_template_name(where.app, where.env, name)
        template = TemplateInput(name=new_name, imageName=image, env=env)
        payload = endpoint_input(name, resource_type, config, where, template=template)
        created = await api.save_endpoint(payload)  # the template comes with its endpoint
        if on_template is not None:
            on_template(env)
        return SavedEndpoint(spec, created, new_name, image)
    named = recorded_template or (live.template.name if live.template is not None else None)
    if live.templateId and named:
        await api.save_template(
            TemplateInput(id=live.templateId, name=named, imageName=image, env=env)
        )
        if on_template is not None:
            on_template(env)
    payload = endpoint_input(
        name, resource_type, config, where, endpoint_id=live.id, template_id=live.templateId
    )
    return SavedEndpoint(spec, await api.save_endpoint(payload), named, image)


def live_config(
    resource_type: str, config: Mapping[str, Any], live: Endpoint
) -> tuple[dict[str, Any], bool]:
    """(`config` with the live endpoint's differing values written in, whether any differed)."""
    try:
        sent = endpoint_input("x", resource_type, config, Deployment("", "", ""))
    except (ValueError, KeyError, TypeError):
        return dict(config), False  # a config we cannot map: no field-level evidence
    out = dict(config)
    changed = False
    for field in _SCALARS:
        value = getattr(live, field)
        if value is not None and value != getattr(sent, field):
            out[field], changed = value, True
    is_cpu = sent.instanceIds is not None
    if not is_cpu and live.gpuCount is not None and live.gpuCount != sent.gpuCount:
        out["gpuCount"], changed = live.gpuCount, True
    if not is_cpu and live.gpuIds is not None and _items(live.gpuIds) != _items(sent.gpuIds):
        out["gpus"], changed = [g for g in live.gpuIds.split(",") if g], True
    if (
        is_cpu
        and live.instanceIds is not None
        and set(live.instanceIds) != set(sent.instanceIds or [])
    ):
        out["instanceIds"], changed = list(live.instanceIds), True
    if live.env is not None:
        user = {e.key: e.value for e in live.env if e.key not in OUR_ENV_KEYS | PLATFORM_ENV_KEYS}
        mine = config.get("env") if isinstance(config.get("env"), Mapping) else {}
        if user != {str(k): str(v) for k, v in (mine or {}).items()}:
            out["env"], changed = user, True
    return out, changed


def _items(csv: str) -> set[str]:
    return {p.strip() for p in csv.split(",") if p.strip()}
