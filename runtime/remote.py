"""The `@remote` decorator: marks a function or class as running on a serverless endpoint."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from runtime.remote_class import RemoteClass

if TYPE_CHECKING:
    from runtime.resources import ServerlessResource

log = logging.getLogger(__name__)

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH"})
RESERVED_PATHS = frozenset({"/execute", "/ping", "/manifest"})

T = TypeVar("T")


def validate_route(
    resource: ServerlessResource, method: str | None, path: str | None
) -> str | None:
    """Check the HTTP routing of a load-balanced function; return the normalised method."""
    if not resource.is_load_balanced:
        if method or path:
            log.warning(
                "%s %r is queue-based; method/path are ignored",
                resource.resource_type,
                resource.name,
            )
        return None
    if not method or not path:
        raise ValueError(
            f"{resource.resource_type} endpoint {resource.name!r} needs both method and path "
            f"(got method={method!r}, path={path!r})"
        )
    normalised = method.upper()
    if normalised not in HTTP_METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(sorted(HTTP_METHODS))}")
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} must start with '/'")
    if path in RESERVED_PATHS:
        raise ValueError(f"path {path} is reserved ({', '.join(sorted(RESERVED_PATHS))})")
    return normalised


def remote(
    resource_config: ServerlessResource,
    dependencies: list[str] | None = None,
    system_dependencies: list[str] | None = None,
    accelerate_downloads: bool = True,
    local: bool = False,
    method: str | None = None,
    path: str | None = None,
    **extra: Any,
) -> Callable[[T], T]:
    """Run the decorated function or class on the endpoint described by `resource_config`.

    A decorated function becomes awaitable (as upstream): calling it runs it in this process when
    it belongs here, or on its endpoint otherwise (see `runtime.calls`). A decorated class stays
    the class itself, except in a worker of another endpoint, where it is a `RemoteClass` whose
    instances run there. Either way `__remote_config__` carries the routing metadata.
    """
    # Imported here so the engine can read HTTP_METHODS without the resource models.
    from runtime.resources import ServerlessResource

    if not isinstance(resource_config, ServerlessResource):
        raise TypeError(
            f"@remote needs a resource config (e.g. LiveServerless(...)), "
            f"got {type(resource_config).__name__}"
        )
    normalised = validate_route(resource_config, method, path)
    metadata = {
        "resource_config": resource_config,
        "resource_name": resource_config.name,
        "method": normalised,
        "path": path if normalised else None,
        "dependencies": list(dependencies or []),
        "system_dependencies": list(system_dependencies or []),
        "accelerate_downloads": accelerate_downloads,
        **extra,
    }

    def decorate(target: Any) -> Any:
        if inspect.isclass(target) and not local and _runs_elsewhere(resource_config.name):
            return RemoteClass(target, resource_config.name, metadata)
        if inspect.isclass(target) or local:
            target.__remote_config__ = metadata
            return target

        @functools.wraps(target)
        async def call_remote(*args: Any, **kwargs: Any) -> Any:
            from runtime import calls

            return await calls.dispatch(target, resource_config.name, args, kwargs)

        call_remote.__remote_config__ = metadata  # type: ignore[attr-defined]
        return call_remote

    return decorate


def _runs_elsewhere(resource_name: str) -> bool:
    """True in a worker of the app that does not serve `resource_name`."""
    from runtime import calls

    registry = calls.get_registry()
    return registry is not None and not registry.is_local(resource_name)
