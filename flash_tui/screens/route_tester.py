"""Route tester: pick a route or function, edit a JSON body prefilled from its signature, send.

The calls come typed from the engine (`engine.invoke.list_calls`); `BackendTester` sends them
through the app's Backend.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError
from rich.console import Group
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from engine.invoke import CallSignature, CallSpec, RemoteError
from flash_tui import present
from flash_tui.backend import Backend, BackendError, request_body
from flash_tui.widgets.panes import titled


@dataclass(frozen=True)
class RouteTarget:
    """Something the tester can call: an LB route or a QB function of an endpoint."""

    call: CallSpec
    signature: tuple[Mapping[str, Any], ...] = ()
    deployed: bool = True
    # For a class method: the constructor's parameters (sent under `init`, see engine.invoke).
    init_signature: tuple[Mapping[str, Any], ...] = ()

    @property
    def endpoint(self) -> str:
        """The endpoint the call goes to."""
        return self.call.endpoint

    @property
    def function(self) -> str:
        """The function's name; `Class.method` for a class method."""
        name = self.call.function or ""
        return f"{name}.{self.call.class_method}" if self.call.class_method else name

    @property
    def method(self) -> str | None:
        """The HTTP method of an LB route (None for a queue job)."""
        return self.call.method if self.call.is_load_balanced else None

    @property
    def path(self) -> str | None:
        """The path of an LB route (None for a queue job)."""
        return self.call.path if self.call.is_load_balanced else None

    @property
    def kind(self) -> str:
        """`route` for load-balanced routes, `function` for queue-based functions."""
        return "route" if self.method else "function"

    @property
    def title(self) -> str:
        """`POST /compute` or `cpu_worker:embed`."""
        return f"{self.method} {self.path}" if self.method else f"{self.endpoint}:{self.function}"


def route_targets(calls: Iterable[CallSignature], deployed: Iterable[str]) -> list[RouteTarget]:
    """The project's calls as tester targets: deployed endpoints first, then routes first."""
    running = set(deployed)
    targets = [
        RouteTarget(c.call, c.signature, c.call.endpoint in running, c.init_signature)
        for c in calls
    ]
    targets.sort(
        key=lambda t: (not t.deployed, t.kind != "route", t.endpoint, t.path or t.function)
    )
    return targets


@dataclass
class TesterResponse:
    """What came back, ready to show."""

    status: int | str
    latency_ms: float | None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    ok: bool = True
    # The remote exception: type, message and where in the user's code.
    remote_error: RemoteError | None = None


@dataclass
class HistoryEntry:
    """One request sent in this session."""

    target: RouteTarget
    body: str
    response: TesterResponse
    # The extra headers sent (an Authorization value is never kept here).
    headers: dict[str, str] = field(default_factory=dict)


# Kept per project across runs, bounded: what was sent (headers without Authorization) and the
# status, never a response body (an endpoint may echo a key back).
HISTORY_FILE = Path(".flash") / "route_history.json"
HISTORY_LIMIT = 50
_NOT_KEPT = "(the response of an earlier run is not kept)"


class _StoredEntry(BaseModel):
    """One history entry as `.flash/route_history.json` holds it."""

    title: str
    body: str
    status: int | str
    ok: bool
    latency_ms: float | None = None
    headers: dict[str, str] = {}


class _StoredHistory(BaseModel):
    entries: list[_StoredEntry]


def load_history(path: Path, targets: Sequence[RouteTarget]) -> list[HistoryEntry]:
    """The entries saved in `path` whose call still exists (none when missing or unreadable)."""
    try:
        stored = _StoredHistory.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return []
    by_title = {target.title: target for target in targets}
    return [
        HistoryEntry(
            by_title[entry.title],
            entry.body,
            TesterResponse(entry.status, entry.latency_ms, body=_NOT_KEPT, ok=entry.ok),
            without_authorization(entry.headers),
        )
        for entry in stored.entries[-HISTORY_LIMIT:]
        if entry.title in by_title
    ]


def save_history(path: Path, history: Sequence[HistoryEntry]) -> None:
    """Write the last HISTORY_LIMIT entries (atomically: a crash leaves the old file)."""
    entries = []
    for entry in history[-HISTORY_LIMIT:]:
        entries.append(
            _StoredEntry(
                title=entry.target.title,
                body=entry.body,
                status=entry.response.status,
                ok=entry.response.ok,
                latency_ms=entry.response.latency_ms,
                headers=without_authorization(entry.headers),
            )
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(_StoredHistory(entries=entries).model_dump_json(indent=1))
    os.replace(scratch, path)


# Clipboard commands whose exit status says the text reached a clipboard.
_CLIPBOARD_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("pbcopy",),
    ("wl-copy",),
    ("xclip", "-selection", "clipboard"),
    ("xsel", "--clipboard", "--input"),
)


def copy_with_command(text: str) -> str | None:
    """Copy through the first clipboard command found; its name when it succeeded, else None."""
    for command in _CLIPBOARD_COMMANDS:
        if shutil.which(command[0]) is None:
            continue
        try:
            done = subprocess.run(command, input=text.encode(), timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return command[0]
    return None


def without_authorization(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers minus any Authorization (it holds a key: never stored, never replayed)."""
    return {k: v for k, v in headers.items() if k.lower() != "authorization"}


def parse_headers(text: str) -> dict[str, str]:
    """`Name: value; Other: value` as a dict; ValueError naming the entry that is not one."""
    headers: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, colon, value = part.partition(":")
        name = name.strip()
        if not colon or not name or any(c.isspace() for c in name):
            raise ValueError(f"headers: {part.strip()[:40]!r} is not 'Name: value'")
        headers[name] = value.strip()
    return headers


def headers_text(headers: Mapping[str, str]) -> str:
    """The headers field's text for `headers`."""
    return "; ".join(f"{k}: {v}" for k, v in headers.items())


def body_title(target: RouteTarget) -> str:
    """What the editor holds: query parameters for GET/DELETE, a JSON body otherwise."""
    if target.method in ("GET", "DELETE"):
        return "Query parameters (JSON object, sent as ?name=value)"
    return "Body (JSON)"


class TesterBackend(Protocol):
    """What the screen needs from the app (which calls the engine)."""

    def targets(self) -> Sequence[RouteTarget]: ...

    def send(
        self, target: RouteTarget, body: Any, headers: Mapping[str, str]
    ) -> Awaitable[TesterResponse]: ...

    def curl(
        self, target: RouteTarget, body: Any, reveal_key: bool, headers: Mapping[str, str]
    ) -> Awaitable[str]: ...


class BackendTester:
    """The tester's targets as given; requests through the app's Backend."""

    def __init__(self, backend: Backend, targets: Sequence[RouteTarget]) -> None:
        self._backend = backend
        self._targets = list(targets)

    def targets(self) -> list[RouteTarget]:
        """Routes and functions, deployed endpoints first."""
        return list(self._targets)

    async def send(
        self, target: RouteTarget, body: Any, headers: Mapping[str, str]
    ) -> TesterResponse:
        """Invoke through the engine and convert its InvokeResult for display."""
        result = await self._backend.invoke(target.call, body, headers)
        shown = result.body if result.call.is_load_balanced else result.result
        if result.error and shown is None:
            shown = {"error": result.error}
        status: int | str = result.status_code or "error"
        job = result.job_status
        if job and job != "COMPLETED":
            # A queue job answers HTTP 200 whatever became of it: its status is the news.
            status = str(job)
        headers = {str(k): str(v) for k, v in result.headers.items()}
        if job:
            headers.setdefault("job status", str(job))
        return TesterResponse(
            status=status,
            latency_ms=result.latency_ms,
            headers=headers,
            body=shown,
            ok=result.ok,
            remote_error=result.remote_error,
        )

    async def curl(
        self, target: RouteTarget, body: Any, reveal_key: bool, headers: Mapping[str, str]
    ) -> str:
        """A curl command for the request (key redacted unless asked)."""
        return await self._backend.curl(target.call, body, reveal_key, headers)


def prefill(target: RouteTarget) -> str:
    """The JSON body prefilled from the function's parameters."""
    body = present.prefill_body(target.signature)
    if target.init_signature:
        body["init"] = present.prefill_body(target.init_signature)
    return json.dumps(body, indent=2)


def render_response(response: TesterResponse) -> Group:
    """Status and latency line, headers grid and a pretty-printed body."""
    status = Text()
    good = response.ok and (not isinstance(response.status, int) or response.status < 400)
    status.append(
        f" {response.status} ", style="bold black on green" if good else "bold white on red"
    )
    status.append(f"  {present.latency(response.latency_ms)}", style="bold")
    remote = response.remote_error
    if remote is not None:
        # What failed and where in the user's code, above the raw body.
        status.append("\n")
        status.append(remote.type, style="bold red")
        if remote.message:
            status.append(f": {remote.message}")
        if remote.location:
            status.append(f"  at {remote.location}", style="bold")
    headers = Table.grid(padding=(0, 1))
    headers.add_column(style="cyan", no_wrap=True)
    headers.add_column(overflow="fold")
    for key in sorted(response.headers):
        headers.add_row(key, str(response.headers[key]))
    if isinstance(response.body, (dict, list, int, float, bool)) or response.body is None:
        body: Any = Syntax(
            json.dumps(response.body, indent=2), "json", theme="ansi_dark", word_wrap=True
        )
    else:
        body = Text(str(response.body))
    return Group(status, Text(""), body, Text(""), Text("headers", style="bold underline"), headers)


class RouteTesterScreen(Screen[None]):
    """The route tester; `ctrl+s` / `ctrl+enter` sends, history is kept in `.flash/`."""

    CSS_PATH = "route_tester.tcss"

    class Copied(Message):
        """A curl command was built and copied to the clipboard."""

        def __init__(self, command: str) -> None:
            super().__init__()
            self.command = command

    BINDINGS = [
        Binding("escape", "close", "Back"),
        Binding("ctrl+s", "send", "Send", priority=True),
        Binding("ctrl+enter", "send", "Send", show=False, priority=True),
        Binding("ctrl+y", "copy_curl", "Copy curl", priority=True),
        Binding("ctrl+k", "copy_curl_key", "Curl+key", show=False, priority=True),
    ]

    def __init__(
        self,
        backend: TesterBackend,
        history: list[HistoryEntry] | None = None,
        initial: str | None = None,
        initial_function: str | None = None,
        history_file: Path | None = None,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.history = history if history is not None else []
        # Where the history is kept across runs (None: this session only).
        self.history_file = history_file
        # The endpoint (and function) selected on the dashboard: the tester opens on it.
        self.initial = initial
        self.initial_function = initial_function
        self._targets: list[RouteTarget] = list(backend.targets())
        self._current: RouteTarget | None = None
        self.last_curl: str | None = None
        # Where the last curl command went: a command's name, "osc52" (unconfirmable), or None.
        self.copied_via: str | None = None
        if not self.history and history_file is not None:
            self.history.extend(load_history(history_file, self._targets))

    def compose(self) -> ComposeResult:
        with Horizontal(id="tester"):
            with Vertical(id="tester-left"):
                yield titled(
                    OptionList(*self._target_options(), id="targets"), "Routes & functions"
                )
                yield titled(OptionList(id="history"), "History")
            with Vertical(id="tester-right"):
                yield Label("", id="target-title")
                yield Input(
                    placeholder="headers: Name: value; Other: value", id="headers", compact=True
                )
                yield titled(
                    TextArea(
                        "", language="json", id="body", soft_wrap=True, show_line_numbers=False
                    ),
                    "Body (JSON)",
                )
                with Horizontal(id="tester-buttons"):
                    yield Button("Send ^s", id="send", variant="primary", compact=True)
                    yield Button("Copy as curl ^y", id="curl", compact=True)
                with titled(VerticalScroll(id="response-box"), "Response"):
                    yield Static(Text("Not sent yet.", style="dim"), id="response")
        yield Footer(compact=True)

    def _target_options(self) -> list[Option]:
        options = []
        for i, target in enumerate(self._targets):
            text = Text()
            if target.method:
                text.append(f"{target.method:<6}", style="bold cyan")
                text.append(str(target.path))
                text.append(f"  {target.endpoint}", style="dim")
            else:
                text.append("ƒ ", style="green")
                text.append(target.function)
                text.append(f"  {target.endpoint}", style="dim")
            if not target.deployed:
                # Still listed (its body can be prepared), but visibly not callable yet.
                text.stylize("dim italic")
            options.append(Option(text, id=str(i)))
        return options

    def on_mount(self) -> None:
        targets = self.query_one("#targets", OptionList)
        if not self._targets:
            self.query_one("#target-title", Label).update(
                "No routes or functions: deploy an endpoint first (d / D)."
            )
            return
        index = next((i for i, target in enumerate(self._targets) if self._is_initial(target)), 0)
        targets.highlighted = index
        self._select(self._targets[index])
        self._show_history()
        targets.focus()

    def _is_initial(self, target: RouteTarget) -> bool:
        # Deployed or not: the selection is what the person chose (an undeployed target says
        # so when sent), not a reason to open on another endpoint.
        if self.initial is None or target.endpoint != self.initial:
            return False
        function = self.initial_function
        # A class node stands for its methods (`TextAnalyzer` -> `TextAnalyzer.keywords`).
        return function is None or target.function.split(".")[0] == function

    def _select(self, target: RouteTarget) -> None:
        self._current = target
        where = (
            target.title if target.method else f"{target.endpoint} · {target.function} (queue job)"
        )
        self.query_one("#target-title", Label).update(Text(where, style="bold"))
        body = self.query_one("#body", TextArea)
        body.border_title = body_title(target)
        body.text = prefill(target)

    @on(OptionList.OptionHighlighted, "#targets")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id is not None:
            target = self._targets[int(event.option.id)]
            if target != self._current:
                self._select(target)

    @on(OptionList.OptionSelected, "#targets")
    def _chosen(self) -> None:
        self.query_one("#body", TextArea).focus()

    @on(OptionList.OptionSelected, "#history")
    def _replay(self, event: OptionList.OptionSelected) -> None:
        entry = self.history[int(event.option.id or 0)]
        self._current = entry.target
        self.query_one("#target-title", Label).update(Text(entry.target.title, style="bold"))
        body = self.query_one("#body", TextArea)
        body.border_title = body_title(entry.target)
        body.text = entry.body
        self.query_one("#headers", Input).value = headers_text(entry.headers)
        self.query_one("#response", Static).update(render_response(entry.response))

    def _body(self) -> Any | None:
        """Exactly the editor's text, as the body to send (None, said why, when not JSON)."""
        try:
            return request_body(self.query_one("#body", TextArea).text)
        except BackendError as exc:
            self.notify(f"Body is not valid JSON: {exc}", severity="error", title="Cannot send")
            return None

    def _headers(self) -> dict[str, str] | None:
        """The headers field parsed (None, said why, when an entry is not `Name: value`)."""
        try:
            return parse_headers(self.query_one("#headers", Input).value)
        except ValueError as exc:
            self.notify(str(exc), severity="error", title="Cannot send")
            return None

    def action_send(self) -> None:
        if self._current is None:
            self.notify("Pick a route or function first", severity="warning")
            return
        body = self._body()
        headers = self._headers()
        if body is None or headers is None:
            return
        self.query_one("#response", Static).update(
            Text(f"Sending {self._current.title} …", style="italic")
        )
        self._send(self._current, body, headers)

    @on(Input.Submitted, "#headers")
    def _headers_submitted(self) -> None:
        self.action_send()

    @on(Button.Pressed, "#send")
    def _send_pressed(self) -> None:
        self.action_send()

    @work(exclusive=True, group="send")
    async def _send(self, target: RouteTarget, body: Any, headers: dict[str, str]) -> None:
        try:
            response = await self.backend.send(target, body, headers)
        except Exception as exc:  # shown to the person, who can fix the request and resend
            response = TesterResponse(status="error", latency_ms=None, body=str(exc), ok=False)
        # The text as sent: replaying it shows what went out, not a reformatted copy.
        kept = without_authorization(headers)
        self.history.append(HistoryEntry(target, str(body), response, kept))
        self.query_one("#response", Static).update(render_response(response))
        self._show_history()
        if self.history_file is not None:
            try:
                save_history(self.history_file, self.history)
            except OSError as exc:
                self.notify(f"{self.history_file}: {exc.strerror}", title="History not saved")

    def _show_history(self) -> None:
        history = self.query_one("#history", OptionList)
        history.clear_options()
        for i, entry in reversed(list(enumerate(self.history))):
            line = Text(f"{entry.response.status} ", style="green" if entry.response.ok else "red")
            line.append(entry.target.title)
            history.add_option(Option(line, id=str(i)))

    def _copy(self, reveal: bool) -> None:
        if self._current is None:
            return
        body = self._body()
        headers = self._headers()
        if body is None or headers is None:
            return
        self._copy_curl(self._current, body, reveal, headers)

    @work(exclusive=True, group="curl")
    async def _copy_curl(
        self, target: RouteTarget, body: Any, reveal: bool, headers: dict[str, str]
    ) -> None:
        try:
            self.last_curl = await self.backend.curl(target, body, reveal, headers)
        except Exception as exc:  # e.g. not deployed: there is no URL to copy yet
            self.notify(str(exc), title="Cannot build the curl command", severity="warning")
            return
        command = await asyncio.to_thread(copy_with_command, self.last_curl)
        if get_current_worker().is_cancelled:
            return
        note = "with the endpoint key" if reveal else "key redacted; ctrl+k includes it"
        if command is not None:
            self.copied_via = command
            said = f"copied to the clipboard ({command}):"
            self.notify(f"curl command copied with {command} ({note})", title="Copied")
        else:
            # OSC 52 cannot be confirmed (many terminals ignore it): say so, show the command.
            self.app.copy_to_clipboard(self.last_curl)
            self.copied_via = "osc52"
            said = "sent to the terminal's clipboard (OSC 52, unconfirmed); select it below:"
            self.notify(
                f"curl command sent to the terminal's clipboard (OSC 52) — shown below ({note})",
                title="Curl command",
            )
        self.post_message(self.Copied(self.last_curl))
        self.query_one("#response", Static).update(
            Group(
                Text(f"curl command ({note}), {said}", style="dim"),
                Text(self.last_curl, overflow="fold"),
            )
        )

    def action_copy_curl(self) -> None:
        self._copy(False)

    def action_copy_curl_key(self) -> None:
        self._copy(True)

    @on(Button.Pressed, "#curl")
    def _curl_pressed(self) -> None:
        self._copy(False)

    def action_close(self) -> None:
        self.dismiss(None)
