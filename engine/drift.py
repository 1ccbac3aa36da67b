"""Drift: how each endpoint's config in code compares with what is deployed.

Per endpoint, one of:

- `new`       in code, not deployed;
- `in_sync`   deployed with the same config hash;
- `drifted`   deployed with a different config or different code; `fields` lists (field,
              deployed, local) with nested `env` keys reported as `env.KEY`; a change of the
              code alone is field `code` (deployed and local code fingerprints, shortened);
- `orphaned`  deployed, no longer in code;
- `unparsable` deployed, not found in code because a source file does not parse (its code
              still exists): `reason` says which file and line; never to be deleted;
- `unknown`   the config in code is not statically resolvable; `unresolved` names the fields.

Entries are plain mappings: a local one is a manifest resource entry (`resource_type`, `config`,
`config_hash`, `unresolved`, `code_hash`), a deployed one any record with `resource_type`,
`config`, `config_hash`, `code_hash` and optionally `stale_table` (names). Field diffs are
computed on canonical configs (defaults filled in, enums by name, see `runtime.confighash`),
so writing a default explicitly is not reported as a change. This is the one drift
computation: plan, status, the CLI and the TUI all read it. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "CODE_FIELD",
    "DRIFT_STATES",
    "TABLE_FIELD",
    "Drift",
    "DriftState",
    "FieldDiff",
    "compute_drift",
    "diff_configs",
    "drift_of",
    "is_unresolved",
    "unparsable_reason",
]

DriftState = Literal["new", "in_sync", "drifted", "orphaned", "unparsable", "unknown"]
DRIFT_STATES: tuple[str, ...] = ("new", "in_sync", "drifted", "orphaned", "unparsable", "unknown")

_UNRESOLVED_KEY = "$unresolved"
CODE_FIELD = "code"
TABLE_FIELD = "endpoint_table"
_FINGERPRINT = 12  # characters of a code hash shown in a diff row


@dataclass(frozen=True)
class FieldDiff:
    """One differing field: its dotted name, the deployed value and the local value.

    A value absent on one side is None there (canonical configs drop None values, so None
    never stands for a real setting).
    """

    field: str
    deployed: Any
    local: Any

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"field": self.field, "deployed": self.deployed, "local": self.local}


@dataclass(frozen=True)
class Drift:
    """The drift of one endpoint."""

    name: str
    state: DriftState
    resource_type: str | None = None
    fields: tuple[FieldDiff, ...] = ()
    unresolved: tuple[str, ...] = ()
    reason: str = ""

    @property
    def code_changed(self) -> bool:
        """True when the endpoint's code differs from the deployed code."""
        return any(f.field == CODE_FIELD for f in self.fields)

    @property
    def config_changed(self) -> bool:
        """True when a config field (not the code, not the table) differs from the deployed one."""
        return any(f.field not in (CODE_FIELD, TABLE_FIELD) for f in self.fields)

    @property
    def table_stale(self) -> str | None:
        """`out of date: a, b` when the deployed endpoint table is out of date, else None."""
        return next((str(f.deployed) for f in self.fields if f.field == TABLE_FIELD), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "state": self.state,
            "resource_type": self.resource_type,
            "fields": [f.to_dict() for f in self.fields],
            "unresolved": list(self.unresolved),
            "reason": self.reason,
        }


def is_unresolved(value: Any) -> bool:
    """True for the scanner's marker of a statically unresolvable value."""
    return isinstance(value, Mapping) and _UNRESOLVED_KEY in value


def _unresolved_fields(entry: Mapping[str, Any]) -> list[str]:
    names = [str(n) for n in entry.get("unresolved") or []]
    config = entry.get("config")
    if isinstance(config, Mapping):
        names.extend(str(k) for k, v in config.items() if is_unresolved(v) and str(k) not in names)
    return names


def _canonical(resource_type: str | None, config: Any) -> dict[str, Any]:
    """Canonical config when it validates; otherwise the raw dict without unresolved values."""
    raw = dict(config) if isinstance(config, Mapping) else {}
    raw = {k: v for k, v in raw.items() if not is_unresolved(v)}
    if resource_type:
        # Lazily: the models cost a warm deploy whose plan has no config to compare.
        from runtime.resources import canonical_config

        try:
            return canonical_config(resource_type, raw)
        except (ValueError, KeyError, TypeError):
            pass  # an invalid config still gets a (raw) diff rather than none
    return {k: v for k, v in raw.items() if v is not None}


def diff_configs(
    deployed: Mapping[str, Any],
    local: Mapping[str, Any],
    *,
    deployed_type: str | None = None,
    local_type: str | None = None,
) -> list[FieldDiff]:
    """Field-level differences between two configs, sorted by field name.

    With resource types given, both sides are canonicalised first. `env` is compared key by
    key (`env.KEY`); other values (lists, nested models) are compared as a whole.
    """
    before = _canonical(deployed_type, deployed) if deployed_type else dict(deployed)
    after = _canonical(local_type, local) if local_type else dict(local)
    diffs: list[FieldDiff] = []
    if deployed_type and local_type and deployed_type != local_type:
        diffs.append(FieldDiff("resource_type", deployed_type, local_type))
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if key == "env" and isinstance(old or {}, Mapping) and isinstance(new or {}, Mapping):
            old_env, new_env = dict(old or {}), dict(new or {})
            for env_key in sorted(set(old_env) | set(new_env)):
                if old_env.get(env_key) != new_env.get(env_key):
                    diffs.append(
                        FieldDiff(f"env.{env_key}", old_env.get(env_key), new_env.get(env_key))
                    )
            continue
        if old != new:
            diffs.append(FieldDiff(key, old, new))
    return diffs


def _short(code_hash: Any) -> Any:
    return code_hash[:_FINGERPRINT] if isinstance(code_hash, str) else code_hash


def _code_diff(local: Mapping[str, Any], deployed: Mapping[str, Any]) -> list[FieldDiff]:
    mine, theirs = local.get("code_hash"), deployed.get("code_hash")
    if mine is None or theirs is None or mine == theirs:
        return []  # an unknown fingerprint on either side is not evidence of a change
    return [FieldDiff(CODE_FIELD, _short(theirs), _short(mine))]


def _table_diff(deployed: Mapping[str, Any]) -> list[FieldDiff]:
    stale = tuple(str(n) for n in deployed.get("stale_table") or ())
    if not stale:
        return []
    # Names only: the table's values are URLs and endpoint keys.
    return [FieldDiff(TABLE_FIELD, f"out of date: {', '.join(stale)}", "up to date")]


def unparsable_reason(
    deployed_file: str | None, parse_errors: Mapping[str, int] | None
) -> str | None:
    """Why a deployed endpoint missing from the code may still exist there, or None.

    `parse_errors` maps each source file that does not parse to its error line;
    `deployed_file` is the file that defined the endpoint when it was last built, if known.
    Missing from the code while some file does not parse, it may be defined there: that is
    not `orphaned`.
    """
    if not parse_errors:
        return None
    if deployed_file in parse_errors:
        return f"source does not parse: {deployed_file}:{parse_errors[deployed_file]}"
    where = ", ".join(f"{f}:{line}" for f, line in sorted(parse_errors.items()))
    return f"not found in code, and source does not parse: {where}"


def drift_of(
    name: str,
    local: Mapping[str, Any] | None,
    deployed: Mapping[str, Any] | None,
    *,
    unparsable: str | None = None,
) -> Drift:
    """The drift of endpoint `name` from its local entry and its deployed record (either None).

    `unparsable`: the reason (see `unparsable_reason`) why a deployed endpoint missing from
    the code may still be defined in a file that does not parse.
    """
    if local is None and deployed is None:
        raise ValueError(f"endpoint {name!r}: neither in code nor deployed")
    if local is None:
        assert deployed is not None
        if unparsable:
            return Drift(name, "unparsable", deployed.get("resource_type"), reason=unparsable)
        return Drift(name, "orphaned", deployed.get("resource_type"), reason="no longer in code")
    local_type = local.get("resource_type")
    unresolved = _unresolved_fields(local)
    if unresolved:
        return Drift(name, "unknown", local_type, unresolved=tuple(unresolved))
    if deployed is None:
        return Drift(name, "new", local_type)
    local_hash = local.get("config_hash")
    deployed_hash = deployed.get("config_hash")
    deployed_type = deployed.get("resource_type")
    code = _code_diff(local, deployed)
    table = _table_diff(deployed)
    if local_hash is not None and local_hash == deployed_hash and local_type == deployed_type:
        if code or table:
            return Drift(name, "drifted", local_type, fields=tuple(code + table))
        return Drift(name, "in_sync", local_type)
    fields = diff_configs(
        deployed.get("config") or {},
        local.get("config") or {},
        deployed_type=deployed_type,
        local_type=local_type,
    )
    if not fields and local_hash is not None and deployed_hash is not None:
        # Same canonical config under a different hash: the hashing itself changed (e.g. a
        # new SDK version). Say so instead of reporting an unexplained drift.
        fields = [FieldDiff("config_hash", deployed_hash, local_hash)]
    # The code fingerprint covers the files that define the endpoint, its config's file
    # included: with the config changed, a different fingerprint proves nothing more, so the
    # code row is only shown when it is the whole story.
    return Drift(name, "drifted", local_type, fields=tuple(fields + table))


def compute_drift(
    local_resources: Mapping[str, Mapping[str, Any]],
    deployed: Mapping[str, Mapping[str, Any]],
    *,
    parse_errors: Mapping[str, int] | None = None,
    deployed_files: Mapping[str, str] | None = None,
) -> dict[str, Drift]:
    """Drift of every endpoint in code or deployed, keyed and ordered by name.

    `parse_errors`: source files that do not parse (file -> line); `deployed_files`: the file
    that defined each deployed endpoint when last built (see `unparsable_reason`).
    """
    files = deployed_files or {}
    out: dict[str, Drift] = {}
    for name in sorted(set(local_resources) | set(deployed)):
        here = local_resources.get(name)
        reason = None if here is not None else unparsable_reason(files.get(name), parse_errors)
        out[name] = drift_of(name, here, deployed.get(name), unparsable=reason)
    return out
