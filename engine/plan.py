"""The deploy plan: what a deploy would create, update, delete or leave alone.

Built from the project's manifest (local resources) and the provider's deployed endpoints with
`runtime.reconcile.reconcile` (the same function the mothership uses) for what is new or gone,
and `engine.drift` (the one drift computation, shared with `status`) for what changed: an
endpoint is updated when its drift is `drifted`, i.e. its config or its code changed, or the
table of the other endpoints it was deployed with is out of date. Each
resource gets a `code_hash`, the SHA-256 of the source files that define it (its config's file
and its functions' files, from the manifest): editing a function's body redeploys its endpoint
only; a change in a helper module those files import is not seen (use `deploy --force`).
An endpoint that is not running (stopped, failed) is updated too: deploying brings it back.

A deployed endpoint missing from the code while a source file does not parse (drift
`unparsable`) is never deleted: its code still exists.

An endpoint whose config is not statically resolvable (drift `unknown`) is created when absent
and otherwise left unchanged, with a note: its hash cannot be compared, and updating it on
every deploy would be worse than keeping it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.callgraph import CallGraph
from engine.drift import Drift, FieldDiff, compute_drift
from engine.status import RUNNING
from runtime.confighash import code_hash
from runtime.reconcile import reconcile

__all__ = [
    "PLAN_ACTIONS",
    "PLAN_MARKS",
    "Plan",
    "PlanAction",
    "PlanItem",
    "PlanWarning",
    "code_hash",
    "deploy_warnings",
    "local_resources",
    "make_plan",
    "undeploy_warnings",
]

PlanAction = Literal["create", "update", "delete", "unchanged"]
PLAN_ACTIONS: tuple[str, ...] = ("create", "update", "delete", "unchanged")
# The one-character mark of each action, as plans are printed (CLI) and shown (TUI).
PLAN_MARKS: dict[str, str] = {"create": "+", "update": "~", "delete": "-", "unchanged": "="}


@dataclass(frozen=True)
class PlanItem:
    """One endpoint's planned action, with the drift that explains it."""

    name: str
    action: PlanAction
    resource_type: str | None
    drift: Drift
    reasons: tuple[str, ...] = ()

    @property
    def changes(self) -> tuple[FieldDiff, ...]:
        """Field diffs (deployed -> local) behind an update."""
        return self.drift.fields

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "action": self.action,
            "resource_type": self.resource_type,
            "drift": self.drift.state,
            "changes": [c.to_dict() for c in self.changes],
            "unresolved": list(self.drift.unresolved),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class PlanWarning:
    """A call that the plan would leave without an endpoint to answer it.

    `kind` "callee_missing": `caller` (deployed by this plan) calls `callee`, which is neither
    deployed nor in the plan; "caller_left": undeploying `callee` while `caller` stays
    deployed and calls it. `functions` are the callee's functions called.
    """

    kind: Literal["callee_missing", "caller_left"]
    caller: str
    callee: str
    functions: tuple[str, ...]

    @property
    def message(self) -> str:
        """One line for the CLI and the dialog."""
        called = ", ".join(self.functions)
        if self.kind == "callee_missing":
            return (
                f"{self.caller} calls {self.callee} ({called}), which is not deployed and not "
                "in this deploy: those calls will fail"
            )
        return (
            f"{self.caller} stays deployed and calls {self.callee} ({called}): those calls "
            "will fail once it is undeployed"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "kind": self.kind,
            "caller": self.caller,
            "callee": self.callee,
            "functions": list(self.functions),
            "message": self.message,
        }


def deploy_warnings(
    graph: CallGraph, deploying: Iterable[str], deployed: Iterable[str]
) -> tuple[PlanWarning, ...]:
    """Endpoints being deployed whose callees are neither deployed nor being deployed."""
    going = set(deploying)
    present = going | set(deployed)
    out: list[PlanWarning] = []
    for caller in sorted(going):
        for callee, functions in graph.callees(caller).items():
            if callee not in present:
                out.append(PlanWarning("callee_missing", caller, callee, functions))
    return tuple(out)


def undeploy_warnings(
    graph: CallGraph, removing: Iterable[str], deployed: Iterable[str]
) -> tuple[PlanWarning, ...]:
    """Endpoints being undeployed that deployed endpoints staying up still call."""
    gone = set(removing)
    staying = set(deployed) - gone
    out: list[PlanWarning] = []
    for callee in sorted(gone):
        for caller in graph.callers(callee):
            if caller in staying:
                functions = tuple(
                    sorted({e.callee_function for e in graph.edges_between(caller, callee)})
                )
                out.append(PlanWarning("caller_left", caller, callee, functions))
    return tuple(out)


@dataclass(frozen=True)
class Plan:
    """The whole plan, items ordered by name, and its call-graph warnings."""

    items: tuple[PlanItem, ...] = field(default_factory=tuple)
    warnings: tuple[PlanWarning, ...] = ()

    def names(self, *actions: str) -> list[str]:
        """Names of the items with one of `actions`."""
        return [i.name for i in self.items if i.action in actions]

    @property
    def has_changes(self) -> bool:
        """True when anything would be created, updated or deleted."""
        return any(i.action != "unchanged" for i in self.items)

    def counts(self) -> dict[str, int]:
        """How many items per action."""
        out = dict.fromkeys(PLAN_ACTIONS, 0)
        for item in self.items:
            out[item.action] += 1
        return out

    def item(self, name: str) -> PlanItem | None:
        """The item of `name`, if any."""
        return next((i for i in self.items if i.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`flash-tui plan --json`)."""
        return {
            "items": [i.to_dict() for i in self.items],
            "counts": self.counts(),
            "warnings": [w.to_dict() for w in self.warnings],
        }


def local_resources(manifest: Mapping[str, Any], root: Path | None = None) -> dict[str, Any]:
    """The manifest's resources, each with its `code_hash` added when `root` is given."""
    out: dict[str, Any] = {}
    for name, entry in (manifest.get("resources") or {}).items():
        item = dict(entry)
        if root is not None:
            item["code_hash"] = code_hash(root, entry)
        out[str(name)] = item
    return out


def make_plan(
    local: Mapping[str, Mapping[str, Any]],
    deployed: Mapping[str, Mapping[str, Any]],
    *,
    names: Iterable[str] | None = None,
    prune: bool = True,
    force: bool = False,
    parse_errors: Mapping[str, int] | None = None,
    deployed_files: Mapping[str, str] | None = None,
    calls: CallGraph | None = None,
) -> Plan:
    """The plan for `local` resources vs `deployed` entries (both keyed by name).

    `names` limits the plan to those endpoints; `prune` (default) plans deleting endpoints no
    longer in code (only for a full plan); `force` updates every deployed endpoint in code.
    `parse_errors`/`deployed_files`: see `engine.drift.compute_drift`. `calls`: the project's
    call graph, for the warnings (callees left undeployed, callers left calling a deleted one).
    """
    selected = None if names is None else set(names)
    diff = reconcile(local, deployed)
    drifts = compute_drift(
        local, deployed, parse_errors=parse_errors, deployed_files=deployed_files
    )
    items: list[PlanItem] = []
    for name, drift in drifts.items():
        if selected is not None and name not in selected:
            continue
        here, there = local.get(name), deployed.get(name)
        rtype = drift.resource_type
        reasons: list[str] = []
        action: PlanAction
        if drift.state == "unparsable":
            action = "unchanged"
            reasons.append(drift.reason)
        elif name in diff.removed:
            if not prune:
                continue
            action = "delete"
            reasons.append("no longer in code")
        elif name in diff.new:
            action = "create"
            reasons.append("not deployed")
            if drift.state == "unknown":
                reasons.append(f"config not statically resolvable: {', '.join(drift.unresolved)}")
        else:
            assert here is not None and there is not None
            action = "unchanged"
            if drift.state == "unknown":
                reasons.append(
                    f"drift unknown: {', '.join(drift.unresolved)} not statically resolvable"
                )
            elif drift.state == "drifted":
                action = "update"
                if drift.config_changed:
                    reasons.append("config changed")
                if drift.code_changed:
                    reasons.append("code changed")
                if drift.table_stale:
                    reasons.append(f"endpoint table {drift.table_stale}")
                if not drift.fields:
                    reasons.append("config changed")  # a hash differs, no field explains it
            status = there.get("status")
            if status is not None and status not in RUNNING:
                action = "update"
                reasons.append(f"not running ({status})")
            if force and action == "unchanged":
                action = "update"
                reasons.append("forced")
        items.append(PlanItem(name, action, rtype, drift, tuple(reasons)))
    warnings: tuple[PlanWarning, ...] = ()
    if calls is not None:
        kept = [i.name for i in items if i.action != "delete"]
        deleted = [i.name for i in items if i.action == "delete"]
        # Deleted endpoints are no longer in code, so no edge leads to them: only the subset
        # case can leave a callee missing.
        warnings = deploy_warnings(calls, kept, set(deployed) - set(deleted))
        warnings += undeploy_warnings(calls, deleted, deployed)
    return Plan(tuple(items), warnings)
