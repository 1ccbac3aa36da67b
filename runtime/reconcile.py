"""Reconcile: what must change to go from the deployed resources to the local ones.

One pure function, shared by the engine (its deploy plan) and the mothership (its boot-time
provisioning), so both always agree on what "changed" means. Resources are compared by a hash
field of their entries (`config_hash` by default): upstream's provisioner does the same,
where a deployed entry without a hash counts as changed.

Input entries are plain dicts (manifest resource entries or deployed-endpoint records); the
function never mutates them. Output name lists are sorted, so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ManifestDiff", "reconcile"]


@dataclass(frozen=True)
class ManifestDiff:
    """Resource names by what must happen to them."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        """True when anything must be created, updated or removed."""
        return bool(self.new or self.changed or self.removed)

    def to_dict(self) -> dict[str, list[str]]:
        """JSON-ready form."""
        return {
            "new": list(self.new),
            "changed": list(self.changed),
            "removed": list(self.removed),
            "unchanged": list(self.unchanged),
        }


def _hash_field(name: str) -> Callable[[Mapping[str, Any]], Any]:
    def get(entry: Mapping[str, Any]) -> Any:
        return entry.get(name) if isinstance(entry, Mapping) else None

    return get


def reconcile(
    local_resources: Mapping[str, Mapping[str, Any]],
    deployed: Mapping[str, Mapping[str, Any]],
    *,
    hash_of: Callable[[Mapping[str, Any]], Any] | None = None,
    local_hash_of: Callable[[Mapping[str, Any]], Any] | None = None,
) -> ManifestDiff:
    """Diff `local_resources` against `deployed` (both: resource name -> entry).

    - new: in local, not deployed;
    - changed: in both, hashes differ, or either hash is missing (an unknown hash can never be
      proven equal, so it is safer to update than to keep a possibly stale endpoint);
    - unchanged: in both with equal, present hashes;
    - removed: deployed, no longer in local.

    `hash_of(entry)` reads the hash of a deployed entry (default: its `config_hash` key);
    `local_hash_of` the hash of a local entry (default: the same as `hash_of`).
    """
    deployed_hash = hash_of or _hash_field("config_hash")
    local_hash = local_hash_of or deployed_hash
    new: list[str] = []
    changed: list[str] = []
    unchanged: list[str] = []
    for name in sorted(local_resources):
        if name not in deployed:
            new.append(name)
            continue
        mine = local_hash(local_resources[name])
        theirs = deployed_hash(deployed[name])
        if mine is None or theirs is None or mine != theirs:
            changed.append(name)
        else:
            unchanged.append(name)
    removed = sorted(name for name in deployed if name not in local_resources)
    return ManifestDiff(new=new, changed=changed, removed=removed, unchanged=unchanged)
