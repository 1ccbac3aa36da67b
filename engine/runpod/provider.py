"""`RunPodProvider`: the RunPod Serverless target behind the engine's `Provider` interface.

Deploys to one environment (`--env`, default `production`) of a Flash app named after the
project's app key. Deployed endpoints are what the environment's recorded state and the live
endpoint list say together: a field changed in RunPod's console is read back into the config
(drift), an endpoint gone behind our back is `failed` (the plan recreates it), one created by a
deploy that was killed before recording it is found by its environment id and read back onto
the config its build was made with. A caller whose table of the other endpoints (their URLs
and keys, `FLASH_ENDPOINTS`) differs from what is deployed drifts, by endpoint name. Health and
invocations go to the queue API (`{endpoint base}/{id}`) or the LB host, with the endpoint's
own key (aiKey), never the account key.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from engine.app_environments import DEFAULT_ENVIRONMENT
from engine.build.images import image_name, python_version
from engine.home import Home
from engine.provider import (
    AppEnvironment,
    AppSummary,
    BuildRef,
    DeployedEndpoint,
    DeploymentEvent,
    DeployOrder,
    DeployOutcome,
    EndpointResult,
    EndpointSpec,
    EndpointTarget,
    EventCallback,
    ProviderError,
)
from engine.runpod.api import RunPodApi
from engine.runpod.config import ConfigError, RunPodConfig, load_config
from engine.runpod.cost import cost_notes
from engine.runpod.deploy import Deployer
from engine.runpod.environment import (
    Environment,
    endpoint_target,
    find_environment,
    owned_live,
    table_callers,
    table_peers,
)
from engine.runpod.graphql import GraphQLClient
from engine.runpod.shiphandler import with_mothership_handler
from engine.status import Status
from runtime.resources import config_hash
from runtime.runpod_endpoints import (
    FINGERPRINT_ENV,
    expected_tables,
    live_config,
    stale_entries,
    table_of,
)
from runtime.runpod_state import EnvState, ResourceState
from runtime.runpod_wire import Endpoint

__all__ = ["RunPodProvider"]

DEFAULT_HEALTH_WAIT = 120.0
_SEEN_FOR = 1.0  # seconds one look at the live endpoints answers repeated questions
HEALTH_WAIT_ENV = "FLASH_RUNPOD_HEALTH_WAIT"


def _health_wait(environ: Mapping[str, str] | None) -> float:
    """Seconds a deploy waits for each endpoint to answer healthy (`FLASH_RUNPOD_HEALTH_WAIT`;
    0: do not wait). A bad value is an error naming the variable."""
    raw = (os.environ if environ is None else environ).get(HEALTH_WAIT_ENV, "").strip()
    if not raw:
        return DEFAULT_HEALTH_WAIT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ProviderError(f"{HEALTH_WAIT_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


class RunPodProvider:
    """The RunPod target for one environment name; one instance per engine session."""

    name = "runpod"
    builds_environments = False

    def __init__(
        self,
        home: Home | None = None,
        *,
        env: str | None = None,
        environ: Mapping[str, str] | None = None,
        health_wait: float | None = None,
        request_timeout: float = 60.0,
    ) -> None:
        self.home = home
        self.env_name = env or DEFAULT_ENVIRONMENT
        self._environ = environ
        self.health_wait = _health_wait(environ) if health_wait is None else health_wait
        self.request_timeout = request_timeout
        self._config: RunPodConfig | None = None
        self._http: httpx.AsyncClient | None = None
        self._api: RunPodApi | None = None
        self._account: str | None = None
        self._seen: dict[str, tuple[float, Environment | None, dict[str, Endpoint]]] = {}

    def __repr__(self) -> str:
        return f"RunPodProvider(env={self.env_name!r})"

    # -- session --------------------------------------------------------------------------

    @property
    def config(self) -> RunPodConfig:
        """The target's config (key sources and URLs), read on first use."""
        if self._config is None:
            try:
                self._config = load_config(self._environ)
            except ConfigError as exc:
                raise ProviderError(str(exc)) from None
        return self._config

    @property
    def api(self) -> RunPodApi:
        """The typed GraphQL operations of this account."""
        if self._api is None:
            self._http = httpx.AsyncClient(trust_env=False)
            client = GraphQLClient(self.config, self._http, timeout=self.request_timeout)
            self._api = RunPodApi(client)
        return self._api

    @property
    def graphql_calls(self) -> int:
        """GraphQL requests sent so far (for benchmarks)."""
        return self._api.client.calls if self._api is not None else 0

    async def connect(self) -> str:
        """Check the key against the API; returns `runpod <env> (<account>)`."""
        self._account = await self.api.account()
        described = self.describe()
        assert described is not None
        return described

    def describe(self) -> str | None:
        """`runpod <env> (<account>)` once connected (the account's email or id, never the key)."""
        if self._account is None:
            return None
        return f"runpod {self.env_name} ({self._account})"

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._http is not None:
            await self._http.aclose()
        self._http, self._api = None, None

    async def _environment(self, app: str, *, create: bool = False) -> Environment | None:
        return await find_environment(self.api, app, self.env_name, create=create)

    async def _live(
        self, app: str, *, fresh: bool = False
    ) -> tuple[Environment | None, dict[str, Endpoint]]:
        # A status refresh lists the endpoints (`fresh`), then asks for each one's target: that
        # look at the API serves them for a moment (RunPod rate-limits); a change forgets it.
        now = time.monotonic()
        cached = self._seen.get(app)
        if not fresh and cached is not None and now - cached[0] < _SEEN_FOR:
            return cached[1], cached[2]
        where = await self._environment(app)
        live = owned_live(where, await self.api.endpoints()) if where is not None else {}
        self._seen[app] = (time.monotonic(), where, live)
        return where, live

    # -- reading --------------------------------------------------------------------------

    async def list_endpoints(self, app: str) -> list[DeployedEndpoint]:
        """The environment's endpoints: recorded state read against the live endpoints."""
        where, live = await self._live(app, fresh=True)
        if where is None:
            return []
        out: list[DeployedEndpoint] = []
        built = where.manifest.get("resources")
        built = built if isinstance(built, Mapping) else {}
        tables = expected_tables(
            table_peers(self.config, where, live), table_callers(where.manifest)
        )
        for name in sorted(set(where.state.resources) | set(live)):
            state = where.state.resources.get(name)
            found = live.get(name)
            if state is None and found is not None:
                deployed = self._adopted(name, found, built.get(name))
            else:
                deployed = self._deployed(name, state, found)
            recorded_role = state.role if state is not None else "endpoint"
            if found is not None and found.env is not None and name in tables:
                if recorded_role != "endpoint":
                    out.append(deployed)  # found through a mothership's `/manifest`: no table
                    continue
                # A deploy killed between the endpoint saves and the table writes leaves a
                # caller with a table of endpoints that moved, vanished or never got in.
                stale = stale_entries(table_of(found.env), tables[name])
                deployed = replace(deployed, stale_table=stale)
            out.append(deployed)
        return out

    def _adopted(self, name: str, live: Endpoint, entry: Any) -> DeployedEndpoint:
        """An endpoint a killed deploy created without recording it: the live endpoint read
        back onto the config the environment's active build was made with, so what the API
        shows decides the drift."""
        load_balanced = (live.type or "").upper() == "LB"
        resource_type = live.env_value("FLASH_RESOURCE_TYPE") or ""
        built = entry.get("config") if isinstance(entry, Mapping) else None
        adopted = DeployedEndpoint(
            name=name,
            resource_type=resource_type,
            is_load_balanced=load_balanced,
            status=Status.DEPLOYING,
            url=endpoint_target(self.config, name, live, load_balanced).base_url,
            last_error="not recorded by the deploy that created it",
        )
        if not resource_type or not isinstance(built, Mapping):
            return adopted  # nothing says what it was made from: deploying again settles it
        return self._read_back(replace(adopted, config=dict(built)), live)

    def _deployed(
        self, name: str, state: ResourceState | None, live: Endpoint | None
    ) -> DeployedEndpoint:
        assert state is not None
        recorded = DeployedEndpoint(
            name=name,
            resource_type=state.resource_type,
            is_load_balanced=state.is_load_balanced,
            status=Status.FAILED,
            config=dict(state.config),
            config_hash=state.config_hash,
            code_hash=state.code_hash,
            build_id=state.build_id,
            url=state.url,
            updated_at=state.deployed_at,
            last_error="the endpoint no longer exists on RunPod",
            role=state.role,
            mothership=state.mothership,
            environment=self.env_name,
        )
        return recorded if live is None else self._read_back(recorded, live)

    def _read_back(self, recorded: DeployedEndpoint, live: Endpoint) -> DeployedEndpoint:
        """A live endpoint read back onto the config it was recorded (or built) with, so a
        field changed in RunPod's console shows as drift. The recorded hash stays while nothing
        changed; without one (an adopted endpoint) it is always recomputed."""
        config, changed = live_config(recorded.resource_type, recorded.config, live)
        digest = recorded.config_hash
        if changed or digest is None:
            try:
                digest = config_hash(recorded.resource_type, config)
            except (ValueError, KeyError):
                digest = None
        return replace(
            recorded,
            status=Status.HEALTHY,
            config=config,
            config_hash=digest,
            code_hash=live.env_value(FINGERPRINT_ENV) or recorded.code_hash,
            url=endpoint_target(
                self.config, recorded.name, live, recorded.is_load_balanced
            ).base_url,
            last_error=None,
        )

    def environment_name(self, mothership: bool) -> str:
        """The environment every deploy of this provider records (`--env`)."""
        return self.env_name

    async def environment_state(
        self, app: str, environment: str | None
    ) -> dict[str, dict[str, Any]]:
        """A mothership's per-resource provisioning in the environment's persisted manifest."""
        where = await find_environment(self.api, app, environment or self.env_name, create=False)
        if where is None:
            return {}
        return {n: dict(e) for n, e in where.state.provisioning.items()}

    async def environments(self, app: str) -> list[AppEnvironment]:
        """The Flash app's environments (one `flashAppByName`), each with the mothership its
        active build's state records (one `flashBuild` per environment that has a build)."""
        flash_app = await self.api.app_by_name(app)
        if flash_app is None:
            return []
        out: list[AppEnvironment] = []
        for environment in sorted(flash_app.flashEnvironments, key=lambda e: e.name):
            mothership = None
            if environment.activeBuildId:
                build = await self.api.build(environment.activeBuildId)
                state = EnvState.from_manifest(build.manifest if build is not None else None)
                mothership = next(
                    (n for n, r in sorted(state.resources.items()) if r.role == "mothership"),
                    None,
                )
            out.append(AppEnvironment(environment.name, mothership))
        return out

    async def apps(self) -> list[AppSummary]:
        """RunPod apps carry no project path, so no app is an older version's: none."""
        return []

    async def isolation(self) -> str | None:
        """RunPod runs each worker in its own container: not ours to report."""
        return None

    async def target(self, app: str, name: str) -> EndpointTarget:
        """URL and endpoint-scoped key of a deployed endpoint."""
        where, live = await self._live(app)
        endpoint = live.get(name)
        if where is None or endpoint is None:
            raise ProviderError(f"endpoint {name!r} is not deployed to RunPod ({self.env_name})")
        state = where.state.resources.get(name)
        load_balanced = (
            state.is_load_balanced if state is not None else (endpoint.type or "") == "LB"
        )
        return endpoint_target(self.config, name, endpoint, load_balanced)

    async def events(self, app: str, since: int = 0) -> list[DeploymentEvent]:
        """RunPod keeps no deployment event log for us: none."""
        return []

    async def costs(self, local: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        """A note per endpoint that never scales to zero, with its hourly price."""
        return await cost_notes(self.api, local)

    # -- changing -------------------------------------------------------------------------

    def _deployer(
        self,
        where: Environment,
        on_event: EventCallback | None,
        cancel: asyncio.Event | None = None,
    ) -> Deployer:
        assert self._http is not None
        return Deployer(
            self.config,
            self.api,
            self._http,
            where,
            self.env_name,
            on_event=on_event,
            health_wait=self.health_wait,
            cancel=cancel or asyncio.Event(),
        )

    async def deploy(self, order: DeployOrder) -> DeployOutcome:
        """Upload the build to the environment, then create/update the specs, delete
        `order.remove`; once `order.cancel` is set, endpoints not saved yet are left as they are."""
        self._seen.clear()
        try:
            where = await self._environment(order.app, create=True)
            assert where is not None
            with tempfile.TemporaryDirectory(prefix="flash-mothership-") as scratch:
                build = order.build
                specs = [self._as_generated(s, build) for s in order.specs]
                for spec in specs:
                    if spec.role == "mothership":
                        build = with_mothership_handler(
                            build, spec.name, spec.resource_type, Path(scratch)
                        )
                deployer = self._deployer(where, order.on_event, order.cancel)
                return await deployer.deploy(specs, build, order.remove)
        finally:
            self._seen.clear()

    @staticmethod
    def _as_generated(spec: EndpointSpec, build: BuildRef) -> EndpointSpec:
        """A generated mothership (no resource of the build) with the config RunPod needs: its
        name, and one worker, so two copies never reconcile at once."""
        if spec.role != "mothership" or spec.name in (build.manifest.get("resources") or {}):
            return spec
        image = image_name({"resource_type": spec.resource_type}, python_version())
        config = {
            "name": spec.name,
            "imageName": image,
            "workersMin": 0,
            "workersMax": 1,
            **spec.config,
        }
        return spec.model_copy(update={"config": config})

    async def restart(
        self, app: str, name: str, *, on_event: EventCallback | None = None
    ) -> EndpointResult:
        """Not available: RunPod's API has no call that restarts an endpoint's workers."""
        raise ProviderError(
            f"restart is not available on RunPod: its API cannot restart {name}'s workers"
            " (they are RunPod's to start and stop)"
        )

    async def delete(
        self, app: str, names: Sequence[str] | None, *, on_event: EventCallback | None = None
    ) -> DeployOutcome:
        """Delete endpoints (all of the environment when `names` is None) and their templates."""
        self._seen.clear()
        try:
            where = await self._environment(app)
            if where is None:
                return DeployOutcome(True, ())
            return await self._deployer(where, on_event).delete(names)
        finally:
            self._seen.clear()

    async def sweep_templates(self, app: str) -> list[str]:
        """Delete templates RunPod held when their endpoint was deleted; returns those it
        still holds (deploy and undeploy also do this first)."""
        self._seen.clear()
        where = await self._environment(app)
        if where is None or not where.state.leftover_templates:
            return []
        deployer = self._deployer(where, None)
        left = await deployer.sweep_templates()
        await deployer.save_state()
        return left

    # -- logs -----------------------------------------------------------------------------

    async def read_logs(self, app: str, name: str, lines: int = 200) -> list[str]:
        """Recent log lines of every worker of the endpoint (REST v2 worker logs)."""
        from engine.runpod import logs

        endpoint_id = await self._endpoint_id(app, name)
        assert self._http is not None
        return await logs.read_logs(
            self._http, self.config.api_base, self.config.api_key, endpoint_id, lines
        )

    async def follow_logs(
        self, app: str, name: str, lines: int = 50, marks: bool = False
    ) -> AsyncIterator[str | float]:
        """History, then live lines of the endpoint's workers (SSE)."""
        from engine.runpod import logs

        endpoint_id = await self._endpoint_id(app, name)
        assert self._http is not None
        async for line in logs.follow_logs(
            self._http, self.config.api_base, self.config.api_key, endpoint_id, lines, marks=marks
        ):
            yield line

    async def _endpoint_id(self, app: str, name: str) -> str:
        _where, live = await self._live(app)
        endpoint = live.get(name)
        if endpoint is None:
            raise ProviderError(f"endpoint {name!r} is not deployed to RunPod ({self.env_name})")
        return endpoint.id
