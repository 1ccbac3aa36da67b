"""The endpoints table: one row per endpoint (in code, deployed, or both), updated cell by cell."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowDoesNotExist, RowKey

from engine.status import Status
from engine.styles import DRIFT_STYLES, STATUS_STYLES, style_of
from flash_tui import present
from flash_tui.widgets.panes import vim_keys

_FAILING = frozenset({Status.UNHEALTHY, Status.FAILED})
# A mothership's child not up yet (engine.mothership): shown as such, never as healthy.
PROVISIONING = "provisioning"
_STATUS_STYLES = {**STATUS_STYLES, PROVISIONING: "yellow"}


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
    # `mothership` or `child` when deployed through a mothership (None: direct mode).
    role: str | None = None


# Display order. Which of them are shown depends on the table's width (`fit_columns`): the
# most telling ones first, so at 100 columns name, status, drift, health and type fit without a
# horizontal scrollbar, and wider tables add p50, uptime, restarts and the URL.
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
TITLES: dict[str, str] = dict(COLUMNS)
# Widths are fixed per layout (the longest value each column can hold) so columns never jump
# as statuses change.
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
# The order columns are given room in; the first three are never dropped.
PRIORITY: tuple[str, ...] = (
    "dot",
    "name",
    "status",
    "drift",
    "health",
    "type",
    "latency",
    "up",
    "restarts",
    "url",
)
_KEPT = 3
_HEALTH = PRIORITY.index("health") + 1
# "not deployed" is the one status word longer than 9 characters.
SHORT_STATUS_WIDTH = 9
SHORT_STATUS_LABELS: dict[str, str] = {Status.NOT_DEPLOYED: "not dep."}
MIN_NAME_WIDTH = 8
# A name longer than this is cut (with an ellipsis) rather than lose the type column.
NAME_CUT_WIDTH = 12
MAX_NAME_WIDTH = 24
# Spare width makes the sparkline longer, up to the history the dashboard keeps.
MAX_HEALTH_WIDTH = 30
MAX_URL_WIDTH = 40
# DataTable pads each cell by one column on either side.
_PAD = 2


@dataclass(frozen=True)
class TableLayout:
    """The columns shown at one width, each with its width."""

    widths: tuple[tuple[str, int], ...]
    short_status: bool = False

    @property
    def keys(self) -> list[str]:
        """The shown column keys, in display order."""
        return [key for key, _ in self.widths]

    def width_of(self, key: str) -> int:
        """The width of a shown column (0 when it is not shown)."""
        return dict(self.widths).get(key, 0)


def fit_columns(available: int, longest_name: int) -> TableLayout:
    """The columns that fit in `available` cells, most telling first, spare width to health/url.

    Status words are abbreviated first; then a long name is cut to NAME_CUT_WIDTH (with an
    ellipsis) before the type column goes, and to MIN_NAME_WIDTH before health and drift go.
    """
    name = min(MAX_NAME_WIDTH, max(MIN_NAME_WIDTH, longest_name))
    widths = {**WIDTHS, "name": name}

    def cost(keys: list[str]) -> int:
        return sum(widths[k] + _PAD for k in keys)

    wanted = list(PRIORITY[:6])
    short = False
    if cost(wanted) > available:
        short = True
        widths["status"] = SHORT_STATUS_WIDTH
    for floor in (NAME_CUT_WIDTH, MIN_NAME_WIDTH):
        if cost(wanted) > available:
            widths["name"] = max(min(floor, name), widths["name"] - (cost(wanted) - available))
        # The type goes next; then health before drift, drift before status.
        while (
            len(wanted) > (_HEALTH if floor == NAME_CUT_WIDTH else _KEPT)
            and cost(wanted) > available
        ):
            wanted.pop()
    while len(wanted) > _KEPT and cost(wanted) > available:
        wanted.pop()
    if len(wanted) == 6:
        for key in PRIORITY[6:]:
            if cost([*wanted, key]) > available:
                break
            wanted.append(key)
    spare = available - cost(wanted)
    if spare > 0 and "health" in wanted:
        grow = min(spare, MAX_HEALTH_WIDTH - widths["health"])
        widths["health"] += grow
        spare -= grow
    if spare > 0 and "url" in wanted:
        widths["url"] += min(spare, MAX_URL_WIDTH - widths["url"])
    shown = tuple((key, widths[key]) for key, _ in COLUMNS if key in wanted)
    return TableLayout(shown, short)


_FULL = TableLayout(tuple((k, WIDTHS.get(k, MIN_NAME_WIDTH)) for k, _ in COLUMNS))


def _dot(row: EndpointRow) -> Text:
    if row.status == Status.HEALTHY:
        return Text("●", style="green")
    if row.status in _FAILING:
        return Text("●", style="bold red")
    if row.status in (Status.DEPLOYING, PROVISIONING):
        return Text("◐", style="yellow")
    return Text("○", style="dim")


def _name(row: EndpointRow, style: str) -> Text:
    text = Text(row.name, style=style, overflow="ellipsis", no_wrap=True)
    if row.role == "mothership":
        text.append(" ⌂", style="bold cyan")  # the one that provisions the others
    elif row.role == "child":
        text.append(" ↳", style="dim")
    return text


def cells(row: EndpointRow, layout: TableLayout = _FULL) -> dict[str, object]:
    """The rendered cell per column key (the sparkline as long as the health column)."""
    name_style = "bold red" if row.status in _FAILING else "bold"
    status = present.styled(row.status, _STATUS_STYLES)
    if layout.short_status and row.status in SHORT_STATUS_LABELS:
        status = Text(SHORT_STATUS_LABELS[row.status], style=status.style)
    spark = max(8, layout.width_of("health"))
    return {
        "dot": _dot(row),
        "name": _name(row, name_style),
        "type": Text(row.type),
        # None: the target was not asked (or could not be reached), which is not "not deployed".
        "status": status,
        "drift": Text(
            present.SHORT_DRIFT_LABELS.get(str(row.drift), present.label(row.drift)),
            style=style_of(row.drift, DRIFT_STYLES),
        ),
        "latency": Text(
            present.latency(row.latency_ms),
            justify="right",
            style="dim" if row.stale_s is not None else "",
        ),
        "health": _health(row, spark),
        "up": Text(present.duration(row.uptime_s), justify="right"),
        "restarts": Text("—" if row.restarts is None else str(row.restarts), justify="right"),
        "url": Text(row.url or "—", style="dim" if not row.url else "underline"),
    }


def _health(row: EndpointRow, width: int) -> Text:
    if not row.samples:
        return Text("—", style="dim")
    if row.stale_s is not None:
        # An old sample is not the endpoint's health now: say how old instead.
        return Text(f"{present.duration(row.stale_s)} ago", style="dim italic")
    return present.sparkline(row.samples, width)


def _same(a: object, b: object) -> bool:
    # Text equality ignores the base style (a name turning red keeps its plain text).
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and str(a.style) == str(b.style) and a.spans == b.spans
    return a == b


class EndpointsTable(DataTable[object]):
    """Rows keyed by endpoint name; `show()` updates only cells whose content changed.

    The columns follow the table's width (`fit_columns`); the dot and the name stay pinned at
    the left when the table scrolls sideways.
    """

    BINDINGS = [
        *vim_keys("cursor_down", "cursor_up", "scroll_top", "scroll_bottom"),
        # A row table: home/end go to the first/last endpoint (DataTable's scroll to the right
        # edge would take the names away).
        Binding("home", "scroll_top", "First", show=False),
        Binding("end", "scroll_bottom", "Last", show=False),
    ]

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(
            id=id, classes=classes, cursor_type="row", zebra_stripes=False, fixed_columns=2
        )
        self._shown: dict[str, EndpointRow] = {}
        self._layout: TableLayout | None = None

    @property
    def layout_shown(self) -> TableLayout:
        """The columns shown now and their widths."""
        return self._layout or self._fit(self._shown)

    def _fit(self, names: Sequence[str] | Mapping[str, object]) -> TableLayout:
        # `size` is inside the border; one column is kept for a vertical scrollbar (rows come
        # and go), so its arrival never pushes a column out of view.
        available = self.size.width - (0 if self.show_vertical_scrollbar else 1)
        longest = max([0, *(len(name) for name in names)])
        return fit_columns(max(0, available), longest)

    def on_resize(self) -> None:
        self._relayout(self._fit(self._shown))

    def _relayout(self, layout: TableLayout) -> None:
        if layout == self._layout:
            return
        selected = self.selected_name
        self._layout = layout
        self.clear(columns=True)
        for key, width in layout.widths:
            self.add_column(TITLES[key], key=key, width=width)
        for name, row in self._shown.items():
            rendered = cells(row, layout)
            self.add_row(*(rendered[k] for k in layout.keys), key=name)
        if selected is not None:
            self.select_name(selected)

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
        wanted = {row.name: row for row in rows}
        previous_rows = self._shown
        # Copies: the app mutates nothing, but a shared samples list must not alias history.
        self._shown = {n: replace(row, samples=list(row.samples)) for n, row in wanted.items()}
        if list(wanted) != list(previous_rows) or self._layout is None:
            self._layout = None
            self._relayout(self._fit(wanted))
            return
        layout = self._layout
        for name, row in wanted.items():
            previous = previous_rows[name]
            if previous == row:
                continue
            old, new = cells(previous, layout), cells(row, layout)
            changed = {k: new[k] for k in layout.keys if not _same(old[k], new[k])}
            if changed:
                self._set_row_cells(name, changed)

    def _set_row_cells(self, name: str, values: Mapping[str, object]) -> None:
        """Put `values` into the row of `name` and repaint that row only.

        `DataTable.update_cell` repaints the whole table; a health tick changes one row, and
        with many endpoints the idle dashboard's CPU went mostly to repainting the others.
        """
        row = self._data[RowKey(name)]
        for key, value in values.items():
            row[ColumnKey(key)] = value
        self._update_count += 1  # the row render cache is keyed by it: this row's lines are new
        self.refresh_row(self.get_row_index(name))
