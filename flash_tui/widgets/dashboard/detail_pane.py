"""Detail pane: config, drift diff, routes, calls and recent events of the selection."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.segment import Segment
from rich.table import Table
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from engine.callgraph import CallGraph, describe
from engine.diagnostics import Diagnostic
from engine.drift import FieldDiff
from engine.status import EndpointStatus, Status
from engine.styles import DRIFT_STYLES, SEVERITY_STYLES, style_of
from flash_tui import present


def diff_rows(changes: Sequence[FieldDiff]) -> list[tuple[str, Any, Any]]:
    """(field, deployed, local) triples of the engine's field diffs."""
    return [(change.field, change.deployed, change.local) for change in changes]


def diff_table(changes: Sequence[FieldDiff]) -> Table:
    """`field  deployed → local` as a borderless grid."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold yellow", no_wrap=True)
    grid.add_column()
    for name, deployed, local in diff_rows(changes):
        line = Text()
        line.append(present.value_text(deployed), style="red")
        line.append(" → ")
        line.append(present.value_text(local), style="green")
        grid.add_row(name, line)
    return grid


def _config_grid(config: Mapping[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="cyan", no_wrap=True)
    grid.add_column(overflow="fold")
    for key in sorted(config):
        grid.add_row(key, present.value_text(config[key]))
    return grid


# Statuses whose reason (last_error) leads the pane.
_FAILING = frozenset({Status.FAILED, Status.UNHEALTHY})


def health_lines(
    samples: Sequence[float | None], status: EndpointStatus | None, uptime_s: float | None
) -> list[Text]:
    """The sparkline with its legend, then pid, uptime and restarts (shown at any width)."""
    lines: list[Text] = []
    if samples:
        line = Text("health ", style="bold")
        line.append_text(present.sparkline(samples, len(samples)))
        ok = [v for v in samples if v is not None]
        failed = len(samples) - len(ok)
        summary = f"  last {len(samples)} probes"
        if failed:
            summary += f", {failed} failed"
        line.append(summary, style="dim")
        lines.append(line)
        # What a bar means, and its scale: from zero to the slowest probe shown.
        scale = f"0–{present.latency(max(ok))}" if ok else "none succeeded"
        legend = Text(f"a bar per probe: its latency, {scale}; ", style="dim")
        legend.append("red", style="red")
        legend.append(" = failed", style="dim")
        lines.append(legend)
    if status is not None and status.deployed:
        facts = [f"pid {status.pid}" if status.pid else "pid —"]
        facts.append(f"up {present.duration(uptime_s)}")
        facts.append(f"restarts {status.restarts}")
        lines.append(Text(" · ".join(facts)))
    return lines


def endpoint_detail(
    name: str,
    resource: Mapping[str, Any] | None,
    status: EndpointStatus | None,
    events: Sequence[str] = (),
    calls: CallGraph | None = None,
    samples: Sequence[float | None] = (),
    uptime_s: float | None = None,
) -> RenderableType:
    """Everything known about one endpoint, most useful first (a failure's reason leads)."""
    parts: list[RenderableType] = []
    if status is not None and status.status in _FAILING:
        reason = Text(f"{present.label(status.status)}: ", style="bold red")
        # Without a reported reason, where to look for one.
        reason.append(status.last_error or "no reason reported (l: its logs)", style="red")
        parts.append(reason)
    title = Text(name, style="bold")
    if resource:
        title.append(f"  {resource.get('resource_type', '')}  ", style="dim")
        title.append(present.resource_badges(resource), style="dim")
    parts.append(title)
    drift = status.drift if status is not None else None
    if status is not None:
        line = Text("drift: ")
        line.append_text(present.styled(status.drift, DRIFT_STYLES))
        if status.url:
            line.append(f"   {status.url}", style="underline")
        parts.append(line)
        parts.extend(_role_lines(status))
        reason = status.drift_reason
        if drift == "unparsable" and reason:
            # Not gone: its code still exists, in a file that does not parse. Say where.
            parts.append(Text(f"{reason} — kept deployed until it parses again", style="magenta"))
    parts.extend(health_lines(samples, status, uptime_s))
    if status is not None and status.drift_fields:
        parts.append(Text("deployed → local", style="dim"))
        parts.append(diff_table(status.drift_fields))
    if resource and not str(resource.get("resource_type", "Cpu")).startswith("Cpu"):
        parts.append(
            Text(
                "* GPU endpoint: runs on this machine's CPU in the local cloud", style="dim italic"
            )
        )
    if resource:
        unresolved = resource.get("unresolved") or []
        if unresolved:
            parts.append(Text(f"unresolved: {', '.join(unresolved)}", style="yellow"))
        config = resource.get("config") or {}
        if config:
            parts.append(Text("config", style="bold underline"))
            parts.append(_config_grid(config))
        routes = [f for f in resource.get("functions") or [] if f.get("http_method")]
        if routes:
            parts.append(Text("routes", style="bold underline"))
            for fn in routes:
                parts.append(
                    Text(f"{fn['http_method']:<6} {fn.get('http_path')}  → {fn.get('name')}")
                )
        elif resource.get("functions"):
            parts.append(Text("functions", style="bold underline"))
            for fn in resource["functions"]:
                parts.append(Text(f"ƒ {fn.get('name')}  {fn.get('module', '')}", style=""))
    elif status is not None and status.role == "mothership":
        parts.append(Text("The environment's mothership: it provisions the other endpoints."))
    elif status is not None and drift == "orphaned":
        parts.append(Text("Deployed, but no longer in the code (orphaned).", style="magenta"))
    if calls is not None:
        parts.extend(_call_lines(name, calls))
    if events:
        parts.append(Text("recent events", style="bold underline"))
        parts.extend(Text(event, style="dim") for event in events[-5:])
    return Group(*parts)


def _role_lines(status: EndpointStatus) -> list[Text]:
    """`role: child · provisioning: deployed` (and its error) when a mothership is involved;
    nothing in direct mode."""
    if status.role == "endpoint":
        return []
    line = Text(f"role: {status.role}")
    if status.provisioning:
        line.append(" · provisioning: ")
        style = {"failed": "bold red", "provisioning": "yellow"}.get(status.provisioning, "green")
        line.append(status.provisioning, style=style)
    lines = [line]
    if status.provisioning_error:
        lines.append(Text(status.provisioning_error, style="red"))
    return lines


def _call_lines(name: str, calls: CallGraph) -> list[Text]:
    """`calls: cpu_worker (process), gpu_worker (infer)` and `called by: gateway`."""
    lines = []
    callees = calls.callees(name)
    if callees:
        line = Text("calls: ", style="bold")
        line.append(describe(callees), style="")
        lines.append(line)
    callers = calls.callers(name)
    if callers:
        line = Text("called by: ", style="bold")
        line.append(", ".join(callers), style="")
        lines.append(line)
    return lines


def function_detail(fn: Mapping[str, Any], endpoint: str | None) -> RenderableType:
    """Signature and source location of one function."""
    parts: list[RenderableType] = []
    head = present.signature_text(
        str(fn.get("name")), fn.get("signature"), bool(fn.get("is_async"))
    )
    if fn.get("is_class"):
        head = f"class {fn.get('name')}"
    parts.append(Text(head, style="bold"))
    where = fn.get("file") or fn.get("module")
    if where:
        parts.append(Text(f"{where}:{fn.get('line', '?')}", style="cyan"))
    if endpoint:
        parts.append(Text(f"endpoint: {endpoint}", style="dim"))
    if fn.get("http_method"):
        parts.append(Text(f"route: {fn['http_method']} {fn.get('http_path')}"))
    methods = fn.get("class_methods") or []
    if methods:
        parts.append(Text("methods: " + ", ".join(methods)))
    deps = fn.get("dependencies") or []
    if deps:
        parts.append(Text("dependencies: " + ", ".join(deps), style="dim"))
    return Group(*parts)


def diagnostic_detail(diag: Diagnostic) -> RenderableType:
    """One diagnostic with its location and code."""
    head = Text(f"{diag.severity}", style=style_of(diag.severity, SEVERITY_STYLES))
    if diag.code:
        head.append(f"  [{diag.code}]", style="dim")
    return Group(
        head,
        Text(f"{diag.file}:{diag.line}", style="cyan"),
        Text(diag.message),
    )


# Columns left blank on either side of the text (drawn here: CSS padding would be segments of
# their own, beside the row's blank run).
_MARGIN = 1


class DetailPane(ScrollView, can_focus=True):
    """Scrollable view of one rich renderable describing the selection.

    Its size comes from the screen's layout, never from its content: showing another selection
    renders the content into lines and repaints the pane, without re-laying out the screen (a
    `Static` that changes height did, ~30 ms after every cursor move while logs streamed).
    """

    shown: RenderableType = ""

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.shown = Text("Select an endpoint or a function.", style="dim")
        # The shown content rendered at one width (the width it was rendered at, its lines).
        self._lines: list[Strip] = []
        self._lines_width = -1

    def show(self, renderable: RenderableType, title: str = "Details") -> None:
        """Replace the content and the border title."""
        self.border_title = title
        self.shown = renderable
        self._lines_width = -1
        self._render_shown()

    def _content_width(self, scrollbar: bool) -> int:
        # `size` is inside the border already; the scrollbar is not.
        bar = self.styles.scrollbar_size_vertical if scrollbar else 0
        return max(1, self.size.width - bar - 2 * _MARGIN)

    def _render_shown(self) -> None:
        """Render `shown` into lines at the width it gets, then size the scroll range to them."""
        if not self.is_mounted or not self.size.width:
            return
        visible = self.size.height
        lines = self._render_at(self._content_width(self.show_vertical_scrollbar))
        # With a scrollbar appearing or going, the text width changes by the bar's: re-render.
        if (len(lines) > visible) != self.show_vertical_scrollbar:
            lines = self._render_at(self._content_width(len(lines) > visible))
        # No width: the text is wrapped to the pane, never scrolled sideways.
        self._set_virtual_size(Size(0, len(lines)))
        self.refresh()

    def _render_at(self, width: int) -> list[Strip]:
        if width != self._lines_width:
            console = self.app.console
            options = self.app.console_options.update(highlight=False, width=width, height=None)
            renderable = self.post_render(self.shown, self.rich_style)
            segments = console.render(renderable, options)
            self._lines = [
                Strip(line)
                for line in Segment.split_and_crop_lines(
                    segments, width, include_new_lines=False, pad=False
                )
            ]
            self._lines_width = width
        return self._lines

    def _set_virtual_size(self, size: Size) -> None:
        """The scroll range; a screen layout only when the scrollbar comes or goes (the
        compositor places scrollbars), otherwise the pane's size is unchanged."""
        old = self.virtual_size
        visible = self.scrollable_content_region.height
        if old == size:
            return
        if (old.height > visible) == (size.height > visible):
            self.set_reactive(Widget.virtual_size, size)
            self._scroll_update(size)
            self.scroll_y = self.validate_scroll_y(self.scroll_y)
        else:
            self.virtual_size = size

    def on_resize(self) -> None:
        self._lines_width = -1
        self._render_shown()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        style = self.rich_style
        if index >= len(self._lines):
            return Strip.blank(width, style)
        margin = Strip.blank(_MARGIN, style)
        line = self._lines[index].crop_extend(scroll_x, scroll_x + width - 2 * _MARGIN, style)
        # One run of blank cells, not three: the same segments the screen had with a `Static`.
        return Strip.join([margin, line, margin]).simplify()

    def plain_text(self, width: int = 100) -> str:
        """The shown content as plain text (for tests and screen readers of logs)."""
        from rich.console import Console

        console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
        console.print(self.shown)
        return console.export_text()
