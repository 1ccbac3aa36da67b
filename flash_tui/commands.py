"""Every app action in one table: key bindings, footer, help screen and command palette."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider


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


class FlashCommands(Provider):
    """Command-palette provider offering every action by name."""

    def _commands(self) -> list[tuple[str, str, str]]:
        return [(a.name, a.action, a.help) for a in ACTIONS]

    async def discover(self) -> Hits:
        for title, action, help_text in self._commands():
            yield DiscoveryHit(title, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, action, help_text in self._commands():
            score = max(matcher.match(title), matcher.match(help_text) * 0.8)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(title),
                    partial(self.app.run_action, action),
                    help=help_text,
                )
