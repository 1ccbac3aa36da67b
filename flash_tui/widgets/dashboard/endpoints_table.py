"""The endpoints table: one row per endpoint (in code, deployed, or both), updated cell by cell."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

from engine.status import Status
from engine.styles import DRIFT_STYLES, STATUS_STYLES, style_of
from flash_tui import present

_FAILING = frozenset({Status.UNHEALTHY, Status.FAILED})


@dataclass
class EndpointRow:
    """What the table shows for one endpoint, already merged from scan, status and health."""

    name: str
    type: str = "—"
    status: str | None = None
    drift: str | None = None
    latency_ms: float | None = None
    samples: list[float | None] = field(default_factory=list)
    url: str | None = None
    uptime_s: float | None = None
    restarts: int | None = None
    # Age of the last health sample when it is older than its probe interval (else None).
    stale_s: float | None = None


# Most telling first: at 80 columns the table scrolls sideways past `health`. Widths are fixed
# (the longest value each column can hold) so columns never jump as statuses change.
COLUMNS: list[tuple[str, str]] = [
    ("dot", " "),
    ("name", "name"),
    ("status", "status"),
    ("drift", "drift"),
    ("health", "health"),
    ("latency", "p50"),
    ("type", "type"),
    ("up", "up"),
    ("restarts", "rst"),
    ("url", "url"),
]
WIDTHS: dict[str, int] = {
    "dot": 1,
    "status": 12,
    "drift": 8,
    "health": 8,
    "latency": 6,
    "type": 7,
    "up": 5,
    "restarts": 3,
    "url": 22,
}


def _dot(row: EndpointRow) -> Text:
    if row.status == Status.HEALTHY:
        return Text("●", style="green")
    if row.status in _FAILING:
        return Text("●", style="bold red")
    if row.status == Status.DEPLOYING:
        return Text("◐", style="yellow")
    return Text("○", style="dim")


def cells(row: EndpointRow) -> dict[str, object]:
    """The rendered cell per column key."""
    name_style = "bold red" if row.status in _FAILING else "bold"
    return {
        "dot": _dot(row),
        "name": Text(row.name, style=name_style),
        "type": Text(row.type),
        # None: the target was not asked (or could not be reached), which is not "not deployed".
        "status": present.styled(row.status, STATUS_STYLES),
        "drift": Text(
            present.SHORT_DRIFT_LABELS.get(str(row.drift), present.label(row.drift)),
            style=style_of(row.drift, DRIFT_STYLES),
        ),
        "latency": Text(
            present.latency(row.latency_ms),
            justify="right",
            style="dim" if row.stale_s is not None else "",
        ),
        "health": _health(row),
        "up": Text(present.duration(row.uptime_s), justify="right"),
        "restarts": Text("—" if row.restarts is None else str(row.restarts), justify="right"),
        "url": Text(row.url or "—", style="dim" if not row.url else "underline"),
    }


def _health(row: EndpointRow) -> Text:
    if not row.samples:
        return Text("—", style="dim")
    if row.stale_s is not None:
        # An old sample is not the endpoint's health now: say how old instead.
        return Text(f"{present.duration(row.stale_s)} ago", style="dim italic")
    return present.sparkline(row.samples)


def _same(a: object, b: object) -> bool:
    # Text equality ignores the base style (a name turning red keeps its plain text).
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and str(a.style) == str(b.style) and a.spans == b.spans
    return a == b


class EndpointsTable(DataTable[object]):
    """Rows keyed by endpoint name; `show()` updates only cells whose content changed."""

    BINDINGS = [
        # vim keys, as in k9s and lazydocker.
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "First", show=False),
        Binding("G", "scroll_bottom", "Last", show=False),
    ]

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self._shown: dict[str, EndpointRow] = {}

    def on_mount(self) -> None:
        self._add_columns(8)

    def _add_columns(self, name_width: int) -> None:
        for key, title in COLUMNS:
            self.add_column(title, key=key, width=WIDTHS.get(key, name_width))

    @property
    def selected_name(self) -> str | None:
        """Name of the endpoint under the cursor."""
        if not self.row_count:
            return None
        try:
            key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except CellDoesNotExist:
            return None
        return key.value

    def select_name(self, name: str) -> None:
        """Move the cursor to an endpoint's row if it is shown."""
        try:
            self.move_cursor(row=self.get_row_index(name))
        except RowDoesNotExist:
            pass

    def show(self, rows: Sequence[EndpointRow]) -> None:
        """Reconcile the table with `rows`, keeping the cursor on the same endpoint.

        When the set of endpoints changes the rows are rebuilt in name order (it keeps the name
        column as wide as the longest name); otherwise only rows whose data changed are
        re-rendered, and of those only the cells that differ, so a health tick repaints one
        sparkline and nothing else.
        """
        selected = self.selected_name
        wanted = {row.name: row for row in rows}
        if list(wanted) != list(self._shown):
            self.clear(columns=True)
            self._add_columns(min(24, max([8, *(len(name) for name in wanted)])))
            for name, row in wanted.items():
                rendered = cells(row)
                self.add_row(*(rendered[k] for k, _ in COLUMNS), key=name)
        else:
            for name, row in wanted.items():
                previous = self._shown[name]
                if previous == row:
                    continue
                old, new = cells(previous), cells(row)
                for key, _ in COLUMNS:
                    if not _same(old[key], new[key]):
                        self.update_cell(name, key, new[key])
        # Copies: the app mutates nothing, but a shared samples list must not alias history.
        self._shown = {n: replace(row, samples=list(row.samples)) for n, row in wanted.items()}
        if selected is not None and selected in self._shown:
            self.select_name(selected)
