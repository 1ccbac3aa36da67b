"""The environment dialog: the app's environments on the target (the current one marked), a new
one by name, and beside them the deploy mode (direct | through the mothership) on RunPod; on the
local cloud the environment decides the mode, and the dialog says so instead of offering a
switch. It answers an `EnvironmentChoice`, or None when cancelled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, RadioButton, RadioSet, Static
from textual.widgets.option_list import Option

from engine.app_environments import AppEnvironment, environment_name_problem
from flash_tui.screens.confirm import say_dialog_keys

__all__ = ["EnvironmentChoice", "EnvironmentScreen"]


@dataclass(frozen=True)
class EnvironmentChoice:
    """The environment to work on and whether `D` deploys through its mothership."""

    name: str
    mothership: bool


_DECIDED = "the environment decides: local deploys directly, any other through its mothership"


class _ModeSet(RadioSet, inherit_bindings=False):
    """The deploy mode; `space` chooses, so `enter` stays the dialog's confirm."""

    BINDINGS = [
        Binding("down,right", "next_button", "Next", show=False),
        Binding("up,left", "previous_button", "Previous", show=False),
        Binding("space", "toggle_button", "Choose", show=False),
    ]


class EnvironmentScreen(ModalScreen["EnvironmentChoice | None"]):
    """Pick an environment (or name a new one) and the deploy mode; enter confirms, esc
    cancels and changes nothing."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("enter", "confirm", "Confirm", show=False),
    ]

    def __init__(
        self,
        environments: Sequence[AppEnvironment],
        current: str,
        mothership: bool,
        target: str,
        note: str = "",
        *,
        app_key: str | None = None,
    ) -> None:
        super().__init__()
        known = {e.name for e in environments}
        # The current environment is listed even before anything was deployed to it.
        shown = list(environments) if current in known else [AppEnvironment(current)]
        if current not in known:
            shown += list(environments)
        self.environments = sorted(shown, key=lambda e: e.name)
        self.current = current
        self.mothership = mothership
        self.target = target
        self.note = note
        # The app key: on the local cloud an environment is kept under it, and both must fit.
        self.app_key = app_key

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog") as box:
            box.border_title = "Environment"
            with Horizontal(id="env-columns"):
                with Vertical(id="env-pick"):
                    yield Label(f"Environments on {self.target}:")
                    yield OptionList(*self._options(), id="env-list")
                    yield Input(placeholder="new environment name", id="env-name")
                    yield Static("", id="env-problem")
                with Vertical(id="env-mode"):
                    yield Label("Deploy (D):")
                    if self._mode_decided:
                        yield Static(_DECIDED, id="mode-decided")
                    else:
                        with _ModeSet(id="deploy-mode"):
                            yield RadioButton("direct", value=not self.mothership, id="mode-direct")
                            yield RadioButton(
                                "through the mothership",
                                value=self.mothership,
                                id="mode-mothership",
                            )
            if self.note:
                yield Static(Text(self.note, style="yellow"), id="env-note")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Switch", id="confirm", variant="primary")
            yield Static("", classes="dialog-keys")

    @property
    def _mode_decided(self) -> bool:
        # engine.app_environments.picked_session: on the local cloud the name decides the mode.
        return self.target != "runpod"

    def _options(self) -> list[Option]:
        options = []
        for env in self.environments:
            line = Text()
            mine = env.name == self.current
            line.append("● " if mine else "  ", style="bold green")
            line.append(env.name, style="bold" if mine else "")
            if env.mothership:
                line.append(f"  ⌂ {env.mothership}", style="dim")
            if mine:
                line.append("  (current)", style="dim")
            options.append(Option(line, id=env.name))
        return options

    def on_mount(self) -> None:
        listing = self.query_one("#env-list", OptionList)
        names = [e.name for e in self.environments]
        listing.highlighted = names.index(self.current)
        self.set_focus(listing)
        self.call_after_refresh(self._say_keys)

    def on_descendant_focus(self) -> None:
        self._say_keys()

    def _say_keys(self) -> None:
        say_dialog_keys(
            self,
            {Input: "switch to the typed name", RadioSet: "confirm · space choose mode"},
            "switch to the highlighted one",
        )

    def _mode(self) -> bool:
        if self._mode_decided:
            return self.mothership  # picked_session decides from the name
        return self.query_one("#mode-mothership", RadioButton).value

    def _choose(self, name: str) -> None:
        problem = environment_name_problem(name, None if self.target == "runpod" else self.app_key)
        if problem is not None:
            self.query_one("#env-problem", Static).update(Text(problem, style="bold red"))
            self.set_focus(self.query_one("#env-name", Input))
            return
        self.dismiss(EnvironmentChoice(name, self._mode()))

    def _highlighted(self) -> str:
        listing = self.query_one("#env-list", OptionList)
        index = listing.highlighted
        return self.environments[index].name if index is not None else self.current

    def action_confirm(self) -> None:
        """The typed name when there is one, else the highlighted environment."""
        typed = self.query_one("#env-name", Input).value.strip()
        self._choose(typed if typed else self._highlighted())

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(OptionList.OptionSelected, "#env-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._choose(str(event.option.id))

    @on(Input.Submitted, "#env-name")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        typed = event.value.strip()
        self._choose(typed if typed else self._highlighted())

    @on(Input.Changed, "#env-name")
    def _typed(self) -> None:
        self.query_one("#env-problem", Static).update("")

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.action_confirm()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
