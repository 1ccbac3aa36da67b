"""The fake's GraphQL root: every query and mutation, over the account's books.

`ControlPlane` is the root value graphql-core resolves fields on: a root field `saveEndpoint`
calls the method `saveEndpoint(info, input=...)`. Replies are plain dicts in wire shape; nested
fields with arguments (`myself.endpoint(id)`, `gpuTypes.lowestPrice(input)`) are callables, as
graphql-core's default resolver expects. Changes that concern running workers (an endpoint saved
or deleted, a template's env or image changed, a build deployed to an environment) are handed to
the data plane, which starts, rolls or stops real workers.

All state lives on the server's event loop thread; the test-side helpers of `FakeRunPod` run
their reads and edits on that loop too, so there is no lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from fakes.runpod_catalog import CPU_FLAVORS, GpuModel, cpu_flavor, cpu_instance, gpu_models
from fakes.runpod_endpoints import ApiError, Endpoint, EndpointBook, Template
from fakes.runpod_flash import FlashBook, FlashBuild, FlashEnvironment, expires_iso

_Info = Any  # graphql.GraphQLResolveInfo; resolvers do not use it


class DataPlaneHook(Protocol):
    """What the control plane needs of the data plane (tests/fakes/runpod_dataplane.py)."""

    async def apply(self, endpoint: Any) -> None: ...

    async def remove(self, endpoint_id: str) -> None: ...

    async def close(self) -> None: ...


class ControlPlane:
    """The root value of the GraphQL schema: one account's control plane."""

    def __init__(
        self,
        storage: Path,
        base_url: str,
        user_id: str,
        email: str,
        data_plane: DataPlaneHook | None,
        view: Callable[[Endpoint, Template, Path | None], Any] | None,
        template_release_lag: float = 0.0,
    ) -> None:
        self.book = EndpointBook(user_id, template_release_lag)
        self.flash = FlashBook(storage)
        self.volumes: dict[str, dict[str, Any]] = {}  # REST v1 network volumes, by id
        self.user_id, self.email = user_id, email
        self._base_url = base_url
        self._data_plane = data_plane
        self._locks: dict[str, asyncio.Lock] = {}
        self._view = view

    # --- data plane -----------------------------------------------------------------------
    async def sync(self, endpoint: Endpoint) -> None:
        """Hand an endpoint's current definition to the data plane (start/roll workers)."""
        if self._data_plane is None or self._view is None:
            return
        # One data-plane change per endpoint at a time, made from the state current when it
        # starts: a delete that lands while a rollout is still starting workers waits for it,
        # and a rollout of an endpoint deleted meanwhile does nothing (no orphaned workers).
        async with self._lock(endpoint.id):
            if self.book.endpoints.get(endpoint.id) is not endpoint:
                return
            template = self.book.templates[endpoint.templateId]
            artifact = self.flash.artifact_of(endpoint.flashEnvironmentId)
            await self._data_plane.apply(self._view(endpoint, template, artifact))

    async def _forget(self, endpoint_id: str) -> None:
        if self._data_plane is None:
            return
        async with self._lock(endpoint_id):
            await self._data_plane.remove(endpoint_id)
        self._locks.pop(endpoint_id, None)

    def _lock(self, endpoint_id: str) -> asyncio.Lock:
        return self._locks.setdefault(endpoint_id, asyncio.Lock())

    # --- queries --------------------------------------------------------------------------
    def myself(self, info: _Info) -> dict[str, Any]:
        """`myself { id email endpoints endpoint(id) flashApps networkVolumes }`."""
        return {
            "id": self.user_id,
            "email": self.email,
            "pubKey": "",
            "endpoints": [self.book.wire(e) for e in self.book.endpoints.values()],
            "endpoint": self._endpoint_or_none,
            "flashApps": [self._app(a.id) for a in self.flash.apps.values()],
            "networkVolumes": list(self.volumes.values()),
        }

    def _endpoint_or_none(self, info: _Info, id: str) -> dict[str, Any] | None:
        endpoint = self.book.endpoints.get(id)
        return self.book.wire(endpoint) if endpoint else None

    def podTemplate(self, info: _Info, id: str) -> dict[str, Any] | None:
        """`podTemplate(id)`: null when there is none."""
        template = self.book.templates.get(id)
        return template.wire() if template else None

    def gpuTypes(self, info: _Info, input: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """`gpuTypes(input: {id | ids})`: GPU models (pool names are not GPU type ids)."""
        ids = None
        if input is not None and input.get("ids") is not None:
            ids = list(input["ids"])
        if input is not None and input.get("id") is not None:
            ids = [*(ids or []), input["id"]]
        return [_gpu_type(model) for model in gpu_models(ids)]

    def cpuTypes(self, info: _Info) -> list[dict[str, Any]]:
        """`cpuTypes`: the CPU flavors as processor types."""
        return [
            {
                "id": f.id,
                "displayName": f.display_name,
                "manufacturer": "AMD",
                "cores": f.max_vcpu,
                "threadsPerCore": 2,
                "groupId": f.group_name,
            }
            for f in CPU_FLAVORS
        ]

    def cpuFlavors(self, info: _Info, input: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """`cpuFlavors(input: {id})` with `specifics(input: {instanceId})` prices."""
        wanted = (input or {}).get("id")
        flavors = CPU_FLAVORS if wanted is None else [f for f in [cpu_flavor(wanted)] if f]
        return [_cpu_flavor(f.id) for f in flavors]

    def flashApp(self, info: _Info, flashAppId: str) -> dict[str, Any]:
        """`flashApp(flashAppId)`."""
        return self._app(self.flash.app(flashAppId).id)

    def flashAppByName(self, info: _Info, flashAppName: str) -> dict[str, Any]:
        """`flashAppByName(flashAppName)`: an "app not found" error when there is none."""
        return self._app(self.flash.app_by_name(flashAppName).id)

    def flashEnvironment(self, info: _Info, flashEnvironmentId: str) -> dict[str, Any]:
        """`flashEnvironment(flashEnvironmentId)`."""
        return self._environment(self.flash.environment(flashEnvironmentId))

    def flashEnvironmentByName(self, info: _Info, input: dict[str, Any]) -> dict[str, Any]:
        """`flashEnvironmentByName(input: {flashAppId, name})`."""
        env = self.flash.environment_by_name(input["flashAppId"], input["name"])
        return self._environment(env)

    def flashBuild(self, info: _Info, flashBuildId: str) -> dict[str, Any]:
        """`flashBuild(flashBuildId)`: id and (persisted, mutable) manifest."""
        return _build(self.flash.build(flashBuildId))

    # --- endpoint and template mutations ---------------------------------------------------
    async def saveEndpoint(self, info: _Info, input: dict[str, Any]) -> dict[str, Any]:
        """`saveEndpoint(input)`: create, or update when `id` is present."""
        endpoint = self.book.save_endpoint(input, set(self.flash.environments))
        await self.sync(endpoint)
        return self.book.wire(endpoint)

    async def deleteEndpoint(self, info: _Info, id: str) -> None:
        """`deleteEndpoint(id)`: returns null."""
        self.book.delete_endpoint(id)
        await self._forget(id)

    async def saveTemplate(self, info: _Info, input: dict[str, Any] | None = None) -> dict:
        """`saveTemplate(input)`: endpoints using an updated template roll to it."""
        if input is None:
            raise ApiError("saveTemplate needs an input")
        template = self.book.save_template(input)
        for endpoint in self.book.users_of(template.id):
            await self.sync(endpoint)
        return template.wire()

    def deleteTemplate(self, info: _Info, templateName: str) -> None:
        """`deleteTemplate(templateName)`: by name; fails while the template is in use."""
        self.book.delete_template(templateName)

    async def updateEndpointTemplate(self, info: _Info, input: dict[str, Any]) -> dict:
        """`updateEndpointTemplate(input: {templateId, endpointId})`."""
        endpoint = self.book.set_template(input["endpointId"], input["templateId"])
        await self.sync(endpoint)
        return self.book.wire(endpoint)

    # --- flash mutations ------------------------------------------------------------------
    def createFlashApp(self, info: _Info, input: dict[str, Any]) -> dict[str, Any]:
        """`createFlashApp(input: {name})`."""
        return self._app(self.flash.create_app(input["name"]).id)

    def createFlashEnvironment(self, info: _Info, input: dict[str, Any]) -> dict[str, Any]:
        """`createFlashEnvironment(input: {flashAppId, name})`."""
        env = self.flash.create_environment(input["flashAppId"], input["name"])
        return self._environment(env)

    def prepareFlashArtifactUpload(self, info: _Info, input: dict[str, Any]) -> dict[str, Any]:
        """`prepareFlashArtifactUpload(input: {flashAppId, tarballSize})`: a presigned URL."""
        slot = self.flash.prepare_upload(input["flashAppId"], input["tarballSize"])
        return {
            "uploadUrl": f"{self._base_url}/upload/{slot.objectKey}?sig={slot.signature}",
            "objectKey": slot.objectKey,
            "expiresAt": expires_iso(slot.expires),
        }

    def finalizeFlashArtifactUpload(self, info: _Info, input: dict[str, Any]) -> dict:
        """`finalizeFlashArtifactUpload(input: {flashAppId, objectKey})`: the new build."""
        return _build(self.flash.finalize(input["flashAppId"], input["objectKey"]))

    async def deployBuildToEnvironment(self, info: _Info, input: dict[str, Any]) -> dict:
        """`deployBuildToEnvironment(input)`: the environment's endpoints roll to the build."""
        env = self.flash.deploy(input["flashEnvironmentId"], input["flashBuildId"])
        for endpoint in self._endpoints_of(env.id):
            await self.sync(endpoint)
        return self._environment(env)

    def updateFlashBuildManifest(self, info: _Info, input: dict[str, Any]) -> dict[str, Any]:
        """`updateFlashBuildManifest(input: {flashBuildId, manifest})`."""
        return _build(self.flash.set_manifest(input["flashBuildId"], input["manifest"]))

    async def addEndpointToFlashEnvironment(self, info: _Info, input: dict[str, Any]) -> dict:
        """`addEndpointToFlashEnvironment(input: {flashEnvironmentId, endpointId})` (T20)."""
        env = self.flash.environment(input["flashEnvironmentId"])
        endpoint = self.book.endpoints.get(input["endpointId"])
        if endpoint is None:
            raise ApiError(f"Endpoint not found: {input['endpointId']}")
        endpoint.flashEnvironmentId = env.id
        await self.sync(endpoint)
        return self.book.wire(endpoint)

    def addNetworkVolumeToFlashEnvironment(self, info: _Info, input: dict[str, Any]) -> dict:
        """`addNetworkVolumeToFlashEnvironment(input)` (T20): recorded on the environment."""
        env = self.flash.environment(input["flashEnvironmentId"])
        env.networkVolumeIds.append(input["networkVolumeId"])
        return {"id": input["networkVolumeId"], "name": None, "flashEnvironmentId": env.id}

    def updateFlashEnvironment(self, info: _Info, input: dict[str, Any]) -> dict[str, Any]:
        """`updateFlashEnvironment(input: {flashEnvironmentId, status})` (T20)."""
        env = self.flash.set_state(input["flashEnvironmentId"], input.get("status"))
        return self._environment(env)

    def deleteFlashEnvironment(self, info: _Info, flashEnvironmentId: str) -> None:
        """`deleteFlashEnvironment`: its endpoints keep running (flash #367)."""
        self.flash.delete_environment(flashEnvironmentId)

    def deleteFlashApp(self, info: _Info, flashAppId: str) -> None:
        """`deleteFlashApp`: its endpoints keep running (flash #367)."""
        self.flash.delete_app(flashAppId)

    # --- wire shapes ----------------------------------------------------------------------
    def _endpoints_of(self, env_id: str) -> list[Endpoint]:
        return [e for e in self.book.endpoints.values() if e.flashEnvironmentId == env_id]

    def _environment(self, env: FlashEnvironment) -> dict[str, Any]:
        data = {k: v for k, v in dataclasses.asdict(env).items() if k != "networkVolumeIds"}
        data["endpoints"] = [self.book.wire(e) for e in self._endpoints_of(env.id)]
        data["networkVolumes"] = [{"id": v, "name": None} for v in env.networkVolumeIds]
        data["activeArtifact"] = None
        if env.activeBuildId is not None:
            build = self.flash.builds[env.activeBuildId]
            slot = self.flash.uploads[build.objectKey]
            data["activeArtifact"] = {
                "objectKey": build.objectKey,
                "downloadUrl": f"{self._base_url}/upload/{build.objectKey}?sig={slot.signature}",
                "expiresAt": expires_iso(slot.expires),
            }
        return data

    def _app(self, app_id: str) -> dict[str, Any]:
        app = self.flash.apps[app_id]
        return {
            "id": app.id,
            "name": app.name,
            "createdAt": app.createdAt,
            "flashEnvironments": [self._environment(e) for e in self.flash.environments_of(app_id)],
            "flashBuilds": [_build(b) for b in self.flash.builds_of(app_id)],
        }


def _build(build: FlashBuild) -> dict[str, Any]:
    return {
        "id": build.id,
        "flashAppId": build.flashAppId,
        "objectKey": build.objectKey,
        "createdAt": build.createdAt,
        "manifest": build.manifest,
        "resourceSpec": build.manifest,
    }


def _gpu_type(model: GpuModel) -> dict[str, Any]:
    def lowest_price(info: _Info, input: dict[str, Any] | None = None) -> dict[str, Any]:
        count = max(1, (input or {}).get("gpuCount") or 1)
        return {
            "minimumBidPrice": round(model.community_price * count, 4),
            "uninterruptablePrice": round(model.secure_price * count, 4),
            "stockStatus": "High",
        }

    return {
        "id": model.id,
        "displayName": model.display_name,
        "manufacturer": "Nvidia",
        "memoryInGb": model.memory_gb,
        "secureCloud": True,
        "communityCloud": True,
        "securePrice": model.secure_price,
        "communityPrice": model.community_price,
        "maxGpuCount": 8,
        "lowestPrice": lowest_price,
    }


def _cpu_flavor(flavor_id: str) -> dict[str, Any]:
    flavor = cpu_flavor(flavor_id)
    assert flavor is not None

    def specifics(info: _Info, input: dict[str, Any] | None = None) -> dict[str, Any] | None:
        instance_id = (input or {}).get(
            "instanceId"
        ) or f"{flavor.id}-2-{2 * flavor.ram_multiplier}"
        found = cpu_instance(instance_id)
        if found is None or found[0].id != flavor.id:
            return None
        price = round(flavor.vcpu_price * found[1], 4)
        return {"stockStatus": "High", "securePrice": price, "slsPrice": price}

    return {
        "id": flavor.id,
        "groupId": flavor.group_name,
        "groupName": flavor.group_name,
        "displayName": flavor.display_name,
        "minVcpu": flavor.min_vcpu,
        "maxVcpu": flavor.max_vcpu,
        "vcpuBurstable": False,
        "ramMultiplier": flavor.ram_multiplier,
        "diskLimitPerVcpu": 10,
        "specifics": specifics,
    }
