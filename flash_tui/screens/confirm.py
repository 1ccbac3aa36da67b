"""Confirmation dialogs: deploy plan, undeploy, undeploy all (typed), restart. Escape always
cancels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Input, Label, Static

from engine.plan import PLAN_MARKS, Plan, PlanItem, PlanWarning
from engine.styles import PLAN_STYLES
from flash_tui import present
from flash_tui.widgets.dashboard.detail_pane import diff_rows


def render_plan(items: Sequence[PlanItem]) -> RenderableType:
    """`+ create`, `~ update` with `field: deployed → local` lines, `- delete`, `= unchanged`."""
    lines: list[RenderableType] = []
    order = {"delete": 0, "update": 1, "create": 2, "unchanged": 3}
    for item in sorted(items, key=lambda i: (order[i.action], i.name)):
        action = item.action
        mark, style = PLAN_MARKS[action], PLAN_STYLES[action]
        line = Text()
        line.append(f"{mark} ", style=style)
        line.append(item.name, style="bold" if action != "unchanged" else "dim")
        line.append(f"  {action}", style=style)
        if item.resource_type:
            line.append(f"  {item.resource_type}", style="dim")
        lines.append(line)
        if action == "update":
            for field_name, deployed, local in diff_rows(item.changes):
                diff = Text("    ")
                diff.append(f"{field_name}: ", style="yellow")
                diff.append(present.value_text(deployed), style="red")
                diff.append(" → ")
                diff.append(present.value_text(local), style="green")
                lines.append(diff)
    if not lines:
        lines.append(Text("Nothing to deploy: the project has no endpoints.", style="dim"))
    return Group(*lines)


def render_warnings(warnings: Sequence[PlanWarning]) -> Text:
    """One `⚠ <message>` line per warning (calls the plan leaves unanswered)."""
    text = Text()
    for index, warning in enumerate(warnings):
        if index:
            text.append("\n")
        text.append("⚠ ", style="bold yellow")
        text.append(warning.message, style="yellow")
    return text


def plan_counts(items: Sequence[PlanItem]) -> str:
    """`1 to create, 1 to update, 0 to delete, 2 unchanged`."""
    counts = Plan(tuple(items)).counts()
    return (
        f"{counts['create']} to create, {counts['update']} to update, "
        f"{counts['delete']} to delete, {counts['unchanged']} unchanged"
    )


def say_dialog_keys(screen: Screen[Any], enter: Mapping[type, str], otherwise: str) -> None:
    """Say on a dialog's `.dialog-keys` line what enter does where the focus is (a button: its
    label; a widget of a type in `enter`: that text; else `otherwise`), then tab and esc."""
    focused = screen.focused
    if isinstance(focused, Button):
        what = str(focused.label).lower()
    else:
        what = next((text for kind, text in enter.items() if isinstance(focused, kind)), otherwise)
    for line in screen.query(".dialog-keys").results(Static):
        line.update(Text(f"enter {what} · tab next · esc cancel", style="dim"))


class _Dialog(ModalScreen[bool]):
    """A dialog answering True (go ahead) or False (cancel); its last line says the keys."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def _on_mount(self) -> None:
        self.query_one("#dialog").mount(Static("", classes="dialog-keys"))
        self.call_after_refresh(self._say_keys)

    def on_descendant_focus(self) -> None:
        self._say_keys()

    def _say_keys(self) -> None:
        # What enter does depends on the focus: Cancel has it first where something is destroyed.
        say_dialog_keys(self, {Input: "confirm (once typed)"}, "confirm")

    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(False)


class PlanScreen(_Dialog):
    """The deploy plan; Deploy has focus unless the plan deletes something."""

    def __init__(
        self,
        items: Sequence[PlanItem],
        title: str = "Deploy plan",
        warnings: Sequence[PlanWarning] = (),
    ) -> None:
        super().__init__()
        self.items = list(items)
        self.title_text = title
        self.warnings = list(warnings)

    def compose(self) -> ComposeResult:
        has_changes = any(i.action != "unchanged" for i in self.items)
        with Vertical(id="dialog", classes="dialog") as box:
            box.border_title = self.title_text
            yield Label(plan_counts(self.items), id="plan-counts")
            with VerticalScroll(id="plan-body"):
                yield Static(render_plan(self.items), id="plan")
            if self.warnings:
                yield Static(render_warnings(self.warnings), id="plan-warnings")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Deploy", id="confirm", variant="success", disabled=not has_changes)

    def on_mount(self) -> None:
        destructive = any(i.action == "delete" for i in self.items)
        confirm = self.query_one("#confirm", Button)
        self.set_focus(self.query_one("#cancel") if destructive or confirm.disabled else confirm)

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.dismiss(True)


class UndeployScreen(_Dialog):
    """Lists what will be destroyed; Cancel has the focus."""

    def __init__(
        self,
        names: Sequence[str],
        details: dict[str, str] | None = None,
        warnings: Sequence[PlanWarning] = (),
    ) -> None:
        super().__init__()
        self.names = list(names)
        self.details = details or {}
        self.warnings = list(warnings)

    def compose(self) -> ComposeResult:
        body = Text()
        body.append("This destroys the deployed endpoint", style="bold")
        body.append("s" if len(self.names) != 1 else "", style="bold")
        body.append(" (worker stopped, URL gone):\n")
        for name in self.names:
            body.append("  - ", style="bold red")
            body.append(name, style="bold")
            if self.details.get(name):
                body.append(f"  {self.details[name]}", style="dim")
            body.append("\n")
        with Vertical(id="dialog", classes="dialog danger") as box:
            box.border_title = "Undeploy"
            yield Static(body, id="undeploy-list")
            if self.warnings:
                yield Static(render_warnings(self.warnings), id="plan-warnings")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Undeploy", id="confirm", variant="error")

    def on_mount(self) -> None:
        self.set_focus(self.query_one("#cancel"))

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.dismiss(True)


class UndeployAllScreen(_Dialog):
    """Undeploy everything: enabled only once the project name is typed exactly."""

    def __init__(self, project: str, names: Sequence[str]) -> None:
        super().__init__()
        self.project = project
        self.names = list(names)

    def compose(self) -> ComposeResult:
        body = Text()
        body.append(f"Destroys all {len(self.names)} deployed endpoints of ", style="bold")
        body.append(self.project, style="bold red")
        body.append(":\n")
        body.append(
            "  " + ", ".join(self.names) if self.names else "  (none deployed)", style="dim"
        )
        with Vertical(id="dialog", classes="dialog danger") as box:
            box.border_title = "Undeploy all"
            yield Static(body, id="undeploy-list")
            yield Label(f"Type the project name ({self.project}) to confirm:")
            yield Input(placeholder="project name", id="project-name")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Undeploy all", id="confirm", variant="error", disabled=True)

    def on_mount(self) -> None:
        self.set_focus(self.query_one("#project-name"))

    @on(Input.Changed, "#project-name")
    def _typed(self, event: Input.Changed) -> None:
        self.query_one("#confirm", Button).disabled = event.value.strip() != self.project

    @on(Input.Submitted, "#project-name")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.project:
            self.dismiss(True)

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        if self.query_one("#project-name", Input).value.strip() == self.project:
            self.dismiss(True)


class RestartScreen(_Dialog):
    """Restart one endpoint's worker: what happens to it, then Restart (focused) or Cancel."""

    def __init__(self, name: str, url: str = "") -> None:
        super().__init__()
        self.endpoint = name
        self.url = url

    def compose(self) -> ComposeResult:
        body = Text()
        body.append("Restart ", style="bold")
        body.append(self.endpoint, style="bold")
        if self.url:
            body.append(f"  {self.url}", style="dim")
        body.append(
            "\nIts worker is stopped and started again from the same build and config: "
            "requests in flight fail, the URL and key stay."
        )
        with Vertical(id="dialog", classes="dialog") as box:
            box.border_title = "Restart"
            yield Static(body, id="restart-text")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Restart", id="confirm", variant="warning")

    def on_mount(self) -> None:
        self.set_focus(self.query_one("#confirm"))

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.dismiss(True)
