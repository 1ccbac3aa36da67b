"""What this target records about an environment, inside its persisted build manifest.

The environment's active build carries a mutable manifest (`updateFlashBuildManifest`). Next to
the build's own keys it holds what is deployed: `resources_endpoints` `{name: url}` (what
deployed workers resolve each other through, as upstream's), per resource in code
`endpoint_id`/`endpoint_url`/`aiKey` (upstream's keys; the aiKey is the endpoint-scoped key
deployed workers call it with), and under `deployments` one `ResourceState` per deployed
endpoint, also those no longer in code, which is what plan, status and undeploy read. Under
`templates_to_delete`: the templates RunPod still held when their endpoint was deleted (it
releases them late), deleted by a later operation. A new build starts from the previous
build's state, so nothing is forgotten when the active build changes. Under `provisioning`: a
mothership's state manager, one entry per resource (`role`, `status`, `config_hash`,
`code_hash`, `endpoint_url`, `error`) as `runtime.mothership` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["LEFTOVERS_KEY", "PROVISIONING_KEY", "STATE_KEY", "EnvState", "ResourceState"]

STATE_KEY = "deployments"
LEFTOVERS_KEY = "templates_to_delete"
PROVISIONING_KEY = "provisioning"


class ResourceState(BaseModel):
    """One deployed endpoint as recorded at its last deploy."""

    model_config = ConfigDict(extra="ignore")

    endpoint_id: str
    resource_type: str
    is_load_balanced: bool = False
    template_id: str | None = None
    template_name: str | None = None
    image: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    config_hash: str | None = None
    code_hash: str | None = None
    build_id: str | None = None
    url: str | None = None
    # The endpoint-scoped key deployed workers call this endpoint with (upstream keeps it in
    # the same place); never the account key.
    ai_key: str | None = Field(default=None, repr=False)
    deployed_at: float | None = None
    # `endpoint` (deployed by the engine), `mothership`, or `child` of the mothership named.
    role: str = "endpoint"
    mothership: str | None = None


class EnvState(BaseModel):
    """Every recorded endpoint of one environment, by resource name."""

    resources: dict[str, ResourceState] = Field(default_factory=dict)
    # Templates of deleted endpoints that RunPod still held then (it releases them late).
    leftover_templates: list[str] = Field(default_factory=list)
    # A mothership's per-resource provisioning (its state manager), carried from build to build.
    provisioning: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any] | None) -> EnvState:
        """The state kept in a build manifest (empty when there is none or it is unreadable)."""
        raw = (manifest or {}).get(STATE_KEY)
        out: dict[str, ResourceState] = {}
        if isinstance(raw, Mapping):
            for name, entry in raw.items():
                try:
                    out[str(name)] = ResourceState.model_validate(entry)
                except ValidationError:
                    continue  # a damaged entry is dropped; the live list still finds the endpoint
        leftovers = (manifest or {}).get(LEFTOVERS_KEY)
        kept = [str(t) for t in leftovers] if isinstance(leftovers, list) else []
        raw_provisioning = (manifest or {}).get(PROVISIONING_KEY)
        provisioning = {
            str(n): dict(e)
            for n, e in (raw_provisioning if isinstance(raw_provisioning, Mapping) else {}).items()
            if isinstance(e, Mapping)
        }
        return cls(resources=out, leftover_templates=kept, provisioning=provisioning)

    def into_manifest(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """`manifest` with this state written in (upstream's keys and ours)."""
        out = dict(manifest)
        out[STATE_KEY] = {n: s.model_dump() for n, s in sorted(self.resources.items())}
        out[LEFTOVERS_KEY] = list(self.leftover_templates)
        out[PROVISIONING_KEY] = {n: dict(e) for n, e in sorted(self.provisioning.items())}
        out["resources_endpoints"] = {
            n: s.url for n, s in sorted(self.resources.items()) if s.url is not None
        }
        resources = out.get("resources")
        if isinstance(resources, Mapping):
            merged: dict[str, Any] = {}
            for name, entry in resources.items():
                item = dict(entry) if isinstance(entry, Mapping) else {}
                for key in ("endpoint_id", "endpoint_url", "aiKey"):
                    item.pop(key, None)
                state = self.resources.get(str(name))
                if state is not None:
                    item["endpoint_id"] = state.endpoint_id
                    item["endpoint_url"] = state.url
                    if state.ai_key:
                        item["aiKey"] = state.ai_key
                merged[str(name)] = item
            out["resources"] = merged
        return out
