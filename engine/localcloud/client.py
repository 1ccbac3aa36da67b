"""Async client of the local cloud API (httpx over `transport.LoopbackTransport`), used by the
local provider and the tests.

Every answer is parsed into its model in `wire.py` (the one the service builds it with); a
malformed answer is a `CloudError`, like an unreachable service.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from engine.localcloud.discovery import CloudError, CloudInfo, CloudUnreachable
from engine.localcloud.transport import LoopbackTransport
from engine.localcloud.wire import (
    AppList,
    AppRecord,
    BuildList,
    BuildRecord,
    CancelReply,
    DeployEvent,
    DeployRequest,
    EndpointKey,
    EndpointList,
    EndpointRecord,
    EnvironmentList,
    EnvironmentRecord,
    EventList,
    EventRecord,
    FollowItem,
    LogTail,
    PersistedManifest,
    ServiceHealth,
    UndeployRequest,
    WorkerIsolationList,
    problem,
)
from runtime.control_plane import refusal

__all__ = ["CloudClient"]

_Answer = TypeVar("_Answer", bound=BaseModel)


def _parse(model: type[_Answer], data: Any, what: str) -> _Answer:
    """`data` as `model`; CloudError naming the field when the service sent something else."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CloudError(f"local cloud: unexpected {what}: {problem(exc)}") from None


def _seconds(timeout: httpx.Timeout, exc: httpx.TimeoutException) -> float:
    """The limit that `exc` hit (connect, write, pool or read)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return timeout.connect or 0.0
    if isinstance(exc, httpx.WriteTimeout):
        return timeout.write or 0.0
    if isinstance(exc, httpx.PoolTimeout):
        return timeout.pool or 0.0
    return timeout.read or 0.0


class CloudClient:
    """One connection pool to one running service. Use as `async with CloudClient(info)`."""

    def __init__(self, info: CloudInfo, *, timeout: float = 30.0) -> None:
        self.info = info
        self._http = httpx.AsyncClient(
            base_url=info.url,
            headers=info.headers(),
            timeout=httpx.Timeout(timeout, connect=5.0),
            trust_env=False,
            # Plain HTTP to 127.0.0.1: neither httpcore nor a TLS context (the transport's
            # module says why).
            transport=LoopbackTransport(),
        )

    async def __aenter__(self) -> CloudClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _get(self, model: type[_Answer], path: str, **kwargs: Any) -> _Answer:
        return _parse(model, await self._json("GET", path, **kwargs), f"answer to GET {path}")

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise CloudError(
                f"local cloud at {self.info.describe()}: timed out after "
                f"{_seconds(self._http.timeout, exc):g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise CloudUnreachable(
                f"local cloud unreachable at {self.info.describe()}: {exc}"
            ) from exc
        if response.status_code >= 400:
            raise CloudError(
                f"local cloud: {refusal(response)}",
                status=response.status_code,
            )
        return response.json()

    async def _stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            async with self._http.stream(method, path, timeout=None, **kwargs) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise CloudError(
                        f"local cloud: {refusal(response)}",
                        status=response.status_code,
                    )
                async for line in response.aiter_lines():
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except ValueError as exc:
                            raise CloudError(
                                f"local cloud sent a line that is not JSON: {exc}"
                            ) from exc
        except httpx.HTTPError as exc:
            raise CloudError(f"local cloud connection lost: {exc}") from exc

    async def health(self) -> ServiceHealth:
        """The service's health record."""
        return await self._get(ServiceHealth, "/v1/health")

    async def worker_isolation(self) -> WorkerIsolationList:
        """What each running worker applied (its own word) and what a new one would get."""
        return await self._get(WorkerIsolationList, "/v1/workers/isolation")

    async def apps(self) -> list[AppRecord]:
        """Every app known to the service."""
        return (await self._get(AppList, "/v1/apps")).apps

    async def endpoints(self, app: str) -> list[EndpointRecord]:
        """The app's endpoint records (never keys)."""
        return (await self._get(EndpointList, f"/v1/apps/{app}/endpoints")).endpoints

    async def endpoint(self, app: str, name: str) -> EndpointRecord:
        """One endpoint record."""
        return await self._get(EndpointRecord, f"/v1/apps/{app}/endpoints/{name}")

    async def endpoint_key(self, app: str, name: str) -> str:
        """The endpoint's API key (keep it out of any output)."""
        return (await self._get(EndpointKey, f"/v1/apps/{app}/endpoints/{name}/key")).key

    async def _events(
        self, path: str, body: DeployRequest | UndeployRequest
    ) -> AsyncIterator[DeployEvent]:
        async for item in self._stream("POST", path, json=body.model_dump(mode="json")):
            yield _parse(DeployEvent, item, f"event from POST {path}")

    def deploy(self, app: str, request: DeployRequest) -> AsyncIterator[DeployEvent]:
        """Start a deploy; yields its progress events, the last one of type `result`."""
        return self._events(f"/v1/apps/{app}/deploy", request)

    async def cancel_deploy(self, app: str) -> bool:
        """Ask the app's running deploy to start no more endpoints; False when none runs."""
        answer = await self._json("POST", f"/v1/apps/{app}/deploy/cancel")
        return _parse(CancelReply, answer, "answer to the deploy's cancel").cancelled

    async def restart(self, app: str, name: str) -> AsyncIterator[DeployEvent]:
        """Restart one endpoint's worker; yields its progress events, the last `result`."""
        path = f"/v1/apps/{app}/endpoints/{name}/restart"
        async for item in self._stream("POST", path):
            yield _parse(DeployEvent, item, f"event from POST {path}")

    def undeploy(self, app: str, names: list[str] | None) -> AsyncIterator[DeployEvent]:
        """Remove endpoints (all when `names` is None); yields events, the last `result`."""
        return self._events(f"/v1/apps/{app}/undeploy", UndeployRequest(names=names))

    async def logs(self, app: str, name: str, lines: int = 200) -> list[str]:
        """The last `lines` log lines of an endpoint."""
        path = f"/v1/apps/{app}/endpoints/{name}/logs"
        return (await self._get(LogTail, path, params={"lines": lines})).lines

    async def follow_logs(
        self, app: str, name: str, lines: int = 50, marks: bool = False
    ) -> AsyncIterator[str | float]:
        """The last `lines` lines, then every new line as it is written (until cancelled);
        with `marks`, also a float T after the history and after each read: every line written
        before T (epoch seconds) has been given."""
        path = f"/v1/apps/{app}/endpoints/{name}/logs/follow"
        params: dict[str, Any] = {"lines": lines, "marks": marks}
        async for raw in self._stream("GET", path, params=params):
            item = _parse(FollowItem, raw, f"line from GET {path}")
            if item.line is not None:
                yield item.line
            elif marks and item.upto is not None:
                yield item.upto

    async def events(self, app: str, since: int = 0) -> list[EventRecord]:
        """The app's event log after event id `since`, oldest first."""
        path = f"/v1/apps/{app}/events"
        return (await self._get(EventList, path, params={"since": since})).events

    async def builds(self, app: str) -> list[BuildRecord]:
        """The app's immutable build copies, newest first."""
        return (await self._get(BuildList, f"/v1/apps/{app}/builds")).builds

    async def environments(self, app: str) -> list[EnvironmentRecord]:
        """The app's environments, each with its mothership (None: none)."""
        return (await self._get(EnvironmentList, f"/v1/apps/{app}/environments")).environments

    async def get_manifest(self, app: str, environment: str) -> PersistedManifest:
        """State manager: the persisted manifest."""
        return await self._get(
            PersistedManifest, f"/v1/apps/{app}/environments/{environment}/manifest"
        )

    async def put_manifest(self, app: str, environment: str, manifest: PersistedManifest) -> None:
        """State manager: replace the persisted manifest."""
        await self._json(
            "PUT",
            f"/v1/apps/{app}/environments/{environment}/manifest",
            json=manifest.model_dump(mode="json", exclude_unset=True),
        )
