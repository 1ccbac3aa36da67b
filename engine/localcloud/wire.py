"""The local cloud's wire protocol: the request and event shapes its HTTP API speaks.

One definition per message for both ends: the provider builds a `DeployRequest`, the client
sends it and parses the NDJSON stream into `DeployEvent`s, the service validates the body into
the same model, and the supervisor emits `DeployEvent`s; every other answer of the API
(`ServiceHealth`, `AppList`, `EventList`, ...) is built by the service from the model the client
parses it with. Field names are the JSON names on the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

# The engine's deploy spec is also the wire's: a provider-neutral frozen model.
from engine.provider import EndpointSpec

__all__ = [
    "Ack",
    "AppList",
    "AppRecord",
    "BuildList",
    "BuildRecord",
    "BuildSpec",
    "DeployEvent",
    "DeployRequest",
    "EndpointKey",
    "EndpointList",
    "EndpointRecord",
    "EndpointSpec",
    "EventList",
    "EventRecord",
    "FollowItem",
    "LogTail",
    "PersistedManifest",
    "ResourceEntry",
    "ResultRecord",
    "ServiceHealth",
    "ShutdownReply",
    "ShutdownRequest",
    "UndeployRequest",
    "WorkerIsolation",
    "WorkerIsolationList",
    "problem",
]


def problem(error: ValidationError) -> str:
    """The first thing wrong with a message, naming its field and never echoing its value:
    `endpoints.0.name: Field required` (`body` when the message as a whole is wrong)."""
    problems = error.errors(include_url=False, include_input=False)
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{where}: {first['msg']}{more}"


class BuildSpec(BaseModel):
    """The build a deploy ships: its id (archive SHA-256), archive, build dir and manifest."""

    build_id: str | None = None
    archive: str | None = None
    build_dir: str | None = None
    manifest: dict[str, Any] | None = None


class DeployRequest(BaseModel):
    """Body of `POST /v1/apps/{app}/deploy`: what to create/update and remove, from which build."""

    endpoints: list[EndpointSpec] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)
    build: BuildSpec = Field(default_factory=BuildSpec)
    project_path: str | None = None
    environment: str = "local"
    force: bool = False
    ready_timeout: float | None = None


class UndeployRequest(BaseModel):
    """Body of `POST /v1/apps/{app}/undeploy`: the endpoints to remove (all when null)."""

    names: list[str] | None = None


class ResultRecord(BaseModel):
    """What a deploy/undeploy did to one endpoint, in the `results` of its last event.

    `error` only when it failed; `elapsed_ms` and `url` when the service measured or knows them.
    """

    name: str
    action: str
    ok: bool
    elapsed_ms: float | None = None
    url: str | None = None
    error: str | None = None

    def said(self, emit: Callable[[DeployEvent], None]) -> dict[str, Any]:
        """Emit the stream's `endpoint` event for this result (`healthy`, or `error` with why)
        and return the result's wire form for the operation's last event."""
        fields = self.model_dump(exclude_none=True)
        del fields["ok"]
        emit(DeployEvent(type="endpoint", state="healthy" if self.ok else "error", **fields))
        return self.model_dump(exclude_none=True)


class DeployEvent(BaseModel):
    """One line of a deploy/undeploy NDJSON stream.

    `type` is `locked`, `build`, `endpoint`, `result` (the last line) or `error`. Only the
    fields an event sets go on the wire (`to_json`), so each kind keeps its own small shape.
    """

    type: str
    app: str | None = None
    name: str | None = None
    action: str | None = None
    state: str | None = None
    build_id: str | None = None
    url: str | None = None
    message: str | None = None
    error: str | None = None
    elapsed_ms: float | None = None
    ok: bool | None = None
    results: list[ResultRecord] | None = None
    # On a deploy's `result`: it was cancelled mid-way (see Deploys.cancel).
    cancelled: bool | None = None

    def to_json(self) -> str:
        """The event's NDJSON line (without the newline): the fields it set, nothing more."""
        return self.model_dump_json(exclude_unset=True)


class EndpointRecord(BaseModel):
    """One endpoint as `GET /v1/apps/{app}/endpoints[/{name}]` returns it (never its key).

    Extra columns a newer service sends are kept, so an older client still reads the record.
    """

    model_config = ConfigDict(extra="allow")

    app: str | None = None
    name: str
    resource_type: str | None = None
    is_load_balanced: bool = False
    config: dict[str, Any] | None = None
    config_hash: str | None = None
    code_hash: str | None = None
    build_id: str | None = None
    build_path: str | None = None
    status: str | None = None
    url: str | None = None
    port: int | None = None
    pid: int | None = None
    pid_started: float | None = None
    restarts: int | None = 0
    crash_times: list[float] = Field(default_factory=list)
    last_error: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    started_at: float | None = None
    python: str | None = None
    role: str = "endpoint"
    mothership: str | None = None
    environment: str | None = None


class EndpointList(BaseModel):
    """Answer of `GET /v1/apps/{app}/endpoints`."""

    endpoints: list[EndpointRecord]


class EndpointKey(BaseModel):
    """Answer of `GET /v1/apps/{app}/endpoints/{name}/key`: the only one with a key in it."""

    key: str = Field(repr=False)


class ServiceHealth(BaseModel):
    """Answer of `GET /v1/health`: the service's pid, version, uptime and live workers."""

    ok: bool
    pid: int
    version: str
    started_at: float
    uptime_s: float
    workers: int
    # What keeps a worker's code from the home: `landlock-vN`, or `none` (see runtime.sandbox).
    isolation: str = "none"


class WorkerIsolation(BaseModel):
    """What one running worker says it applied: `landlock-vN`, `none`, or `unknown` when its
    `/ping` did not say (not answering, or a worker of an older version)."""

    app: str
    name: str
    pid: int
    isolation: str


class WorkerIsolationList(BaseModel):
    """Answer of `GET /v1/workers/isolation`: each running worker's own word, and what a
    worker started now would get (`default`, from the service's environment)."""

    default: str
    workers: list[WorkerIsolation]


class ShutdownRequest(BaseModel):
    """Body of `POST /v1/shutdown` (optional): whether the workers stop with the service."""

    stop_workers: bool = True


class ShutdownReply(BaseModel):
    """Answer of `POST /v1/shutdown`, sent before the service starts closing."""

    ok: bool
    stop_workers: bool


class AppRecord(BaseModel):
    """One app as `GET /v1/apps` lists it, with the number of its endpoints."""

    name: str
    project_path: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    endpoints: int = 0


class AppList(BaseModel):
    """Answer of `GET /v1/apps`."""

    apps: list[AppRecord]


class EnvironmentRecord(BaseModel):
    """One environment of an app: its name and the mothership deployed to it (None: none)."""

    name: str
    mothership: str | None = None


class EnvironmentList(BaseModel):
    """Answer of `GET /v1/apps/{app}/environments`."""

    environments: list[EnvironmentRecord]


class LogTail(BaseModel):
    """Answer of `GET /v1/apps/{app}/endpoints/{name}/logs`: its last lines, keys redacted."""

    endpoint: str
    lines: list[str]


class FollowItem(BaseModel):
    """One NDJSON line of a log follow: a log `line`, an `upto` mark or a `heartbeat`.

    A line sets exactly one of them (`to_json` sends only that one).
    """

    line: str | None = None
    upto: float | None = None
    heartbeat: bool | None = None

    def to_json(self) -> str:
        """The item's NDJSON line (without the newline)."""
        return self.model_dump_json(exclude_unset=True)


class EventRecord(BaseModel):
    """One entry of the append-only event log; `data` holds the details some kinds carry."""

    id: int
    at: float
    app: str | None = None
    endpoint: str | None = None
    kind: str
    message: str = ""
    data: dict[str, Any] | None = None


class EventList(BaseModel):
    """Answer of `GET /v1/apps/{app}/events`, oldest first."""

    events: list[EventRecord]


class BuildRecord(BaseModel):
    """One immutable build copy of an app (without its manifest)."""

    app: str
    build_id: str
    source: str | None = None
    path: str
    created_at: float


class BuildList(BaseModel):
    """Answer of `GET /v1/apps/{app}/builds`, newest first."""

    builds: list[BuildRecord]


class PersistedManifest(BaseModel):
    """The state manager's manifest of an app's environment: the upstream manifest format.

    Only `resources` is read here (one upstream entry per deployed endpoint, kept as the
    upstream JSON has it); every other top-level key is kept as sent.
    """

    model_config = ConfigDict(extra="allow")

    resources: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ResourceEntry(RootModel[dict[str, Any]]):
    """Body of a manifest resource PATCH: fields of the upstream entry to merge in."""


class Ack(BaseModel):
    """Answer of a request that only needs to say it was done."""

    ok: bool = True


class CancelReply(BaseModel):
    """Answer to a deploy's cancel: `cancelled` is False when no deploy of the app was running."""

    cancelled: bool
