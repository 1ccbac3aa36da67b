"""The newer `Endpoint` API (runpod_flash): one object per endpoint.

Used as a decorator (queue-based) or through its route decorators `.get/.post/...`
(load-balanced)."""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import Enum
from typing import Any

from runtime.enums import CudaVersion, ServerlessScalerType
from runtime.remote import HTTP_METHODS, remote
from runtime.resources import IMAGE_FIELDS, ServerlessResource, resource_class

DEFAULT_WORKERS = (0, 1)

_CLASS_BY_KIND: dict[tuple[bool, bool, bool], str] = {
    # (load_balanced, cpu, live) -> class
    (True, True, True): "CpuLiveLoadBalancer",
    (True, True, False): "CpuLoadBalancerSlsResource",
    (True, False, True): "LiveLoadBalancer",
    (True, False, False): "LoadBalancerSlsResource",
    (False, True, True): "CpuLiveServerless",
    (False, True, False): "CpuServerlessEndpoint",
    (False, False, True): "LiveServerless",
    (False, False, False): "ServerlessEndpoint",
}


def _names(value: Any) -> list[Any]:
    items = value if isinstance(value, (list, tuple)) else [value]
    return [item.name if isinstance(item, Enum) else item for item in items]


def _workers(value: Any) -> tuple[int, int]:
    if value is None:
        return DEFAULT_WORKERS
    if isinstance(value, int) and not isinstance(value, bool):
        low, high = 0, value
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = value
    else:
        raise ValueError(f"workers must be an int or a (min, max) pair, got {value!r}")
    if not isinstance(low, int) or not isinstance(high, int) or low < 0 or high < 0 or low > high:
        raise ValueError(f"workers must be non-negative with min <= max, got {value!r}")
    return low, high


def endpoint_resource(
    kwargs: dict[str, Any], *, load_balanced: bool, live: bool = False
) -> tuple[str, dict[str, Any]]:
    """Map `Endpoint(...)` keyword arguments onto (resource class name, resource config).

    Pure: the scanner calls it with statically evaluated values, where enum members arrive as
    member-name strings.
    """
    if kwargs.get("gpu") is not None and kwargs.get("cpu") is not None:
        raise ValueError("Endpoint takes gpu= or cpu=, not both")
    max_concurrency = kwargs.get("max_concurrency", 1)
    if isinstance(max_concurrency, int) and max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    cpu = kwargs.get("cpu") is not None
    type_name = _CLASS_BY_KIND[(load_balanced, cpu, live)]
    low, high = _workers(kwargs.get("workers"))
    config: dict[str, Any] = {"workersMin": low, "workersMax": high}
    if kwargs.get("name") is not None:
        config["name"] = kwargs["name"]
    simple = {
        "idle_timeout": "idleTimeout",
        "execution_timeout_ms": "executionTimeoutMs",
        "flashboot": "flashboot",
        "scaler_value": "scalerValue",
        "env": "env",
        "image": "imageName",
        "template": "template",
    }
    config["idleTimeout"] = kwargs.get("idle_timeout", 60)
    for arg, field in simple.items():
        if kwargs.get(arg) is not None:
            config[field] = kwargs[arg]
    if kwargs.get("datacenter") is not None:
        datacenter = kwargs["datacenter"]
        # 0.20.0 models take one data center; a list means "any of these": keep the first.
        config["datacenter"] = _names(datacenter)[0]
    scaler = kwargs.get("scaler_type")
    if scaler is None:
        scaler = "REQUEST_COUNT" if load_balanced else "QUEUE_DELAY"
    config["scalerType"] = ServerlessScalerType(_names(scaler)[0]).name
    if cpu:
        config["instanceIds"] = _names(kwargs["cpu"])
    else:
        config["gpus"] = _names(kwargs["gpu"]) if kwargs.get("gpu") is not None else ["ANY"]
        if kwargs.get("gpu_count") is not None:
            config["gpuCount"] = kwargs["gpu_count"]
        if kwargs.get("min_cuda_version") is not None:
            minimum = CudaVersion(_names(kwargs["min_cuda_version"])[0])
            ordered = list(CudaVersion)
            config["cudaVersions"] = [v.name for v in ordered[ordered.index(minimum) :]]
    volume = kwargs.get("volume")
    if volume is not None:
        config["networkVolume"] = volume[0] if isinstance(volume, (list, tuple)) else volume
    if not live and not any(config.get(field) for field in IMAGE_FIELDS):
        # Built code runs on Flash's runtime image; the non-live classes must name it.
        config["imageName"] = resource_class(_CLASS_BY_KIND[(load_balanced, cpu, True)]).live_image
    return type_name, config


def _live_by_environment() -> bool:
    if os.environ.get("RUNPOD_ENDPOINT_ID") or os.environ.get("RUNPOD_POD_ID"):
        return True
    return os.environ.get("FLASH_IS_LIVE_PROVISIONING", "").lower() != "false"


class Endpoint:
    """An endpoint declared in code: `@Endpoint(name=..., gpu=...)` or `api = Endpoint(...)`."""

    def __init__(self, name: str | None = None, **kwargs: Any) -> None:
        self.name = name
        self._kwargs = {"name": name, **kwargs}
        self._dependencies = list(kwargs.get("dependencies") or [])
        self._system_dependencies = list(kwargs.get("system_dependencies") or [])
        self._accelerate = bool(kwargs.get("accelerate_downloads", True))
        # Validate eagerly so a bad Endpoint fails where it is written, not at first call.
        endpoint_resource(self._kwargs, load_balanced=False)
        self._routes: dict[tuple[str, str], Callable[..., Any]] = {}
        self._decorated = False
        self._resource: ServerlessResource | None = None

    @property
    def is_load_balanced(self) -> bool:
        """True once a route has been declared."""
        return bool(self._routes)

    def resource_config(self, *, load_balanced: bool | None = None) -> ServerlessResource:
        """The resource config object this endpoint maps to (built once)."""
        if self._resource is None:
            lb = self.is_load_balanced if load_balanced is None else load_balanced
            type_name, config = endpoint_resource(
                self._kwargs, load_balanced=lb, live=_live_by_environment()
            )
            self._resource = resource_class(type_name).model_validate(config)
        return self._resource

    def __call__(self, target: Any) -> Any:
        if self._routes:
            raise TypeError(
                f"Endpoint {self.name!r} has routes; it cannot also decorate a function"
            )
        if self.name is None:
            self.name = target.__name__
            self._kwargs["name"] = self.name
        self._decorated = True
        resource = self.resource_config(load_balanced=False)
        return remote(
            resource,
            dependencies=self._dependencies,
            system_dependencies=self._system_dependencies,
            accelerate_downloads=self._accelerate,
        )(target)

    def _route(self, method: str, path: str) -> Callable[[Any], Any]:
        if self._decorated:
            raise TypeError(f"Endpoint {self.name!r} decorates a function; it cannot have routes")
        if not self.name:
            raise ValueError("an Endpoint with routes needs a name")
        method = method.upper()
        if method not in HTTP_METHODS:
            raise ValueError(f"method {method!r} is not one of {', '.join(sorted(HTTP_METHODS))}")
        if (method, path) in self._routes:
            raise ValueError(f"duplicate route {method} {path} on Endpoint {self.name!r}")
        resource = self.resource_config(load_balanced=True)

        def decorate(target: Any) -> Any:
            wrapped = remote(
                resource,
                dependencies=self._dependencies,
                system_dependencies=self._system_dependencies,
                accelerate_downloads=self._accelerate,
                method=method,
                path=path,
            )(target)
            self._routes[(method, path)] = wrapped
            return wrapped

        return decorate

    def get(self, path: str) -> Callable[[Any], Any]:
        """Declare a GET route."""
        return self._route("GET", path)

    def post(self, path: str) -> Callable[[Any], Any]:
        """Declare a POST route."""
        return self._route("POST", path)

    def put(self, path: str) -> Callable[[Any], Any]:
        """Declare a PUT route."""
        return self._route("PUT", path)

    def delete(self, path: str) -> Callable[[Any], Any]:
        """Declare a DELETE route."""
        return self._route("DELETE", path)

    def patch(self, path: str) -> Callable[[Any], Any]:
        """Declare a PATCH route."""
        return self._route("PATCH", path)
