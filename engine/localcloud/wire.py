"""The local cloud's wire protocol: the request and event shapes its HTTP API speaks.

One definition for both ends: the provider builds a `DeployRequest`, the client sends it and
parses the NDJSON stream into `DeployEvent`s, the service validates the body into the same
model, and the supervisor emits `DeployEvent`s. Field names are the JSON names on the wire.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BuildSpec",
    "DeployEvent",
    "DeployRequest",
    "EndpointRecord",
    "EndpointSpec",
    "UndeployRequest",
]


class EndpointSpec(BaseModel):
    """One endpoint as the engine wants it deployed (from the manifest)."""

    model_config = ConfigDict(frozen=True)

    name: str
    resource_type: str = ""
    is_load_balanced: bool = False
    config: dict[str, Any] = Field(default_factory=dict)
    config_hash: str | None = None
    code_hash: str | None = None


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
    results: list[dict[str, Any]] | None = None

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
