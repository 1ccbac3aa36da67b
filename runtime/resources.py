"""Resource config models: the serverless endpoint classes users write in their Flash code.

Field names are the upstream (camelCase) API names so existing projects keep working. The models
only describe configuration; deploying them is the engine's job.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime.confighash import (
    canonical_model_config,
    model_config_hash,
)
from runtime.enums import (
    CpuInstanceType,
    CudaVersion,
    DataCenter,
    GpuGroup,
    GpuType,
    ServerlessScalerType,
    ServerlessType,
)
from runtime.resourcekinds import (
    IMAGE_FIELDS as IMAGE_FIELDS,  # re-exported: the SDK's names stay where they were
)
from runtime.resourcekinds import (
    LIVE_COUNTERPART as LIVE_COUNTERPART,
)
from runtime.resourcekinds import (
    RESOURCE_TYPES,
    ResourceKind,
)
from runtime.resourcekinds import (
    missing_image_message as missing_image_message,
)
from runtime.resourcekinds import (
    needs_image as needs_image,
)

_IMAGE_TAG = os.environ.get("TETRA_IMAGE_TAG", "latest")


class BaseResource(BaseModel):
    """Common base: accepts field names as written by users, keeps unknown keys out."""

    model_config = ConfigDict(
        populate_by_name=True, validate_default=True, validate_assignment=False, extra="ignore"
    )

    id: str | None = None


class PodTemplate(BaseResource):
    """An inline RunPod template sent with `saveEndpoint`."""

    advancedStart: bool = False
    config: dict[str, Any] = Field(default_factory=dict)
    containerDiskInGb: int = 64
    containerRegistryAuthId: str = ""
    dockerArgs: str = ""
    env: list[dict[str, str]] = Field(default_factory=list)
    imageName: str = ""
    name: str = ""
    ports: str = ""
    startScript: str = ""


class NetworkVolume(BaseResource):
    """A persistent network volume attached to an endpoint."""

    name: str
    size: int = 100
    dataCenterId: DataCenter = DataCenter.EU_RO_1

    @field_validator("size")
    @classmethod
    def _positive_size(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"size must be > 0 GB, got {value}")
        return value


class ServerlessResource(BaseResource):
    """A serverless endpoint (GPU by default, queue-based by default)."""

    name: str
    # input-only fields (upstream never sends them as-is)
    cudaVersions: list[CudaVersion] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    flashboot: bool = True
    gpus: list[GpuGroup | GpuType] | None = Field(default_factory=lambda: [GpuGroup.ANY])
    imageName: str = ""
    networkVolume: NetworkVolume | None = None
    datacenter: DataCenter = DataCenter.EU_RO_1
    # fields sent to the API
    executionTimeoutMs: int = 0
    gpuCount: int = 1
    idleTimeout: int = 5
    locations: str | None = None
    networkVolumeId: str | None = None
    scalerType: ServerlessScalerType = ServerlessScalerType.QUEUE_DELAY
    scalerValue: int = 4
    templateId: str | None = None
    type: ServerlessType = ServerlessType.QB
    workersMax: int = 3
    workersMin: int = 0
    workersPFBTarget: int = 0
    # assigned by the API
    activeBuildid: str | None = None
    aiKey: str | None = None
    allowedCudaVersions: str = ""
    computeType: str | None = None
    createdAt: str | None = None
    gpuIds: str = ""
    hubRelease: str | None = None
    repo: str | None = None
    template: PodTemplate | None = None
    userId: str | None = None

    is_cpu: ClassVar[bool] = False
    is_live: ClassVar[bool] = False
    is_load_balanced: ClassVar[bool] = False
    # Upstream's endpoint classes refuse a config that names no image to run (see needs_image).
    requires_image: ClassVar[bool] = False

    @field_validator("env", mode="before")
    @classmethod
    def _env_as_strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): "" if v is None else str(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check_and_derive(self) -> ServerlessResource:
        if not self.name or not self.name.strip():
            raise ValueError("name must not be empty")
        for field in (
            "workersMin",
            "workersMax",
            "idleTimeout",
            "executionTimeoutMs",
            "scalerValue",
        ):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")
        if self.workersMin > self.workersMax:
            raise ValueError(
                f"workersMin ({self.workersMin}) must not exceed workersMax ({self.workersMax})"
            )
        if self.networkVolume is not None and self.networkVolume.dataCenterId != self.datacenter:
            raise ValueError(
                f"networkVolume {self.networkVolume.name!r} is in "
                f"{self.networkVolume.dataCenterId.value}, the endpoint in {self.datacenter.value}"
            )
        if self.requires_image and not (self.imageName or self.template or self.templateId):
            raise ValueError(missing_image_message(self.resource_type, self.name))
        # Derived API fields are filled only when empty, so re-validation is idempotent.
        if not self.locations:
            self.locations = self.datacenter.value
        if self.networkVolume is not None and self.networkVolume.id and not self.networkVolumeId:
            self.networkVolumeId = self.networkVolume.id
        if not self.is_cpu:
            if not self.gpuIds and self.gpus:
                self.gpuIds = ",".join(g.value for g in GpuGroup.expand(self.gpus))
            if not self.allowedCudaVersions and self.cudaVersions:
                self.allowedCudaVersions = ",".join(v.value for v in self.cudaVersions)
        return self

    @property
    def resource_type(self) -> str:
        """The class name, as written in manifests."""
        return type(self).__name__

    @property
    def config_hash(self) -> str:
        """SHA-256 of the canonical user config (see `runtime.confighash`)."""
        return model_config_hash(type(self), self.user_config(), is_cpu=self.is_cpu)

    def user_config(self) -> dict[str, Any]:
        """The fields the user set, as given (enums kept as enum members)."""
        return {name: getattr(self, name) for name in self.model_fields_set}

    def __str__(self) -> str:
        return f"{self.resource_type}:{self.name}"


class ServerlessEndpoint(ServerlessResource):
    """A queue-based GPU endpoint running a custom image."""

    requires_image: ClassVar[bool] = True


class _CpuMixin(BaseModel):
    """CPU endpoints pick instance types instead of GPUs."""

    instanceIds: list[CpuInstanceType] = Field(default_factory=lambda: [CpuInstanceType.ANY])

    is_cpu: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _no_gpus(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            data.setdefault("gpus", None)
            data["gpuCount"] = 0
        return data


class CpuServerlessEndpoint(_CpuMixin, ServerlessEndpoint):
    """A queue-based CPU endpoint running a custom image."""


class _LiveMixin(BaseModel):
    """Live classes run Flash's own runtime image; the image is not the user's to choose."""

    is_live: ClassVar[bool] = True
    live_image: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _lock_image(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            data["imageName"] = cls.live_image
        return data


class LiveServerless(_LiveMixin, ServerlessEndpoint):
    """A queue-based GPU endpoint on the Flash runtime image (functions shipped as code)."""

    live_image: ClassVar[str] = os.environ.get("TETRA_GPU_IMAGE", f"runpod/tetra-rp:{_IMAGE_TAG}")


class CpuLiveServerless(_LiveMixin, CpuServerlessEndpoint):
    """A queue-based CPU endpoint on the Flash runtime image."""

    live_image: ClassVar[str] = os.environ.get(
        "TETRA_CPU_IMAGE", f"runpod/tetra-rp-cpu:{_IMAGE_TAG}"
    )


class LoadBalancerSlsResource(ServerlessResource):
    """A load-balanced endpoint: serves HTTP routes directly."""

    is_load_balanced: ClassVar[bool] = True
    requires_image: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _force_lb(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            given = data.get("type")
            if given is not None and ServerlessType(given) is not ServerlessType.LB:
                raise ValueError(f"{cls.__name__} is load-balanced; type must be LB, got {given}")
            data["type"] = ServerlessType.LB
            data.setdefault("scalerType", ServerlessScalerType.REQUEST_COUNT)
        return data

    @model_validator(mode="after")
    def _request_count_scaler(self) -> LoadBalancerSlsResource:
        if self.scalerType is not ServerlessScalerType.REQUEST_COUNT:
            raise ValueError(
                f"{type(self).__name__} needs scalerType REQUEST_COUNT, got {self.scalerType.value}"
            )
        return self


class CpuLoadBalancerSlsResource(_CpuMixin, LoadBalancerSlsResource):
    """A load-balanced CPU endpoint."""


class LiveLoadBalancer(_LiveMixin, LoadBalancerSlsResource):
    """A load-balanced GPU endpoint on the Flash runtime image; also serves `/execute`."""

    live_image: ClassVar[str] = os.environ.get("TETRA_LB_IMAGE", f"runpod/tetra-rp-lb:{_IMAGE_TAG}")


class CpuLiveLoadBalancer(_LiveMixin, CpuLoadBalancerSlsResource):
    """A load-balanced CPU endpoint on the Flash runtime image; also serves `/execute`."""

    live_image: ClassVar[str] = os.environ.get(
        "TETRA_CPU_LB_IMAGE", f"runpod/tetra-rp-lb-cpu:{_IMAGE_TAG}"
    )


_CLASSES: tuple[type[ServerlessResource], ...] = (
    LiveServerless,
    CpuLiveServerless,
    ServerlessEndpoint,
    CpuServerlessEndpoint,
    LoadBalancerSlsResource,
    LiveLoadBalancer,
    CpuLoadBalancerSlsResource,
    CpuLiveLoadBalancer,
)


def _check_kinds() -> None:
    # runtime.resourcekinds restates these flags so the scanner needs no models: keep it honest.
    actual = {
        cls.__name__: ResourceKind(cls.__name__, cls.is_load_balanced, cls.is_live, cls.is_cpu)
        for cls in _CLASSES
    }
    if actual != RESOURCE_TYPES:
        raise ImportError(f"runtime.resourcekinds is out of date with runtime.resources: {actual}")


_check_kinds()


def resource_class(type_name: str) -> type[ServerlessResource]:
    """The model class for a resource type name; `KeyError` names the known ones."""
    for cls in _CLASSES:
        if cls.__name__ == type_name:
            return cls
    raise KeyError(f"unknown resource type {type_name!r}; known: {', '.join(RESOURCE_TYPES)}")


def canonical_config(resource_type: str, config: dict[str, Any]) -> dict[str, Any]:
    """The canonical user config of a `resource_type` config (`runtime.confighash`).

    Raises `ValueError` naming the field when the config is invalid, `KeyError` for an unknown
    resource type.
    """
    cls = resource_class(resource_type)
    return canonical_model_config(cls, config, is_cpu=cls.is_cpu)


def config_hash(resource_type: str, config: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a `resource_type` config (class name included)."""
    cls = resource_class(resource_type)
    return model_config_hash(cls, config, is_cpu=cls.is_cpu)
