"""DashboardState: what the dashboard shows, as one immutable value with its derived views."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import RenderableType
from rich.text import Text

from engine.callgraph import CallGraph
from engine.diagnostics import Diagnostic
from engine.health import stale_age
from engine.mothership import READY
from engine.status import DEPLOYED, RUNNING, EndpointStatus, Status
from flash_tui import present
from flash_tui.widgets.dashboard.detail_pane import (
    diagnostic_detail,
    endpoint_detail,
    function_detail,
)
from flash_tui.widgets.dashboard.endpoints_table import EndpointRow
from flash_tui.widgets.dashboard.manifest_tree import TreeItem

HEALTH_HISTORY = 30
# Per-endpoint event lines kept for the detail pane.
EVENT_HISTORY = 20

Incarnation = tuple[str | None, int | None]
# A child's provisioning shown in the status column instead of its worker's status.
_SHOWN = frozenset({"provisioning", "failed"})


def _median(samples: Iterable[float | None]) -> float | None:
    """p50 of the successful probes in the history (None when there is none)."""
    values = sorted(v for v in samples if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


@dataclass(frozen=True)
class DashboardState:
    """The project as scanned, the target as reported, and what the person has selected."""

    project: str = ""
    manifest: Mapping[str, Any] = field(default_factory=dict)
    calls: CallGraph = field(default_factory=CallGraph)
    diagnostics: tuple[Diagnostic, ...] = ()
    statuses: Mapping[str, EndpointStatus] = field(default_factory=dict)
    samples: Mapping[str, tuple[float | None, ...]] = field(default_factory=dict)
    # (url, pid) of the worker each sparkline was measured on: a restarted cloud or a
    # redeploy is another worker, whose history starts afresh.
    sampled_at: Mapping[str, Incarnation] = field(default_factory=dict)
    # Endpoints being or having been undeployed, until the target reports them deployed
    # again: a probe already in flight when their worker stopped is not news.
    retired: frozenset[str] = frozenset()
    # (epoch time, fresh until) of each endpoint's last sample, as the engine's monitor said:
    # past that it is shown as stale, with its age, never as current.
    probed: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    events: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    selection: TreeItem | str | None = None
    busy: str | None = None
    target: str = ""
    # Watch-deploy (`w`) is on: every save redeploys what changed.
    watching: bool = False
    # Before the first scan the endpoints are not known yet (never "0 endpoints").
    scanning: bool = False
    # Deploy mode: `D` deploys the environment's mothership, which provisions the rest.
    mothership: bool = False
    # The environment the engine works on, where it matters (RunPod, a mothership); None: none.
    environment: str | None = None

    # -- derived views --------------------------------------------------------------------

    def resources(self) -> Mapping[str, Any]:
        """The scanned endpoints by name (empty before a scan or after a failed one)."""
        return self.manifest.get("resources") or {}

    def deployed_names(self) -> list[str]:
        """Endpoints the target reports as deployed (any state but not deployed)."""
        return sorted(n for n, s in self.statuses.items() if s.status != Status.NOT_DEPLOYED)

    def incarnation(self, name: str) -> Incarnation:
        """(url, pid) of the worker the target reports for `name`."""
        status = self.statuses.get(name)
        return (status.url, status.pid) if status is not None else (None, None)

    def url(self, name: str) -> str:
        """The URL the target reports for `name` (empty when it reports none)."""
        status = self.statuses.get(name)
        return status.url or "" if status is not None else ""

    def rows(self, now: float) -> list[EndpointRow]:
        """Table rows: every endpoint in code or deployed, merged with status and health."""
        resources = self.resources()
        rows = []
        for name in sorted(set(resources) | set(self.statuses)):
            res = resources.get(name) or {}
            status = self.statuses.get(name)
            health = status.health if status is not None else None
            started = status.started_at if status is not None else None
            state = status.status if status is not None else None
            if status is not None and status.role == "child" and status.provisioning in _SHOWN:
                # Its worker may answer already; what counts is whether its mothership has
                # seen it come up: a child still provisioning never says healthy.
                state = status.provisioning
            samples = self.samples.get(name, ())
            stale = self.stale(now).get(name) if samples else None
            rows.append(
                EndpointRow(
                    name=name,
                    type=present.short_type(
                        res.get("resource_type") or (status and status.resource_type),
                        res.get("is_load_balanced") if res else None,
                    ),
                    status=state,
                    drift=status.drift if status is not None else None,
                    latency_ms=_median(samples)
                    or (health.latency_ms if health is not None else None),
                    samples=list(samples),
                    url=status.url if status is not None else None,
                    uptime_s=now - started if started and state in DEPLOYED else None,
                    restarts=status.restarts if status is not None else None,
                    stale_s=stale,
                    role=status.role if status is not None and status.role != "endpoint" else None,
                )
            )
        return rows

    def stale(self, now: float) -> dict[str, float]:
        """Age in seconds of each endpoint's last sample that is stale (engine.health)."""
        ages = {name: stale_age(at, until, now) for name, (at, until) in self.probed.items()}
        return {name: age for name, age in ages.items() if age is not None}

    def header(self) -> tuple[str, str]:
        """The header summary, and its compact form for narrow terminals."""
        drifted = sum(1 for s in self.statuses.values() if s.drift == "drifted")
        errors = sum(1 for d in self.diagnostics if d.severity == "error")
        counts = ["scanning…"] if self.scanning else [f"{len(self.resources())} endpoints"]
        if drifted:
            counts.append(f"{drifted} drifted")
        if errors:
            counts.append(f"{errors} errors")
        if self.busy:
            counts.append(f"{self.busy}…")
        if self.watching:
            counts.append("watch-deploy")
        ready = self.children_ready()
        if ready is not None and ready[0] < ready[1]:
            counts.append(f"mothership: {ready[0]}/{ready[1]} children ready")
        env = [f"env: {self.environment}"] if self.environment else []
        mode = [*env, "via mothership"] if self.mothership else env
        # The target's description may name the environment too (`runpod staging (account)`):
        # the header says it once, as `env:`.
        target = self.target
        if self.environment:
            target = re.sub(rf"^(\S+) {re.escape(self.environment)}(?=\s|$)", r"\1", target)
        summary = " · ".join([self.project, f"target: {target}", *mode, *counts])
        # Narrow: no "(127.0.0.1:PORT)" (the detail pane and `flash-tui status` show it).
        narrow = re.sub(r"\s*\([^)]*\)", "", target)
        return summary, " · ".join([self.project, narrow, *mode, *counts])

    def detail(self, now: float | None = None) -> tuple[RenderableType, str] | None:
        """What the detail pane shows for the selection, and its title (None: leave it)."""
        item = self.selection
        if isinstance(item, str) or (isinstance(item, TreeItem) and item.kind == "endpoint"):
            name = item if isinstance(item, str) else str(item.endpoint)
            status = self.statuses.get(name)
            events = self.events.get(name, ())
            started = status.started_at if status is not None else None
            uptime = now - started if now is not None and started else None
            detail = endpoint_detail(
                name,
                self.resources().get(name),
                status,
                events,
                self.calls,
                self.samples.get(name, ()),
                uptime,
            )
            return detail, name
        if isinstance(item, TreeItem) and item.kind == "function":
            return function_detail(item.payload, item.endpoint), str(item.payload.get("name"))
        if isinstance(item, TreeItem) and item.diagnostic is not None:
            return diagnostic_detail(item.diagnostic), "Diagnostic"
        if isinstance(item, TreeItem) and item.kind == "error":
            reason = str(item.payload.get("message", ""))
            return Text(reason, style="red"), "Cannot scan the project"
        return None

    # -- new states -----------------------------------------------------------------------

    def with_statuses(self, statuses: Iterable[EndpointStatus]) -> DashboardState:
        """The target's report; sparklines of workers no longer running as sampled are cleared."""
        state = replace(self, statuses={s.name: s for s in statuses})
        samples = dict(state.samples)
        sampled_at = dict(state.sampled_at)
        # A sparkline belongs to one running worker: an endpoint that no longer runs, or now
        # runs as another worker (new URL or pid), loses its history.
        for name in list(samples):
            status = state.statuses.get(name)
            if (
                status is None
                or status.status not in RUNNING
                or sampled_at.get(name) != state.incarnation(name)
            ):
                del samples[name]
                sampled_at.pop(name, None)
        retired = state.retired
        if state.busy != "undeploy":
            retired = retired - set(state.deployed_names())  # deployed again: news again
        return replace(state, samples=samples, sampled_at=sampled_at, retired=retired)

    def with_history(self, health: Mapping[str, Iterable[float | None]]) -> DashboardState:
        """Sparklines given up front (as measured on the workers now reported)."""
        samples = dict(self.samples)
        sampled_at = dict(self.sampled_at)
        for name, values in health.items():
            samples[name] = tuple(values)[-HEALTH_HISTORY:]
            sampled_at[name] = self.incarnation(name)
        return replace(self, samples=samples, sampled_at=sampled_at)

    def with_sample(
        self,
        name: str,
        ok: bool,
        latency_ms: float | None,
        url: str | None,
        at: float | None = None,
        fresh_until: float | None = None,
    ) -> DashboardState | None:
        """One more probe result; None when it is not news (retired, another worker's)."""
        if name in self.retired:
            return None
        owner = self.incarnation(name)
        if url is not None and owner[0] is not None and url != owner[0]:
            return None  # a probe of another worker than the one reported: not this one's health
        previous = self.samples.get(name, ()) if self.sampled_at.get(name) == owner else ()
        value = latency_ms if ok else None
        probed = self.probed
        if at is not None and fresh_until is not None:
            probed = {**probed, name: (at, fresh_until)}
        return replace(
            self,
            samples={**self.samples, name: (*previous, value)[-HEALTH_HISTORY:]},
            sampled_at={**self.sampled_at, name: owner},
            probed=probed,
        )

    def with_retired(self, names: Iterable[str]) -> DashboardState:
        """Stop showing health for endpoints being undeployed (probes of them will fail)."""
        names = set(names)
        samples = {n: v for n, v in self.samples.items() if n not in names}
        return replace(self, retired=self.retired | names, samples=samples)

    def with_provisioning(self, name: str, provisioning: str) -> DashboardState:
        """A child's provisioning as its mothership just recorded it (a deploy's progress),
        before the next status report says the same."""
        status = self.statuses.get(name)
        if status is None:
            resource = self.resources().get(name) or {}
            status = EndpointStatus(
                name=name,
                resource_type=resource.get("resource_type"),
                status=Status.DEPLOYING,
                drift="new",  # no status row: not deployed when last reported
                is_load_balanced=bool(resource.get("is_load_balanced")),
                in_code=bool(resource),
            )
        error = status.provisioning_error if provisioning == "failed" else None
        changed = replace(status, role="child", provisioning=provisioning, provisioning_error=error)
        return replace(self, statuses={**self.statuses, name: changed})

    def children_ready(self) -> tuple[int, int] | None:
        """(children up, children) of the environment's mothership, as it recorded them; None
        without any recorded."""
        children = [s for s in self.statuses.values() if s.role == "child" and s.provisioning]
        if not children:
            return None
        return sum(1 for c in children if c.provisioning in READY), len(children)

    def with_event(self, name: str, line: str, keep: int | None = None) -> DashboardState:
        """One more line of an endpoint's history (the last `keep` when given)."""
        history = (*self.events.get(name, ()), line)
        if keep is not None:
            history = history[-keep:]
        return replace(self, events={**self.events, name: history})
