"""Async client of the local cloud API (httpx), used by the local provider and the tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from engine.localcloud.discovery import CloudError, CloudInfo
from engine.localcloud.wire import DeployEvent, DeployRequest, EndpointRecord, UndeployRequest

__all__ = ["CloudClient"]


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])
    return str(data)[:300]


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
        )

    async def __aenter__(self) -> CloudClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise CloudError(
                f"local cloud at {self.info.describe()}: timed out after "
                f"{_seconds(self._http.timeout, exc):g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise CloudError(f"local cloud unreachable at {self.info.describe()}: {exc}") from exc
        if response.status_code >= 400:
            raise CloudError(f"local cloud: {_detail(response)} (HTTP {response.status_code})")
        return response.json()

    async def _stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            async with self._http.stream(method, path, timeout=None, **kwargs) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise CloudError(
                        f"local cloud: {_detail(response)} (HTTP {response.status_code})"
                    )
                async for line in response.aiter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise CloudError(f"local cloud connection lost: {exc}") from exc

    async def health(self) -> dict[str, Any]:
        """The service's health record."""
        return await self._json("GET", "/v1/health")

    async def apps(self) -> list[dict[str, Any]]:
        """Every app known to the service."""
        return (await self._json("GET", "/v1/apps"))["apps"]

    async def endpoints(self, app: str) -> list[EndpointRecord]:
        """The app's endpoint records (never keys)."""
        records = (await self._json("GET", f"/v1/apps/{app}/endpoints"))["endpoints"]
        return [EndpointRecord.model_validate(r) for r in records]

    async def endpoint(self, app: str, name: str) -> EndpointRecord:
        """One endpoint record."""
        return EndpointRecord.model_validate(
            await self._json("GET", f"/v1/apps/{app}/endpoints/{name}")
        )

    async def endpoint_key(self, app: str, name: str) -> str:
        """The endpoint's API key (keep it out of any output)."""
        return str((await self._json("GET", f"/v1/apps/{app}/endpoints/{name}/key"))["key"])

    async def _events(
        self, path: str, body: DeployRequest | UndeployRequest
    ) -> AsyncIterator[DeployEvent]:
        async for item in self._stream("POST", path, json=body.model_dump(mode="json")):
            yield DeployEvent.model_validate(item)

    def deploy(self, app: str, request: DeployRequest) -> AsyncIterator[DeployEvent]:
        """Start a deploy; yields its progress events, the last one of type `result`."""
        return self._events(f"/v1/apps/{app}/deploy", request)

    def undeploy(self, app: str, names: list[str] | None) -> AsyncIterator[DeployEvent]:
        """Remove endpoints (all when `names` is None); yields events, the last `result`."""
        return self._events(f"/v1/apps/{app}/undeploy", UndeployRequest(names=names))

    async def logs(self, app: str, name: str, lines: int = 200) -> list[str]:
        """The last `lines` log lines of an endpoint."""
        data = await self._json(
            "GET", f"/v1/apps/{app}/endpoints/{name}/logs", params={"lines": lines}
        )
        return list(data["lines"])

    async def follow_logs(
        self, app: str, name: str, lines: int = 50, marks: bool = False
    ) -> AsyncIterator[str | float]:
        """The last `lines` lines, then every new line as it is written (until cancelled);
        with `marks`, also a float T after the history and after each read: every line written
        before T (epoch seconds) has been given."""
        params: dict[str, Any] = {"lines": lines, "marks": marks}
        async for item in self._stream(
            "GET", f"/v1/apps/{app}/endpoints/{name}/logs/follow", params=params
        ):
            if "line" in item:
                yield str(item["line"])
            elif marks and "upto" in item:
                yield float(item["upto"])

    async def events(self, app: str, since: int = 0) -> list[dict[str, Any]]:
        """The app's event log after event id `since`."""
        return (await self._json("GET", f"/v1/apps/{app}/events", params={"since": since}))[
            "events"
        ]

    async def get_manifest(self, app: str, environment: str) -> dict[str, Any]:
        """State manager: the persisted manifest."""
        return await self._json("GET", f"/v1/apps/{app}/environments/{environment}/manifest")

    async def put_manifest(self, app: str, environment: str, manifest: dict[str, Any]) -> None:
        """State manager: replace the persisted manifest."""
        await self._json(
            "PUT", f"/v1/apps/{app}/environments/{environment}/manifest", json=manifest
        )
