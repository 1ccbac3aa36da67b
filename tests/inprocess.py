"""The engine in this process against a real local cloud: deploy and invoke, as the CLI would."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from engine.envs import EnvCache
from engine.home import Home
from engine.localcloud.provider import LocalCloudProvider
from engine.operation_results import OpEvent
from engine.operations import Engine


def deploy(project: Path, home: Home, cache: EnvCache | None = None) -> tuple[Any, list[OpEvent]]:
    """Deploy `project` to the local cloud of `home` (started on demand): its report and events."""
    events: list[OpEvent] = []

    async def main() -> Any:
        async with Engine(project, LocalCloudProvider(home), env_cache=cache) as engine:
            return await engine.deploy(on_event=events.append)

    return asyncio.run(main()), events


def invoke(project: Path, home: Home, target: str, payload: Any = None) -> Any:
    """Invoke `target` (a function or route) of the deployed `project`: the InvokeResult."""

    async def main() -> Any:
        async with Engine(project, LocalCloudProvider(home, start=False)) as engine:
            return await engine.invoke(target, {} if payload is None else payload)

    return asyncio.run(main())
