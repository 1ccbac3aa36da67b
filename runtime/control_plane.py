"""The control plane a mothership provisions its children through, and the local cloud's.

`ControlPlane` is what the mothership needs from a target: the state manager (the environment's
persisted manifest: read it, merge or drop one resource's entry) and endpoints (deploy from the
build it runs, delete, read a child's key). `LocalControlPlane` speaks the local cloud's HTTP
API with a credential scoped to one app and environment (`FLASH_STATE_URL`,
`FLASH_STATE_TOKEN`, `FLASH_APP_NAME`, `FLASH_ENV`): it can manage that app's endpoints and that
environment's manifest, nothing else, and it is never the service's own token.

A failure that may pass (connection refused, a timeout, a 5xx) is `PlaneUnavailable`, which the
mothership retries with backoff; a refusal (4xx) is `PlaneError`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

__all__ = [
    "ControlPlane",
    "DeployProgress",
    "LocalControlPlane",
    "PlaneError",
    "PlaneUnavailable",
    "refusal",
]


class PlaneError(Exception):
    """The control plane refused a request (the message names it, never a credential)."""


class PlaneUnavailable(PlaneError):
    """The control plane could not be reached or failed on its side: worth retrying."""


@dataclass(frozen=True)
class DeployProgress:
    """One endpoint's outcome as a deploy reports it: `healthy`, `error`, `unchanged`, or
    `saved` (RunPod: created or updated, its health not awaited)."""

    name: str
    state: str
    url: str | None = None
    error: str | None = None


OnProgress = Callable[[DeployProgress], Awaitable[None]]


class ControlPlane(Protocol):
    """What a mothership needs from its target."""

    async def read_state(self, *, fresh: bool = True) -> dict[str, dict[str, Any]]:
        """The persisted manifest's resources (empty when nothing was persisted yet);
        `fresh=False` allows the plane's own copy when it keeps one."""
        ...

    async def write_states(self, changes: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Merge each resource's fields into its persisted entry (None removes the entry)."""
        ...

    async def deploy(
        self, specs: Sequence[Mapping[str, Any]], on_progress: OnProgress
    ) -> list[DeployProgress]:
        """Create or update the endpoints of `specs` from the running build: each reported
        `healthy` or `error` (local cloud), or `saved` for `await_ready` to follow (RunPod)."""
        ...

    async def await_ready(self, names: Sequence[str], on_progress: OnProgress) -> None:
        """Report each named endpoint `healthy` once it is up, or `error` with why not."""
        ...

    async def delete(self, names: Sequence[str]) -> list[DeployProgress]:
        """Stop and remove endpoints."""
        ...

    async def endpoint_key(self, name: str) -> str | None:
        """The key callers of endpoint `name` need (None when it has none)."""
        ...

    async def endpoint_statuses(self) -> dict[str, str]:
        """Each endpoint the target runs for the app, with its status (`healthy`, ...)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def refusal(response: httpx.Response) -> str:
    """What the local cloud's API said when it refused a request, `why (HTTP status)`: its
    `detail`, else the start of the body, else the HTTP reason."""
    return f"{_detail(response)} (HTTP {response.status_code})"


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])
    return str(data)[:300]


class LocalControlPlane:
    """The local cloud's API, with a credential scoped to one app and environment."""

    def __init__(
        self, base_url: str, token: str, app: str, environment: str, build_id: str
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.app = app
        self.environment = environment
        self.build_id = build_id
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30.0, connect=3.0),
            trust_env=False,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], build_id: str) -> LocalControlPlane:
        """The plane the local cloud described in the worker's environment; ValueError names
        a missing variable."""
        values = {}
        for name in ("FLASH_STATE_URL", "FLASH_STATE_TOKEN", "FLASH_APP_NAME", "FLASH_ENV"):
            value = environ.get(name, "").strip()
            if not value:
                raise ValueError(f"{name} is not set: this mothership has no control plane")
            values[name] = value
        return cls(
            values["FLASH_STATE_URL"],
            values["FLASH_STATE_TOKEN"],
            values["FLASH_APP_NAME"],
            values["FLASH_ENV"],
            build_id,
        )

    def _manifest_path(self, suffix: str = "") -> str:
        return f"/v1/apps/{self.app}/environments/{self.environment}/manifest{suffix}"

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise PlaneUnavailable(
                f"local cloud unreachable at {self.base_url}: {type(exc).__name__}: {exc}"
            ) from None
        if response.status_code >= 500:
            raise PlaneUnavailable(f"local cloud failed: {refusal(response)}")
        return response

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code >= 400:
            raise PlaneError(f"{what}: {refusal(response)}")

    async def read_state(self, *, fresh: bool = True) -> dict[str, dict[str, Any]]:
        """The persisted manifest's resources ({} on a 404: nothing persisted yet); always
        read (a local request is cheap)."""
        response = await self._request("GET", self._manifest_path())
        if response.status_code == 404:
            return {}
        self._check(response, "reading the persisted manifest")
        resources = response.json().get("resources")
        return {
            str(k): dict(v)
            for k, v in (resources if isinstance(resources, dict) else {}).items()
            if isinstance(v, dict)
        }

    async def write_states(self, changes: Mapping[str, Mapping[str, Any] | None]) -> None:
        """PATCH each resource's entry (a shallow merge), or DELETE it (None)."""
        for name, fields in changes.items():
            path = self._manifest_path(f"/resources/{name}")
            if fields is None:
                response = await self._request("DELETE", path)
                self._check(response, f"dropping the state of {name}")
            else:
                response = await self._request("PATCH", path, json=dict(fields))
                self._check(response, f"writing the state of {name}")

    async def _stream(
        self, path: str, body: dict[str, Any], on_progress: OnProgress | None
    ) -> list[DeployProgress]:
        results: list[DeployProgress] = []
        try:
            async with self._http.stream("POST", path, json=body, timeout=None) as response:
                if response.status_code >= 400:
                    await response.aread()
                    error = PlaneUnavailable if response.status_code >= 500 else PlaneError
                    raise error(f"{path}: {refusal(response)}")
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind = event.get("type")
                    if kind == "error":
                        raise PlaneError(f"{path}: {event.get('message')}")
                    if kind == "endpoint" and on_progress is not None:
                        state = event.get("state") or event.get("action")
                        if state in ("healthy", "error", "unchanged"):
                            await on_progress(
                                DeployProgress(
                                    str(event.get("name")),
                                    str(state),
                                    event.get("url"),
                                    event.get("error"),
                                )
                            )
                    if kind == "result":
                        for item in event.get("results") or []:
                            ok = bool(item.get("ok"))
                            results.append(
                                DeployProgress(
                                    str(item.get("name")),
                                    str(item.get("action")) if ok else "error",
                                    item.get("url"),
                                    item.get("error"),
                                )
                            )
        except httpx.HTTPError as exc:
            raise PlaneUnavailable(f"{path}: connection lost: {type(exc).__name__}") from None
        except ValueError as exc:
            raise PlaneUnavailable(f"{path}: a progress line is not JSON: {exc}") from None
        return results

    async def deploy(
        self, specs: Sequence[Mapping[str, Any]], on_progress: OnProgress
    ) -> list[DeployProgress]:
        """Deploy `specs` from the mothership's own build (the service has its copy)."""
        body = {
            "endpoints": [dict(s) for s in specs],
            "build": {"build_id": self.build_id},
            "environment": self.environment,
        }
        return await self._stream(f"/v1/apps/{self.app}/deploy", body, on_progress)

    async def delete(self, names: Sequence[str]) -> list[DeployProgress]:
        """Undeploy the named endpoints."""
        return await self._stream(f"/v1/apps/{self.app}/undeploy", {"names": list(names)}, None)

    async def endpoint_key(self, name: str) -> str | None:
        """The endpoint's key (None when it has none yet)."""
        response = await self._request("GET", f"/v1/apps/{self.app}/endpoints/{name}/key")
        if response.status_code == 404:
            return None
        self._check(response, f"reading the key of {name}")
        key = response.json().get("key")
        return key if isinstance(key, str) else None

    async def await_ready(self, names: Sequence[str], on_progress: OnProgress) -> None:
        """Each named endpoint as the local cloud has it: its deploy already waited for its
        health, so a running one is `healthy` and any other an `error`."""
        statuses = await self.endpoint_statuses()
        for name in names:
            status = statuses.get(name)
            if status == "healthy":
                await on_progress(DeployProgress(name, "healthy"))
            else:
                await on_progress(DeployProgress(name, "error", error=f"endpoint is {status}"))

    async def endpoint_statuses(self) -> dict[str, str]:
        """Each endpoint record of the app, with its status."""
        response = await self._request("GET", f"/v1/apps/{self.app}/endpoints")
        self._check(response, "listing the endpoints")
        endpoints = response.json().get("endpoints")
        return {
            str(e["name"]): str(e.get("status"))
            for e in (endpoints if isinstance(endpoints, list) else [])
            if isinstance(e, dict) and "name" in e
        }

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
