"""A deploy request as the local cloud service receives it: endpoints, removals and the build."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeployRequest", "EndpointSpec"]


@dataclass
class EndpointSpec:
    """One endpoint as the engine wants it deployed."""

    name: str
    resource_type: str
    is_load_balanced: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str | None = None
    code_hash: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EndpointSpec:
        """From the JSON body of a deploy request."""
        return cls(
            name=str(data["name"]),
            resource_type=str(data.get("resource_type") or ""),
            is_load_balanced=bool(data.get("is_load_balanced")),
            config=dict(data.get("config") or {}),
            config_hash=data.get("config_hash"),
            code_hash=data.get("code_hash"),
        )


@dataclass
class DeployRequest:
    """What to deploy (create/update) and remove for one app, from which build."""

    app: str
    endpoints: list[EndpointSpec]
    remove: list[str] = field(default_factory=list)
    build_id: str | None = None
    archive: str | None = None
    build_dir: str | None = None
    manifest: dict[str, Any] | None = None
    project_path: str | None = None
    environment: str = "local"
    force: bool = False
    ready_timeout: float | None = None

    @classmethod
    def from_dict(cls, app: str, data: dict[str, Any]) -> DeployRequest:
        """From the JSON body of a deploy request."""
        build = data.get("build") or {}
        return cls(
            app=app,
            endpoints=[EndpointSpec.from_dict(e) for e in data.get("endpoints") or []],
            remove=[str(n) for n in data.get("remove") or []],
            build_id=build.get("build_id"),
            archive=build.get("archive"),
            build_dir=build.get("build_dir"),
            manifest=build.get("manifest"),
            project_path=data.get("project_path"),
            environment=str(data.get("environment") or "local"),
            force=bool(data.get("force")),
            ready_timeout=data.get("ready_timeout"),
        )
