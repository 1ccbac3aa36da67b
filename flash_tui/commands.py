"""Every app action in one table: key bindings, footer, help screen and command palette."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol, runtime_checkable

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content


@dataclass(frozen=True)
class AppAction:
    """One action: its key, its `action_*` name on the app, footer title and help text."""

    key: str
    action: str
    title: str
    help: str
    show: bool = True
    palette: str = ""

    @property
    def name(self) -> str:
        """Title in the command palette (footer titles are terse, the palette spells it out)."""
        return self.palette or self.title


ACTIONS: list[AppAction] = [
    AppAction("b", "build", "Build", "Build the project (.flash/.build + archive), with progress"),
    AppAction("d", "deploy", "Deploy", "Deploy the selected endpoint (plan shown first)"),
    AppAction(
        "D", "deploy_all", "All", "Deploy everything via the plan (+ ~ - =)", palette="Deploy all"
    ),
    AppAction("u", "undeploy", "Undeploy", "Undeploy the selected endpoint (confirm)"),
    AppAction(
        "U",
        "undeploy_all",
        "All",
        "Undeploy every endpoint (type the project name)",
        palette="Undeploy all",
    ),
    AppAction(
        "R",
        "restart",
        "Restart",
        "Restart the selected endpoint's worker (confirm; local cloud)",
        show=False,
    ),
    AppAction("t", "test_route", "Test", "Route tester: send a request to a route or function"),
    AppAction("l", "logs", "Log", "Full-screen logs: follow, filter, search", palette="Logs"),
    AppAction(
        "e",
        "edit",
        "Edit",
        "Open the selected function, endpoint or diagnostic in $EDITOR at its line",
        show=False,
        palette="Edit in $EDITOR",
    ),
    AppAction(
        "w",
        "watch_deploy",
        "Watch",
        "Watch-deploy on/off: every save redeploys the endpoints that changed (as `dev`)",
        show=False,
        palette="Watch-deploy on/off",
    ),
    AppAction("r", "rescan", "Scan", "Rescan the project now", palette="Rescan"),
    AppAction(
        "h",
        "probe_health",
        "Ping",
        "Probe the health of every endpoint now",
        palette="Probe health",
    ),
    AppAction(
        "T",
        "switch_target",
        "Target",
        "Switch target: the local cloud or RunPod (the header names it and the account)",
        show=False,
        palette="Switch target",
    ),
    AppAction(
        "M",
        "toggle_mothership",
        "Mothership",
        "Deploy mode: direct, or through the environment's mothership, which provisions the "
        "rest (D deploys it; the header says which)",
        show=False,
        palette="Deploy through mothership",
    ),
    AppAction(
        "E",
        "pick_environment",
        "Env",
        "Environment and deploy mode: the app's environments on the target, a new one by "
        "name, direct or through the mothership (the header names the environment)",
        show=False,
        palette="Environment and deploy mode",
    ),
    AppAction("question_mark", "help", "Help", "This help"),
    AppAction("q", "quit", "Quit", "Quit (deployed endpoints keep running)"),
]

# Keys as a person reads them (the binding names of `?` and friends are not that).
DISPLAY_KEYS = {"question_mark": "?"}


def bindings() -> list[Binding]:
    """Key bindings for the app, generated from ACTIONS so the three views never disagree."""
    return [
        Binding(a.key, a.action, a.title, show=a.show, key_display=DISPLAY_KEYS.get(a.key))
        for a in ACTIONS
    ]


@runtime_checkable
class EndpointCommands(Protocol):
    """What the palette's per-endpoint commands need of the app."""

    def endpoint_names(self) -> list[str]:
        """Every endpoint in the code or deployed."""
        ...

    def deployed_names(self) -> list[str]:
        """Endpoints the target reports as deployed."""
        ...

    def deploy_endpoint(self, name: str | None) -> None:
        """Deploy one endpoint (the plan shown first)."""
        ...

    def undeploy_endpoint(self, name: str | None) -> None:
        """Undeploy one endpoint (confirmed first)."""
        ...

    def open_logs(self, endpoint: str | None = None) -> None:
        """The logs screen filtered to one endpoint."""
        ...

    def restart_endpoint(self, name: str | None) -> None:
        """Restart one deployed endpoint's worker (confirmed first)."""
        ...


@dataclass(frozen=True)
class _Command:
    title: str
    key: str
    run: Callable[[], object]
    help: str

    def display(self, title: Content | None = None) -> Content:
        """The title (highlighted where it matched), then its key, dimmed."""
        shown = title if title is not None else Content(self.title)
        return shown + Content.styled(f"  {self.key}", "dim") if self.key else shown


class FlashCommands(Provider):
    """Command-palette provider: every action by name with its key, and on the dashboard
    `Deploy <endpoint>`, `Logs <endpoint>`, `Undeploy <endpoint>` and `Restart <endpoint>`
    (deployed ones) too."""

    def _commands(self) -> list[_Command]:
        return [
            _Command(
                a.name,
                DISPLAY_KEYS.get(a.key, a.key),
                partial(self.app.run_action, a.action),
                a.help,
            )
            for a in ACTIONS
        ]

    def _endpoint_commands(self) -> list[_Command]:
        from flash_tui.screens.dashboard import DashboardScreen

        app = self.app
        if not isinstance(app, EndpointCommands) or not isinstance(self.screen, DashboardScreen):
            return []
        deployed = set(app.deployed_names())
        commands: list[_Command] = []
        for name in app.endpoint_names():
            commands.append(
                _Command(
                    f"Deploy {name}",
                    "",
                    partial(app.deploy_endpoint, name),
                    f"Deploy {name} (the plan shown first)",
                )
            )
            commands.append(
                _Command(f"Logs {name}", "", partial(app.open_logs, name), f"{name}'s log lines")
            )
            if name in deployed:
                commands.append(
                    _Command(
                        f"Undeploy {name}",
                        "",
                        partial(app.undeploy_endpoint, name),
                        f"Undeploy {name} (confirmed first)",
                    )
                )
                commands.append(
                    _Command(
                        f"Restart {name}",
                        "",
                        partial(app.restart_endpoint, name),
                        f"Restart {name}'s worker (confirmed first)",
                    )
                )
        return commands

    async def discover(self) -> Hits:
        for command in self._commands():
            yield DiscoveryHit(
                command.display(), command.run, text=command.title, help=command.help
            )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands() + self._endpoint_commands():
            score = max(matcher.match(command.title), matcher.match(command.help) * 0.8)
            if score > 0:
                yield Hit(
                    score,
                    command.display(matcher.highlight(command.title)),
                    command.run,
                    text=command.title,
                    help=command.help,
                )
