"""A `@remote` class owned by another endpoint: instances whose method calls are class jobs.

Inside the worker that owns a class, and wherever no service registry is configured (plain
`python main.py`), the decorator leaves the class as it is. Elsewhere (a worker of another
endpoint of the app) it becomes a `RemoteClass`: calling it records the constructor arguments
without running anything, and each public method of the instance becomes an awaitable that runs
on the owner's queue. The owner keeps one instance per proxy (`instance_id`), so state set by one
call is there for the next, as with a local object.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["RemoteClass", "RemoteInstance"]


class RemoteClass:
    """Stands in for `cls`, which runs on the endpoint `resource_name`."""

    def __init__(self, cls: type, resource_name: str, remote_config: Mapping[str, Any]) -> None:
        functools.update_wrapper(self, cls, updated=())  # __name__, __doc__, __wrapped__, ...
        self.resource_name = resource_name
        self.__remote_config__ = remote_config

    def __call__(self, *args: Any, **kwargs: Any) -> RemoteInstance:
        return RemoteInstance(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<remote class {self.__wrapped__.__qualname__} on {self.resource_name}>"


class RemoteInstance:
    """An instance living on the class's endpoint; `await obj.method(...)` runs it there."""

    def __init__(self, owner: RemoteClass, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._owner = owner
        self._constructor = (args, kwargs)
        self._instance_id = f"{owner.__wrapped__.__name__}_{uuid.uuid4().hex[:8]}"
        self._created = False

    def __getattr__(self, name: str) -> Callable[..., Any]:
        cls = self._owner.__wrapped__
        if name.startswith("_") or not callable(getattr(cls, name, None)):
            raise AttributeError(f"{cls.__name__} has no public method {name!r}")

        async def call(*args: Any, **kwargs: Any) -> Any:
            from runtime import calls

            result = await calls.call_class_method(
                cls,
                self._owner.resource_name,
                self._constructor,
                name,
                args,
                kwargs,
                instance_id=self._instance_id,
                create_new_instance=not self._created,
            )
            self._created = True
            return result

        call.__name__ = call.__qualname__ = name
        return call

    def __repr__(self) -> str:
        return f"<remote {self._owner.__wrapped__.__qualname__} instance {self._instance_id}>"
