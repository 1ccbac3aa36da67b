"""Deploy and delete on RunPod, in upstream's call order (runpod/flash `flash deploy`), done right.

Deploy: the app and environment (created when missing), the build upload (prepare → presigned
PUT → finalize), the previous state carried into the new build's manifest, the build made the
environment's active build, then each endpoint created or updated (saveEndpoint with its
template; an update rewrites the template's env with saveTemplate first) with a bound on
concurrency, endpoints removed from the code deleted with the templates we created for them,
then each endpoint's table of the others (`FLASH_ENDPOINTS`: URLs and aiKeys, known only once
they exist) set in its template where it changed (one saveTemplate each; none when unchanged),
then the health of what was saved awaited, and the state written back. The state is written
in a `finally`: a failure or Ctrl+C midway leaves a record of everything that exists, and an
endpoint created but not recorded (the process killed) is found by its environment id and
adopted by the next deploy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from engine.health import probe
from engine.provider import (
    NOT_STARTED,
    BuildRef,
    DeployOutcome,
    EndpointResult,
    EndpointSpec,
    EndpointTarget,
    EventCallback,
    ProviderEvent,
)
from engine.runpod.api import RunPodApi
from engine.runpod.config import RunPodConfig
from engine.runpod.environment import (
    Environment,
    endpoint_target,
    owned_live,
    table_callers,
    table_peers,
)
from engine.runpod.graphql import GraphQLError, RunPodError
from engine.status import Status
from runtime.runpod_endpoints import (
    Deployment,
    SavedEndpoint,
    expected_tables,
    save_endpoint,
    table_of,
    with_table,
)
from runtime.runpod_plane import MOTHERSHIP_PLANE_ENV
from runtime.runpod_state import ResourceState
from runtime.runpod_wire import Endpoint, EnvVar, TemplateInput

__all__ = ["Deployer", "mothership_env"]

_TEMPLATE_DELETE_TRIES = 4  # deleteTemplate fails while the endpoint's removal is in flight
_UPLOAD_TRIES = 3


@dataclass(frozen=True)
class _Saved:
    """One endpoint saved by its saveEndpoint, its table and health still to come."""

    name: str
    action: str
    started: float
    target: EndpointTarget


# Not compared, and its repr is object's: it holds a connection, not a value.
@dataclass(eq=False, repr=False)
class Deployer:
    """Deploys to / deletes from one environment; one instance per operation."""

    config: RunPodConfig
    api: RunPodApi
    http: httpx.AsyncClient
    where: Environment
    env_name: str
    _: KW_ONLY
    on_event: EventCallback | None = None
    concurrency: int = 4
    health_wait: float = 120.0
    # Once set, endpoints not saved yet are not saved (a cancelled deploy).
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    _limit: asyncio.Semaphore = field(init=False)
    _state_lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    _state_error: str | None = field(init=False, default=None)
    # The template env this operation gave each endpoint, by resource name (the update's even
    # when its endpoint's save then failed).
    _envs: dict[str, list[EnvVar]] = field(init=False, default_factory=dict)
    # Deleted by this operation: in no table any more.
    _deleted: set[str] = field(init=False, default_factory=set)
    # The build whose manifest this deployer last wrote.
    _recorded: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._limit = asyncio.Semaphore(max(1, self.concurrency))

    def _emit(self, kind: str, **kwargs: Any) -> None:
        if self.on_event is not None:
            self.on_event(ProviderEvent(kind, **kwargs))

    def _ended(
        self,
        name: str,
        action: str,
        state: str,
        *,
        error: str | None = None,
        note: str = "",
        elapsed_ms: float | None = None,
        url: str | None = None,
    ) -> EndpointResult:
        """Emit an endpoint's last event (`state`) and return its result, failed with `error`
        when one is given."""
        message = error or note
        self._emit(
            "endpoint",
            name=name,
            action=action,
            state=state,
            message=message,
            elapsed_ms=elapsed_ms,
        )
        return EndpointResult(name, action, error is None, error, elapsed_ms=elapsed_ms, url=url)

    # -- deploy ---------------------------------------------------------------------------

    async def deploy(
        self, specs: Sequence[EndpointSpec], build: BuildRef, remove: Sequence[str]
    ) -> DeployOutcome:
        """Upload `build`, activate it, create/update `specs`, delete `remove`."""
        started = time.perf_counter()
        uploaded = await self._upload(build.archive)
        self._emit("build", state="uploaded", message=f"build {uploaded} uploaded")
        manifest = self.where.state.into_manifest(build.manifest)
        await self.api.update_manifest(uploaded, manifest)
        await self.api.deploy_build(self.where.environment.id, uploaded)
        self.where.environment = self.where.environment.model_copy(
            update={"activeBuildId": uploaded}
        )
        self.where.manifest = manifest
        self._recorded = uploaded
        self._emit("build", state="ready", message=f"build {uploaded} is active")
        results: list[EndpointResult] = []
        try:
            await self.sweep_templates()
            live = owned_live(self.where, await self.api.endpoints())
            entries = build.manifest.get("resources") or {}
            jobs = [
                self._save_one(spec, entries.get(spec.name) or {}, live.get(spec.name), uploaded)
                for spec in specs
            ]
            saved = await asyncio.gather(*jobs)
            deleted = await self._delete_many(remove, live) if remove else []
            # Only now are every endpoint's URL and aiKey known: the callers' tables follow.
            unset = await self._set_tables(live)
            results.extend(await asyncio.gather(*(self._settle(s, unset) for s in saved)))
            named = {s.name for s in saved}
            results.extend(
                EndpointResult(n, "update", False, e)
                for n, e in sorted(unset.items())
                if n not in named
            )
            results.extend(deleted)
        finally:
            await self.save_state()
        self._check_state()
        ok = all(r.ok for r in results)
        return DeployOutcome(
            ok,
            tuple(results),
            build_id=uploaded,
            elapsed_ms=_ms(started),
            cancelled=self.cancel.is_set(),
        )

    async def _upload(self, archive: Path) -> str:
        data = await asyncio.to_thread(archive.read_bytes)
        upload = await self.api.prepare_upload(self.where.app.id, len(data))
        headers = {"Content-Type": "application/gzip", "Content-Length": str(len(data))}
        for attempt in range(_UPLOAD_TRIES):
            try:
                response = await self.http.put(
                    upload.uploadUrl, content=data, headers=headers, timeout=600.0
                )
            except httpx.TransportError as exc:
                if attempt + 1 == _UPLOAD_TRIES:
                    raise RunPodError(f"build upload failed: {type(exc).__name__}") from None
            else:
                if response.status_code < 300:
                    break
                if response.status_code < 500 or attempt + 1 == _UPLOAD_TRIES:
                    raise RunPodError(f"build upload refused (HTTP {response.status_code})")
            await asyncio.sleep(2.0 * (2**attempt))
        build = await self.api.finalize_upload(self.where.app.id, upload.objectKey)
        return build.id

    async def _save_one(
        self, spec: EndpointSpec, entry: Mapping[str, Any], live: Endpoint | None, build_id: str
    ) -> _Saved | EndpointResult:
        """The endpoint saved, or (cancelled, or its save failed) its result."""
        name = spec.name
        action = "update" if live is not None else "create"
        async with self._limit:
            started = time.perf_counter()
            if self.cancel.is_set():
                self._emit("endpoint", name=name, action=action, state="cancelled")
                return EndpointResult(name, action, False, NOT_STARTED)
            self._emit("endpoint", name=name, action=action, state=Status.DEPLOYING)
            try:
                saved = await self._save(spec, entry, live, build_id)
            except (RunPodError, ValueError, KeyError) as exc:
                message = str(exc)
                self._emit("endpoint", name=name, action=action, state="error", message=message)
                return EndpointResult(name, action, False, message)
            target = endpoint_target(self.config, name, saved.endpoint, spec.is_load_balanced)
            record = saved.record(
                target.base_url, build_id, role=spec.role, mothership=spec.mothership
            )
            async with self._state_lock:
                self.where.state.resources[name] = record
            if spec.role == "mothership":
                # Recorded at once: the mothership starts provisioning once its deploy has
                # recorded it (runtime.runpod_plane), not after its health was awaited too.
                await self.save_state()
            return _Saved(name, action, started, target)

    async def _set_tables(self, live: Mapping[str, Endpoint]) -> dict[str, str]:
        """Give every endpoint of the environment its table of the others where it changed;
        returns {name: why it could not be set}."""
        resources = dict(self.where.state.resources)
        gone = self._deleted
        tables = expected_tables(
            table_peers(self.config, self.where, {n: e for n, e in live.items() if n not in gone}),
            table_callers(self.where.manifest),
        )
        jobs = []
        for name, state in sorted(resources.items()):
            if state.role != "endpoint":
                continue  # a mothership's children find each other through its `/manifest`
            env = self._envs.get(name)
            found = live.get(name)
            if env is None and found is not None and found.id == state.endpoint_id:
                env = None if found.env is None else list(found.env)
            if env is None:
                # Not live (deleted behind our back: the next deploy recreates it), or its env
                # unknown (a table alone would replace the whole env).
                continue
            table = tables.get(name)
            if table != table_of(env):
                jobs.append(self._set_table(name, state, live.get(name), with_table(env, table)))
        failures = await asyncio.gather(*jobs)
        return {name: error for name, error in failures if error is not None}

    async def _set_table(
        self, name: str, state: ResourceState, live: Endpoint | None, env: list[EnvVar]
    ) -> tuple[str, str | None]:
        template_name = state.template_name
        if template_name is None and live is not None and live.template is not None:
            template_name = live.template.name
        if not state.template_id or not template_name or not state.image:
            return name, "its template is unknown, so its endpoint table could not be set"
        template = TemplateInput(
            id=state.template_id, name=template_name, imageName=state.image, env=env
        )
        async with self._limit:
            try:
                await self.api.save_template(template)
            except RunPodError as exc:
                message = f"its endpoint table could not be set: {exc}"
                self._emit("endpoint", name=name, action="update", state="error", message=message)
                return name, message
        return name, None

    async def _settle(
        self, saved: _Saved | EndpointResult, unset: Mapping[str, str]
    ) -> EndpointResult:
        """The result of one saved endpoint: healthy (or saved, not waited for) or why not."""
        if isinstance(saved, EndpointResult):
            return saved  # not saved: cancelled, or why its save failed
        name, action, started = saved.name, saved.action, saved.started
        if name in unset:
            return EndpointResult(name, action, False, unset[name], elapsed_ms=_ms(started))
        target = saved.target
        if self.health_wait <= 0:  # asked not to wait: saved is all this run knows
            return self._ended(name, action, "saved", elapsed_ms=_ms(started), url=target.base_url)
        async with self._limit:
            healthy, detail = await self._wait_healthy(target)
        elapsed = _ms(started)
        if not healthy:
            message = f"saved, but not healthy after {self.health_wait:g} s: {detail}"
            return self._ended(name, action, "error", error=message, elapsed_ms=elapsed)
        return self._ended(name, action, Status.HEALTHY, elapsed_ms=elapsed, url=target.base_url)

    async def _save(
        self, spec: EndpointSpec, entry: Mapping[str, Any], live: Endpoint | None, build_id: str
    ) -> SavedEndpoint:
        where = Deployment(self.where.app.name, self.env_name, self.where.environment.id)
        recorded = self.where.state.resources.get(spec.name)
        return await save_endpoint(
            self.api,
            where,
            spec.model_dump(),
            entry,
            live,
            recorded_template=recorded.template_name if recorded is not None else None,
            extra=mothership_env(self.config, spec, build_id)
            if spec.role == "mothership"
            else None,
            # The tables written after the saves go over this env, also when the endpoint's
            # save fails after its template was written.
            on_template=lambda env: self._envs.__setitem__(spec.name, env),
        )

    async def _wait_healthy(self, target: EndpointTarget) -> tuple[bool, str]:
        deadline = time.monotonic() + self.health_wait
        delay, detail = 0.1, "no answer"
        async with httpx.AsyncClient(trust_env=False) as client:
            while True:
                sample = await probe(client, target, timeout=10.0)
                if sample.ok:
                    return True, ""
                detail = sample.detail
                if time.monotonic() + delay > deadline:
                    return False, detail
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    # -- delete ---------------------------------------------------------------------------

    async def delete(self, names: Sequence[str] | None) -> DeployOutcome:
        """Delete endpoints of this environment (all when `names` is None) and their templates;
        the endpoints left get their tables without the deleted ones."""
        started = time.perf_counter()
        live = owned_live(self.where, await self.api.endpoints())
        targets = sorted(set(self.where.state.resources) | set(live)) if names is None else names
        try:
            await self.sweep_templates()
            results = await self._delete_many(targets, live)
            # The endpoints left no longer list the deleted ones in their tables.
            unset = await self._set_tables(live)
            results.extend(EndpointResult(n, "update", False, e) for n, e in sorted(unset.items()))
        finally:
            await self.save_state()
        self._check_state()
        return DeployOutcome(all(r.ok for r in results), tuple(results), elapsed_ms=_ms(started))

    async def _delete_many(
        self, names: Sequence[str], live: Mapping[str, Endpoint]
    ) -> list[EndpointResult]:
        return list(await asyncio.gather(*(self._delete_one(n, live.get(n)) for n in names)))

    async def _delete_one(self, name: str, live: Endpoint | None) -> EndpointResult:
        recorded = self.where.state.resources.get(name)
        async with self._limit:
            started = time.perf_counter()
            self._emit("endpoint", name=name, action="delete", state="removing")
            try:
                if live is not None:
                    await self._delete_endpoint(live.id)
            except RunPodError as exc:
                return self._ended(name, "delete", "error", error=str(exc))
            template = recorded.template_name if recorded is not None else None
            if template is None and live is not None and live.template is not None:
                template = live.template.name
            note = ""
            async with self._state_lock:
                self.where.state.resources.pop(name, None)
                self.where.state.provisioning.pop(name, None)
                self._deleted.add(name)
            if template and not await self._delete_template(template):
                # RunPod releases a template a while after its endpoint is gone: the endpoint
                # (what costs money) is deleted; the template is deleted by a later operation.
                async with self._state_lock:
                    self.where.state.leftover_templates.append(template)
                note = (
                    "its template is still held by RunPod; the next deploy or undeploy deletes it"
                )
            return self._ended(name, "delete", "removed", note=note, elapsed_ms=_ms(started))

    async def _delete_endpoint(self, endpoint_id: str) -> None:
        try:
            await self.api.delete_endpoint(endpoint_id)
        except GraphQLError:
            # Gone already (deleted in the console, or by a retry whose first try landed) is
            # what we wanted; anything else is a failure.
            if any(e.id == endpoint_id for e in await self.api.endpoints()):
                raise

    async def _delete_template(self, template: str, tries: int = _TEMPLATE_DELETE_TRIES) -> bool:
        """Delete a template by name; False when RunPod still holds it after `tries`."""
        delay = 0.2
        for attempt in range(tries):
            try:
                await self.api.delete_template(template)
                return True
            except GraphQLError as exc:
                text = str(exc).lower()
                if "not found" in text or "does not exist" in text:
                    return True  # already gone
            if attempt + 1 < tries:
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
        return False

    async def sweep_templates(self) -> list[str]:
        """Delete the templates earlier deletes had to leave; returns those still held."""
        left = list(self.where.state.leftover_templates)
        kept = [t for t in left if not await self._delete_template(t, tries=1)]
        self.where.state.leftover_templates = kept
        return kept

    async def save_state(self) -> None:
        """Write the state into the active build's manifest (also when cancelled midway)."""
        self._state_error = None
        build_id = self.where.build_id
        if build_id is None:
            return
        manifest = self.where.state.into_manifest(self.where.manifest)
        if manifest == self.where.manifest and self._recorded == build_id:
            # Nothing changed since this deployer wrote it: writing it whole again would only
            # undo what a mothership it started has written since.
            return
        # Shielded: Ctrl+C while deploying must not also lose the record of what was done.
        try:
            await asyncio.shield(self.api.update_manifest(build_id, manifest))
        except RunPodError as exc:
            # Raised by `_check_state` once the operation is over, not from a `finally` where
            # it would hide the error that got there.
            self._state_error = str(exc)
            return
        self.where.manifest = manifest
        self._recorded = build_id

    def _check_state(self) -> None:
        """Fail when the state could not be written (the endpoints themselves exist)."""
        if self._state_error is not None:
            raise RunPodError(
                f"the endpoints were changed, but their record was not written "
                f"({self._state_error}); the next deploy finds them by their environment"
            )


def mothership_env(config: RunPodConfig, spec: EndpointSpec, build_id: str) -> dict[str, str]:
    """What a mothership's template adds: the role, the build it reconciles, where RunPod's
    API is and the account key. The mothership is the one endpoint that manages others, so
    it is the one template that holds the key; its children never get it."""
    return {
        "FLASH_IS_MOTHERSHIP": "true",
        MOTHERSHIP_PLANE_ENV: "runpod",
        "FLASH_BUILD_ID": spec.code_hash or "",
        "FLASH_RUNPOD_BUILD_ID": build_id,
        "RUNPOD_API_KEY": config.api_key,
        "RUNPOD_API_BASE_URL": config.api_base,
        "RUNPOD_ENDPOINT_BASE_URL": config.endpoint_base,
        "FLASH_RUNPOD_LB_URL": config.lb_url_template,
    }


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
