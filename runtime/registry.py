"""The service registry: which endpoint serves a function, and at which URL with which key.

Two sources, given to a worker by whoever started it:

- the build manifest (`FLASH_MANIFEST_PATH`, else `./flash_manifest.json`): function ->
  resource, resource type, routes;
- the endpoint table, from the environment itself (`FLASH_ENDPOINTS`, the JSON document in the
  variable: what a deploy to RunPod writes into a caller's template env, since a worker there
  has no other place to read it from), a file (`FLASH_ENDPOINTS_FILE`, re-read when it
  changes) or a URL (`FLASH_ENDPOINTS_URL`, fetched with `Authorization: Bearer
  $FLASH_ENDPOINTS_TOKEN` when that is set, cached for `FLASH_ENDPOINTS_TTL` seconds, default
  300; tried 3 times with backoff, the last table kept while it cannot be had); the URL wins
  over the file, the file over the variable. All are JSON, either
  `{"endpoints": {"<resource>": {"url": "http://127.0.0.1:P", "key": "<key>"}}}` or a manifest
  whose resources carry `endpoint_url` (and optionally `endpoint_key`), as a mothership's
  persisted manifest does, or a RunPod environment's persisted manifest (`resources_endpoints
  {name: url}`, each resource's endpoint-scoped `aiKey`). A miss triggers one refresh before
  giving up (an endpoint deployed after the cache was filled is found at once).

`FLASH_RESOURCE_NAME` names the endpoint this process serves: its functions run locally.
Without an endpoint table the registry is not configured and every call runs locally (plain
`python main.py` during development) — except in a worker deployed to a Flash environment
(`FLASH_ENVIRONMENT_ID`), where a call to another endpoint without a table is an error rather
than a silent local run.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from runtime.errors import EndpointNotFoundError, ManifestError

__all__ = [
    "DEFAULT_TTL",
    "EndpointInfo",
    "FunctionTarget",
    "ServiceRegistry",
    "parse_endpoints",
]

DEFAULT_TTL = 300.0
_MIN_REFRESH_INTERVAL = 0.5  # refresh-on-miss at most this often (no hammering on typos)
# A table URL (a mothership's /manifest) is tried this often, waiting 0.2 s, then 0.4 s.
_URL_ATTEMPTS = 3
_URL_BACKOFF = 0.2

_LB_TYPES = frozenset(
    {
        "LoadBalancerSlsResource",
        "LiveLoadBalancer",
        "CpuLoadBalancerSlsResource",
        "CpuLiveLoadBalancer",
    }
)
_LIVE_TYPES = frozenset(
    {"LiveServerless", "CpuLiveServerless", "LiveLoadBalancer", "CpuLiveLoadBalancer"}
)


@dataclass(frozen=True)
class EndpointInfo:
    """Where an endpoint answers. The key is kept out of `repr` so it never reaches logs."""

    name: str
    url: str
    key: str | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        """The Authorization header for this endpoint (empty without a key)."""
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}


@dataclass(frozen=True)
class FunctionTarget:
    """What the caller needs to know about a function served by some endpoint."""

    name: str
    resource: str
    resource_type: str | None
    is_load_balanced: bool
    is_live: bool
    is_class: bool = False
    http_method: str | None = None
    http_path: str | None = None


def parse_endpoints(data: Any) -> dict[str, EndpointInfo]:
    """The endpoint table of a JSON document (either accepted shape); unknown shapes -> {}."""
    table: dict[str, EndpointInfo] = {}
    if not isinstance(data, Mapping):
        return table
    endpoints = data.get("endpoints")
    if isinstance(endpoints, Mapping):
        for name, entry in endpoints.items():
            if isinstance(entry, str):
                table[str(name)] = EndpointInfo(str(name), entry.rstrip("/"))
            elif isinstance(entry, Mapping) and isinstance(entry.get("url"), str):
                key = entry.get("key")
                table[str(name)] = EndpointInfo(
                    str(name), entry["url"].rstrip("/"), key if isinstance(key, str) else None
                )
    resources = data.get("resources")
    resources = resources if isinstance(resources, Mapping) else {}
    # A RunPod environment's persisted manifest: `resources_endpoints {name: url}`, and each
    # resource's endpoint-scoped key (`aiKey`) next to its endpoint id.
    urls = data.get("resources_endpoints")
    if isinstance(urls, Mapping):
        for name, url in urls.items():
            entry = resources.get(name)
            key = entry.get("aiKey") if isinstance(entry, Mapping) else None
            if str(name) not in table and isinstance(url, str) and url:
                table[str(name)] = EndpointInfo(
                    str(name), url.rstrip("/"), key if isinstance(key, str) else None
                )
    for name, entry in resources.items():
        if str(name) in table or not isinstance(entry, Mapping):
            continue
        url = entry.get("endpoint_url")
        if isinstance(url, str) and url:
            key = entry.get("endpoint_key")
            table[str(name)] = EndpointInfo(
                str(name), url.rstrip("/"), key if isinstance(key, str) else None
            )
    return table


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from exc


def _inline_table(text: str) -> dict[str, EndpointInfo]:
    """The endpoint table in `FLASH_ENDPOINTS`; a value that is not JSON is an error naming it."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"FLASH_ENDPOINTS is not JSON: {exc}") from None
    return parse_endpoints(data)


class ServiceRegistry:
    """Manifest + endpoint table lookups for cross-endpoint calls (see module docstring)."""

    def __init__(
        self,
        manifest: Mapping[str, Any] | None,
        *,
        current_resource: str | None = None,
        endpoints_file: str | os.PathLike[str] | None = None,
        endpoints_url: str | None = None,
        endpoints_token: str | None = None,
        ttl: float = DEFAULT_TTL,
        environment_id: str | None = None,
        inline: Mapping[str, EndpointInfo] | None = None,
    ) -> None:
        self.manifest: Mapping[str, Any] = manifest or {}
        self.current_resource = current_resource
        self.endpoints_file = Path(endpoints_file) if endpoints_file else None
        self._endpoints_path = str(self.endpoints_file) if self.endpoints_file else ""
        self.endpoints_url = endpoints_url
        self._token = endpoints_token
        self.ttl = ttl
        self.environment_id = environment_id
        # The table given in the environment (`FLASH_ENDPOINTS`): it never changes, so every
        # reload starts from it.
        self._inline: dict[str, EndpointInfo] = dict(inline or {})
        self._table: dict[str, EndpointInfo] = dict(self._inline)
        self._loaded_at = 0.0
        self._file_stamp: tuple[float, int] | None = None
        self._last_refresh = 0.0
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        # The manifest does not change while the process runs: one lookup per function.
        self._targets: dict[tuple[str, str], FunctionTarget] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceRegistry | None:
        """The registry described by the environment, or None when no endpoint table is set."""
        env = environ if environ is not None else os.environ
        endpoints_file = env.get("FLASH_ENDPOINTS_FILE") or None
        endpoints_url = env.get("FLASH_ENDPOINTS_URL") or None
        environment = env.get("FLASH_ENVIRONMENT_ID") or None
        inline = env.get("FLASH_ENDPOINTS") or None
        if not endpoints_file and not endpoints_url and not environment and not inline:
            return None
        manifest_path = Path(env.get("FLASH_MANIFEST_PATH") or Path.cwd() / "flash_manifest.json")
        manifest = _load_json(manifest_path)
        try:
            ttl = float(env.get("FLASH_ENDPOINTS_TTL") or DEFAULT_TTL)
        except ValueError:
            ttl = DEFAULT_TTL
        return cls(
            manifest if isinstance(manifest, Mapping) else None,
            current_resource=env.get("FLASH_RESOURCE_NAME") or None,
            endpoints_file=endpoints_file,
            endpoints_url=endpoints_url,
            endpoints_token=env.get("FLASH_ENDPOINTS_TOKEN") or None,
            ttl=ttl,
            environment_id=environment,
            inline=_inline_table(inline) if inline else None,
        )

    # ------------------------------------------------------------ manifest lookups

    def is_local(self, resource_name: str) -> bool:
        """True when `resource_name` is the endpoint this process serves."""
        return self.current_resource is not None and resource_name == self.current_resource

    def function_target(self, function_name: str, resource_name: str) -> FunctionTarget:
        """Routing facts of a function on `resource_name` (manifest; defaults when absent)."""
        key = (function_name, resource_name)
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = self._lookup_target(function_name, resource_name)
        return target

    def _lookup_target(self, function_name: str, resource_name: str) -> FunctionTarget:
        resource = (self.manifest.get("resources") or {}).get(resource_name) or {}
        resource_type = resource.get("resource_type")
        entry: Mapping[str, Any] = {}
        for function in resource.get("functions") or []:
            if isinstance(function, Mapping) and function.get("name") == function_name:
                entry = function
                break
        method, path = entry.get("http_method"), entry.get("http_path")
        if not method or not path:
            for route, name in (
                (self.manifest.get("routes") or {}).get(resource_name) or {}
            ).items():
                if name == function_name and " " in route:
                    method, path = route.split(" ", 1)
                    break
        lb = (resource_type in _LB_TYPES) or bool(resource.get("is_load_balanced"))
        live = (resource_type in _LIVE_TYPES) or bool(resource.get("is_live_resource"))
        return FunctionTarget(
            name=function_name,
            resource=resource_name,
            resource_type=resource_type,
            is_load_balanced=lb,
            is_live=live,
            is_class=bool(entry.get("is_class")),
            http_method=str(method).upper() if method else None,
            http_path=str(path) if path else None,
        )

    def knows_resource(self, resource_name: str) -> bool:
        """Whether the manifest lists `resource_name`."""
        return resource_name in (self.manifest.get("resources") or {})

    # ------------------------------------------------------------ endpoint table

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    def _file_changed(self) -> bool:
        if self.endpoints_file is None:
            return False
        try:
            # os.stat on the text path: pathlib's stat costs twice as much, on every call.
            st = os.stat(self._endpoints_path)
        except OSError:
            return self._file_stamp is not None
        return (st.st_mtime, st.st_size) != self._file_stamp

    async def _reload(self) -> None:
        table: dict[str, EndpointInfo] = {}
        if self.endpoints_url:
            fetched = await self._fetch_url(self.endpoints_url)
            # Keep serving from what we had: a flaky registry must not fail every call.
            table.update(fetched if fetched is not None else self._table)
        if self.endpoints_file is not None:
            try:
                st = self.endpoints_file.stat()
                self._file_stamp = (st.st_mtime, st.st_size)
            except OSError:
                self._file_stamp = None
            data = _load_json(self.endpoints_file)
            for name, info in parse_endpoints(data).items():
                table.setdefault(name, info)
        for name, info in self._inline.items():
            table.setdefault(name, info)
        self._table = table
        self._loaded_at = time.monotonic()
        self._last_refresh = self._loaded_at

    async def _fetch_url(self, url: str) -> dict[str, EndpointInfo] | None:
        """The table at `url` (a mothership's `/manifest`), tried `_URL_ATTEMPTS` times with
        backoff; None when it could not be had."""
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            for attempt in range(_URL_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(_URL_BACKOFF * 2 ** (attempt - 1))
                try:
                    response = await client.get(url, headers=headers)
                    response.raise_for_status()
                    return parse_endpoints(response.json())
                except (httpx.HTTPError, ValueError):
                    continue
        return None

    async def endpoint(self, resource_name: str, *, refresh: bool = False) -> EndpointInfo:
        """URL and key of `resource_name`; raises EndpointNotFoundError when unknown."""
        if not refresh and self._loaded_at:
            # The common case, without taking the lock: a fresh table that has the endpoint.
            fresh = (time.monotonic() - self._loaded_at) <= self.ttl and not self._file_changed()
            info = self._table.get(resource_name) if fresh else None
            if info is not None:
                return info
        async with self._get_lock():
            now = time.monotonic()
            stale = (now - self._loaded_at) > self.ttl or self._file_changed()
            if refresh or stale or not self._loaded_at:
                await self._reload()
            info = self._table.get(resource_name)
            if info is None and time.monotonic() - self._last_refresh > _MIN_REFRESH_INTERVAL:
                await self._reload()  # refresh on miss: it may have been deployed since
                info = self._table.get(resource_name)
        given = self.endpoints_url or self.endpoints_file is not None or self._inline
        if info is None and not given:
            raise EndpointNotFoundError(
                f"endpoint {resource_name!r} cannot be reached: this worker of Flash environment "
                f"{self.environment_id!r} was given no endpoint table (FLASH_ENDPOINTS)"
            )
        if info is None:
            known = ", ".join(sorted(self._table)) or "none"
            raise EndpointNotFoundError(
                f"endpoint {resource_name!r} is not in the service registry (known: {known}); "
                "is it deployed?"
            )
        return info
