"""`RunPodControlPlane`: what a mothership running on RunPod provisions its children through.

The same interface as `LocalControlPlane` (`runtime.control_plane.ControlPlane`), spoken as
RunPod's GraphQL with the wire model the engine's target uses (`runtime.runpod_wire`): children
are created with `saveEndpoint` and an inline template, updated with `saveTemplate` then
`saveEndpoint` with their id, deleted with `deleteEndpoint` then `deleteTemplate`. The state
manager is the environment's persisted build manifest (`runtime.runpod_state`): per resource
under `provisioning` (what the mothership reports) and, for each endpoint that exists, a
`deployments` record (id, template, URL, aiKey) that the engine's `status` and `undeploy` read.

The mothership holds the account key (`RUNPOD_API_KEY`): it is the one endpoint that manages
others. Its children never get it: their templates carry their identity, the mothership's
`/manifest` URL (`FLASH_ENDPOINTS_URL`) and the mothership's endpoint-scoped key to read it
with (`FLASH_ENDPOINTS_TOKEN`). No message holds a key. A failure that may pass (network, 5xx,
429, a GraphQL error that says so) is `PlaneUnavailable`, which the mothership retries.

The persisted manifest is written whole (`updateFlashBuildManifest`), so the mothership starts
only once the deploy that started it has recorded it (`deployments[<its name>]` of its build):
until then it reports the plane unavailable and retries, and nothing it writes is overwritten.
It is read once per pass (`read_state`), after which the plane keeps it: records of saved or
deleted children and the mothership's state changes go into that copy and `write_states` writes
it in one request. Before it saves or deletes anything the plane checks that its build is still
the environment's active one (one `flashAppByName`). A saved child is followed until it is up
(`await_ready`, `runtime.runpod_health`) through its own endpoint, not GraphQL.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from runtime.control_plane import DeployProgress, OnProgress, PlaneError, PlaneUnavailable
from runtime.envnumbers import env_number
from runtime.runpod_endpoints import (
    DEFAULT_API_BASE,
    DEFAULT_ENDPOINT_BASE,
    DEFAULT_LB_URL,
    Deployment,
    lb_url,
    save_endpoint,
)
from runtime.runpod_health import (
    DEFAULT_HEALTH_WAIT,
    DEFAULT_UNHEALTHY_GRACE,
    HEALTH_WAIT_ENV,
    UNHEALTHY_GRACE_ENV,
    wait_up,
)
from runtime.runpod_state import EnvState
from runtime.runpod_wire import (
    ApiError,
    Endpoint,
    Operation,
    RunPodApi,
)

__all__ = ["MOTHERSHIP_PLANE_ENV", "RunPodControlPlane", "RunPodSite", "child_env"]

# Set on a mothership's template by the engine: which plane its children are provisioned through.
MOTHERSHIP_PLANE_ENV = "FLASH_MOTHERSHIP_PLANE"
_TRANSIENT = re.compile(
    r"try again later|internal server error|service unavailable|too many requests"
    r"|temporarily unavailable",
    re.IGNORECASE,
)
_TEMPLATE_DELETE_TRIES = 4
_REQUIRED = (
    "RUNPOD_API_KEY",
    "RUNPOD_ENDPOINT_ID",
    "FLASH_APP",
    "FLASH_ENV",
    "FLASH_ENVIRONMENT_ID",
    "FLASH_RUNPOD_BUILD_ID",
    "FLASH_RESOURCE_NAME",
)


def child_env(
    mothership_url: str, mothership_id: str, mothership_key: str | None
) -> dict[str, str]:
    """What a child's template adds to its env: where its service registry is (the
    mothership's `/manifest`) and the mothership's endpoint-scoped key to read it."""
    env = {
        "FLASH_ENDPOINTS_URL": f"{mothership_url.rstrip('/')}/manifest",
        "FLASH_MOTHERSHIP_ID": mothership_id,
    }
    if mothership_key:
        env["FLASH_ENDPOINTS_TOKEN"] = mothership_key
    return env


class _Refused(PlaneError, ApiError):
    """RunPod refused an operation (the wire model's `ApiError` too, so it reads "not found")."""


class _Unavailable(PlaneUnavailable, ApiError):
    """RunPod could not answer now (network, 429, 5xx, "try again later")."""


class _Transport:
    """GraphQL over HTTP with the account key; failures become plane errors (never the key)."""

    def __init__(self, url: str, key: str, http: httpx.AsyncClient) -> None:
        self._url = url
        self._key = key
        self._http = http

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "<redacted>") if len(self._key) >= 4 else text

    async def execute(self, operation: Operation) -> dict[str, Any]:
        """One operation's `data` (never retried here: the mothership retries whole passes)."""
        name = operation.name
        try:
            response = await self._http.post(
                self._url,
                json=operation.body(),
                headers={"Authorization": f"Bearer {self._key}"},
            )
        except httpx.HTTPError as exc:
            raise _Unavailable(f"RunPod API unreachable ({name}): {type(exc).__name__}") from None
        status = response.status_code
        if status in (401, 403):
            raise _Refused(f"RunPod rejected the mothership's RUNPOD_API_KEY (HTTP {status})")
        if status == 429 or status >= 500:
            raise _Unavailable(f"RunPod API: {name} failed (HTTP {status})")
        try:
            body = response.json()
        except ValueError:
            body = None
        if status >= 400 or not isinstance(body, dict):
            raise _Refused(f"RunPod API: {name} failed (HTTP {status})")
        errors = body.get("errors")
        if errors:
            text = self._redact(
                "; ".join(
                    str(e.get("message")) if isinstance(e, dict) else str(e)
                    for e in (errors if isinstance(errors, list) else [errors])
                )
            )
            error = _Unavailable if _TRANSIENT.search(text) else _Refused
            raise error(f"RunPod API: {name}: {text}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise _Refused(f"RunPod API: {name} answered without data")
        return data


@dataclass(frozen=True)
class RunPodSite:
    """Where a RunPod mothership works: the API (account key and URLs), its app environment
    and build, its own endpoint, how long it waits for a saved child to be up and how long a
    child may answer unhealthy before it is failed."""

    api_key: str = field(repr=False)
    api_base: str
    endpoint_base: str
    lb_url_template: str
    app: str
    environment: str
    environment_id: str
    build_id: str
    mothership: str
    mothership_id: str
    health_wait: float = DEFAULT_HEALTH_WAIT
    unhealthy_grace: float = DEFAULT_UNHEALTHY_GRACE

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RunPodSite:
        """The site a RunPod mothership's template describes; ValueError names what is
        missing (never a value)."""
        values: dict[str, str] = {}
        for name in _REQUIRED:
            value = environ.get(name, "").strip()
            if not value:
                raise ValueError(f"{name} is not set: this mothership cannot reach RunPod")
            values[name] = value
        endpoint_base = environ.get("RUNPOD_ENDPOINT_BASE_URL") or DEFAULT_ENDPOINT_BASE
        return cls(
            api_key=values["RUNPOD_API_KEY"],
            api_base=environ.get("RUNPOD_API_BASE_URL") or DEFAULT_API_BASE,
            endpoint_base=endpoint_base.rstrip("/"),
            lb_url_template=environ.get("FLASH_RUNPOD_LB_URL") or DEFAULT_LB_URL,
            app=values["FLASH_APP"],
            environment=values["FLASH_ENV"],
            environment_id=values["FLASH_ENVIRONMENT_ID"],
            build_id=values["FLASH_RUNPOD_BUILD_ID"],
            mothership=values["FLASH_RESOURCE_NAME"],
            mothership_id=values["RUNPOD_ENDPOINT_ID"],
            health_wait=env_number(
                HEALTH_WAIT_ENV, DEFAULT_HEALTH_WAIT, minimum=1.0, environ=environ
            ),
            unhealthy_grace=env_number(
                UNHEALTHY_GRACE_ENV, DEFAULT_UNHEALTHY_GRACE, minimum=1.0, environ=environ
            ),
        )


class RunPodControlPlane:
    """RunPod's GraphQL API, for the mothership of one app environment."""

    def __init__(self, site: RunPodSite) -> None:
        self.site = site
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), trust_env=False)
        graphql_url = site.api_base.rstrip("/") + "/graphql"
        self.transport = _Transport(graphql_url, site.api_key, self._http)
        self.api = RunPodApi(self.transport)
        self._lock = asyncio.Lock()
        # The persisted manifest as last read, with this mothership's changes; `_dirty` while
        # some of them are not written yet.
        self._kept: dict[str, Any] | None = None
        self._dirty = False
        self._changes = 0  # counts `_change` calls: what a write in flight did not include

    def __repr__(self) -> str:
        return f"RunPodControlPlane(app={self.site.app!r}, environment={self.environment!r})"

    @property
    def environment(self) -> str:
        """The app environment whose children this plane provisions."""
        return self.site.environment

    @property
    def build_id(self) -> str:
        """The RunPod build this mothership reconciles (the environment's active one)."""
        return self.site.build_id

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RunPodControlPlane:
        """The plane a RunPod mothership's template describes (see `RunPodSite.from_env`)."""
        return cls(RunPodSite.from_env(environ))

    def url_of(self, endpoint_id: str, load_balanced: bool) -> str:
        """Where an endpoint answers: its LB host, or its queue API."""
        if load_balanced:
            return lb_url(self.site.lb_url_template, endpoint_id)
        return f"{self.site.endpoint_base}/{endpoint_id}"

    # -- the persisted manifest -----------------------------------------------------------

    async def _check_active(self) -> None:
        """PlaneUnavailable unless this mothership's build is the environment's active one."""
        try:
            app = await self.api.app_by_name(self.site.app)
        except PlaneError:
            raise
        except ApiError as exc:  # the wire model's own ("returned nothing" and the like)
            raise PlaneError(str(exc)) from None
        environment = next(
            (e for e in (app.flashEnvironments if app else []) if e.id == self.site.environment_id),
            None,
        )
        if environment is None or environment.activeBuildId != self.build_id:
            # The platform restarts every worker on the new active build's artifact, this
            # one too, before the deploy replaces its template: the new mothership
            # reconciles that build; this one must not touch anything meanwhile.
            raise PlaneUnavailable(f"build {self.build_id} is not the environment's active build")

    async def _manifest(self) -> dict[str, Any]:
        """The persisted manifest read afresh (and kept: every later change is made to it)."""
        await self._check_active()
        try:
            build = await self.api.build(self.build_id)
        except PlaneError:
            raise
        except ApiError as exc:
            raise PlaneError(str(exc)) from None
        manifest = dict(build.manifest or {}) if build is not None else {}
        recorded = EnvState.from_manifest(manifest).resources.get(self.site.mothership)
        if (
            recorded is None
            or recorded.endpoint_id != self.site.mothership_id
            or recorded.build_id != self.build_id
        ):
            # Written whole: writing before the deploy that started us has recorded us would
            # have that deploy overwrite what we wrote.
            raise PlaneUnavailable(
                f"the deploy of build {self.build_id} has not recorded this mothership yet"
            )
        # Changes of a pass that failed before writing them are dropped with the old copy: like
        # a crash, the next pass finds what that pass created by its environment and name.
        self._kept, self._dirty = manifest, False
        return manifest

    async def _current(self) -> dict[str, Any]:
        """The manifest as this mothership last read or changed it (read when it has none).
        While its build is active it is the one writer of this build's manifest, so what it
        keeps is what is persisted plus its own changes not yet written."""
        if self._kept is None:
            return await self._manifest()
        return self._kept

    def _change(self, change: Callable[[EnvState], Any]) -> None:
        """Apply `change` to the kept manifest; written by the next `write_states`."""
        assert self._kept is not None, "changed before the manifest was read"
        state = EnvState.from_manifest(self._kept)
        change(state)
        self._kept = state.into_manifest(self._kept)
        self._dirty = True
        self._changes += 1

    async def read_state(self, *, fresh: bool = True) -> dict[str, dict[str, Any]]:
        """The mothership's per-resource provisioning entries (`fresh=False`: as this
        mothership last read or wrote them, without a request)."""
        manifest = await (self._manifest() if fresh else self._current())
        return {n: dict(e) for n, e in EnvState.from_manifest(manifest).provisioning.items()}

    async def write_states(self, changes: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Merge each resource's fields into its provisioning entry (None drops it), with the
        endpoint records changed since the last write: one `updateFlashBuildManifest`."""
        async with self._lock:
            await self._current()

            def change(state: EnvState) -> None:
                for name, fields in changes.items():
                    if fields is None:
                        state.provisioning.pop(name, None)
                    else:
                        state.provisioning.setdefault(name, {}).update(dict(fields))

            if changes:
                self._change(change)
            if not self._dirty:
                return
            assert self._kept is not None
            written, changes_before = self._kept, self._changes
            await self.api.update_manifest(self.build_id, written)
            # A change made while the write was under way is still to be written.
            self._dirty = self._changes != changes_before

    # -- endpoints ------------------------------------------------------------------------

    async def _live(
        self, *, check: bool = True
    ) -> tuple[EnvState, dict[str, Endpoint], Endpoint | None]:
        """The state, this environment's live endpoints by resource name, and our own
        (`check`: first make sure this build is still the active one)."""
        if check:
            await self._check_active()
        state = EnvState.from_manifest(await self._current())
        endpoints = await self.api.endpoints()
        by_id = {e.id: e for e in endpoints}
        live: dict[str, Endpoint] = {}
        for name, record in state.resources.items():
            if record.endpoint_id in by_id:
                live[name] = by_id[record.endpoint_id]
        recorded = {r.endpoint_id for r in state.resources.values()}
        for endpoint in endpoints:
            if endpoint.flashEnvironmentId != self.site.environment_id or endpoint.id in recorded:
                continue
            # Created by a pass that died before recording it: adopted, never duplicated.
            name = endpoint.env_value("FLASH_RESOURCE_NAME") or endpoint.name
            live.setdefault(name, endpoint)
        return state, live, by_id.get(self.site.mothership_id)

    async def deploy(
        self, specs: Sequence[Mapping[str, Any]], on_progress: OnProgress
    ) -> list[DeployProgress]:
        """Create or update each child of `specs` (one at a time): each one `saved` (its
        record kept for the next `write_states`), or `error`. `await_ready` follows."""
        state, live, own = await self._live()
        if own is None:
            raise PlaneUnavailable("this mothership's own endpoint is not listed yet")
        extra = child_env(self.url_of(own.id, True), own.id, own.aiKey)
        manifest = await self._current()
        entries = manifest.get("resources") if isinstance(manifest.get("resources"), dict) else {}
        results: list[DeployProgress] = []
        for spec in specs:
            name = str(spec["name"])
            try:
                result = await self._save(
                    spec, entries.get(name) or {}, live.get(name), state, extra
                )
            except PlaneUnavailable:
                raise
            except (PlaneError, ApiError, ValueError, KeyError) as exc:
                result = DeployProgress(name, "error", error=str(exc))
            await on_progress(result)
            results.append(result)
        return results

    async def _save(
        self,
        spec: Mapping[str, Any],
        entry: Mapping[str, Any],
        live: Endpoint | None,
        state: EnvState,
        extra: Mapping[str, str],
    ) -> DeployProgress:
        name = str(spec["name"])
        where = Deployment(self.site.app, self.environment, self.site.environment_id)
        recorded = state.resources.get(name)
        saved = await save_endpoint(
            self.api,
            where,
            spec,
            entry,
            live,
            recorded_template=recorded.template_name if recorded is not None else None,
            extra=extra,
        )
        url = self.url_of(saved.endpoint.id, bool(spec.get("is_load_balanced")))
        record = saved.record(url, self.build_id, role="child", mothership=self.site.mothership)
        # Kept, written with the mothership's next state write: a mothership killed before
        # that finds the endpoint again by its environment and name (`_live`).
        self._change(lambda s: s.resources.__setitem__(name, record))
        return DeployProgress(name, "saved", url)

    async def delete(self, names: Sequence[str]) -> list[DeployProgress]:
        """Delete each named child's endpoint and the template created for it."""
        state, live, _own = await self._live()
        results: list[DeployProgress] = []
        for name in names:
            endpoint = live.get(name)
            recorded = state.resources.get(name)
            if endpoint is None and recorded is None:
                results.append(DeployProgress(name, "error", error="not deployed"))
                continue
            try:
                if endpoint is not None:
                    await self.api.delete_endpoint(endpoint.id)
            except PlaneUnavailable:
                raise
            except (PlaneError, ApiError) as exc:
                results.append(DeployProgress(name, "error", error=str(exc)))
                continue
            template = recorded.template_name if recorded is not None else None
            if template is None and endpoint is not None and endpoint.template is not None:
                template = endpoint.template.name
            held = bool(template) and not await self._delete_template(str(template))

            def change(
                s: EnvState, name: str = name, template: Any = template, held: bool = held
            ) -> None:
                s.resources.pop(name, None)
                if held:
                    s.leftover_templates.append(str(template))

            self._change(change)
            results.append(DeployProgress(name, "deleted"))
        return results

    async def _delete_template(self, name: str) -> bool:
        delay = 0.2
        for attempt in range(_TEMPLATE_DELETE_TRIES):
            try:
                await self.api.delete_template(name)
                return True
            except PlaneUnavailable:
                pass
            except PlaneError as exc:
                text = str(exc).lower()
                if "not found" in text or "does not exist" in text:
                    return True
            if attempt + 1 < _TEMPLATE_DELETE_TRIES:
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
        return False  # RunPod still holds it: the engine's next deploy or undeploy deletes it

    async def endpoint_key(self, name: str) -> str | None:
        """The child's endpoint-scoped key (aiKey), as recorded."""
        record = EnvState.from_manifest(await self._current()).resources.get(name)
        return record.ai_key if record is not None else None

    async def endpoint_statuses(self) -> dict[str, str]:
        """Each live endpoint of this environment (`healthy`: it exists on RunPod)."""
        _state, live, _own = await self._live(check=False)
        return {name: "healthy" for name in live}

    async def await_ready(self, names: Sequence[str], on_progress: OnProgress) -> None:
        """Follow each saved child until RunPod says it is up (`healthy`) or it cannot come
        up (`error`), reporting each as it settles."""
        records = EnvState.from_manifest(await self._current()).resources
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0), trust_env=False) as client:

            async def follow(name: str) -> None:
                record = records.get(name)
                if record is None or not record.url:
                    await on_progress(DeployProgress(name, "error", error="no endpoint recorded"))
                    return
                up, detail = await wait_up(
                    client,
                    record.url,
                    record,
                    self.site.health_wait,
                    asyncio.sleep,
                    grace=self.site.unhealthy_grace,
                )
                state = "healthy" if up else "error"
                await on_progress(DeployProgress(name, state, record.url, None if up else detail))

            await asyncio.gather(*(follow(n) for n in names))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()
