"""The endpoints table: one row per endpoint (in code, deployed, or both), updated cell by cell."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

from flash_tui import present


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
    gpu_on_cpu: bool = False


# Most telling first: at 80 columns the table scrolls sideways past `health`.
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


def _dot(row: EndpointRow) -> Text:
    if row.status == "healthy":
        return Text("●", style="green")
    if row.status in {"unhealthy", "failed"}:
        return Text("●", style="bold red")
    if row.status in {"deploying", "starting"}:
        return Text("◐", style="yellow")
    return Text("○", style="dim")


def cells(row: EndpointRow) -> dict[str, object]:
    """The rendered cell per column key."""
    name_style = "bold red" if row.status in {"unhealthy", "failed"} else "bold"
    return {
        "dot": _dot(row),
        "name": Text(row.name, style=name_style),
        "type": Text(row.type),
        "status": present.styled(row.status or "not_deployed", present.STATUS_STYLES),
        "drift": present.styled(row.drift, present.DRIFT_STYLES),
        "latency": Text(present.latency(row.latency_ms), justify="right"),
        "health": present.sparkline(row.samples) if row.samples else Text("—", style="dim"),
        "up": Text(present.duration(row.uptime_s), justify="right"),
        "restarts": Text("—" if row.restarts is None else str(row.restarts), justify="right"),
        "url": Text(row.url or "—", style="dim" if not row.url else "underline"),
    }


class EndpointsTable(DataTable[object]):
    """Rows keyed by endpoint name; `show()` updates only cells whose content changed."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self._shown: dict[str, dict[str, str]] = {}

    def on_mount(self) -> None:
        for key, title in COLUMNS:
            self.add_column(title, key=key)

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
        """Reconcile the table with `rows`, keeping the cursor on the same endpoint."""
        selected = self.selected_name
        wanted = [row.name for row in rows]
        for name in list(self._shown):
            if name not in wanted:
                self.remove_row(name)
                del self._shown[name]
        for row in rows:
            rendered = cells(row)
            plain = {k: (v.markup if isinstance(v, Text) else str(v)) for k, v in rendered.items()}
            previous = self._shown.get(row.name)
            if previous is None:
                self.add_row(*(rendered[k] for k, _ in COLUMNS), key=row.name)
            else:
                for key, _ in COLUMNS:
                    if previous.get(key) != plain[key]:
                        self.update_cell(row.name, key, rendered[key], update_width=True)
            self._shown[row.name] = plain
        if selected is not None and selected in self._shown:
            self.select_name(selected)
