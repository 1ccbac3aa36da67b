"""`flash-tui plan [NAME...] [--json]`: what a deploy would create, update, delete or keep.

Also home of the small helpers the deployment subcommands share (project option, running an
engine operation, rendering a plan and its outcome, asking for confirmation, printing
progress), so each of them stays short.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.app_environments import environment_name_problem
from engine.cli.arguments import add_command
from engine.operations import DeployReport, Engine, OpError, OpEvent, app_name
from engine.plan import PLAN_MARKS, Plan
from engine.provider import TARGETS
from engine.styles import PLAN_STYLES

__all__ = [
    "PlanConfirmation",
    "add_deployment_command",
    "ask",
    "cancel_on_interrupt",
    "add_project_option",
    "err_console",
    "json_out",
    "print_outcome",
    "print_plan",
    "progress_printer",
    "register",
    "run",
    "run_engine",
]

T = TypeVar("T")


def add_project_option(parser: argparse.ArgumentParser) -> None:
    """`--project PATH` (default: the current directory), `--target`, `--env` and `--json`."""
    parser.add_argument(
        "--project", default=".", metavar="PATH", help="project directory (default: .)"
    )
    parser.add_argument(
        "--target",
        dest="target_name",  # `invoke` has a positional `target` (what to call)
        default="local",
        choices=TARGETS,
        help="where endpoints run: the embedded local cloud (default) or RunPod Serverless",
    )
    parser.add_argument(
        "--env",
        default=None,
        metavar="NAME",
        help="the app's environment on RunPod (default: production)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def add_deployment_command(
    subparsers: Any,
    name: str,
    *,
    help: str,
    description: str,
    names_help: str,
    run: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """A subcommand that changes deployments: `NAME...`, `--yes`, `--project` and `--json`."""
    parser = add_command(subparsers, name, run=run, help=help, description=description)
    parser.add_argument("names", nargs="*", metavar="NAME", help=names_help)
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    add_project_option(parser)
    return parser


def err_console() -> Console:
    """Rich console on stderr (progress and errors, so stdout stays clean for --json)."""
    return Console(stderr=True, highlight=False)


def json_out(data: Any) -> None:
    """Print one JSON object on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def run_engine(args: argparse.Namespace, work: Callable[[Engine], Awaitable[int]]) -> int:
    """Run `work(engine)` for `--project`; OpError -> message on stderr (or JSON), exit 1; a
    bad `--env` exits 2 before any target is reached."""

    target = getattr(args, "target_name", "local")
    env = getattr(args, "env", None)
    problem = _env_problem(args, target, env)
    if problem is not None:
        _say_error(args, problem)
        return 2  # a bad argument, before any target is reached

    async def main() -> int:
        async with Engine(Path(args.project), target=target, env=env) as engine:
            return await work(engine)

    try:
        return asyncio.run(main())
    except OpError as exc:
        _say_error(args, str(exc))
        return 1
    except KeyboardInterrupt:
        err_console().print("[yellow]interrupted[/]")
        return 130


def _env_problem(args: argparse.Namespace, target: str, env: str | None) -> str | None:
    if env is None:
        return None
    # On the local cloud the environment is kept under the app's name: both must fit.
    app = app_name(Path(args.project)) if target != "runpod" else None
    problem = environment_name_problem(env, app)
    if problem is not None:
        return f"--env: {problem}"
    if target != "runpod" and not getattr(args, "local_env", False):
        return (
            f"--env is for --target runpod (the {target} target has environments only in "
            "mothership mode: `deploy --mothership`, `status`, `undeploy`, `invoke`, `logs`, "
            "`restart`)"
        )
    return None


def _say_error(args: argparse.Namespace, message: str) -> None:
    if getattr(args, "json", False):
        json_out({"ok": False, "error": message})
    else:
        err_console().print(f"[bold red]error[/]: {escape(message)}")


def _value(value: Any) -> str:
    return "—" if value is None else json.dumps(value)


def print_plan(console: Console, plan: Plan, title: str = "Plan") -> None:
    """The plan as a table: + create, ~ update (with field diffs), - delete, = unchanged; then
    its counts and its warnings (calls the plan would leave unanswered)."""
    table = Table(title=title, show_header=True, header_style="bold", title_justify="left")
    table.add_column("", width=1)
    table.add_column("endpoint")
    table.add_column("type")
    table.add_column("action")
    table.add_column("why / changes (deployed → local)")
    for item in plan.items:
        color = PLAN_STYLES[item.action]
        details = [escape(r) for r in item.reasons]
        for change in item.changes:
            details.append(
                f"[bold]{escape(change.field)}[/] {escape(_value(change.deployed))} → "
                f"{escape(_value(change.local))}"
            )
        table.add_row(
            f"[{color}]{PLAN_MARKS[item.action]}[/]",
            escape(item.name),
            escape(item.resource_type or ""),
            f"[{color}]{item.action}[/]",
            "\n".join(details),
        )
    console.print(table)
    counts = plan.counts()
    console.print(
        f"[{PLAN_STYLES['create']}]{counts['create']} to create[/], "
        f"[{PLAN_STYLES['update']}]{counts['update']} to update[/], "
        f"[{PLAN_STYLES['delete']}]{counts['delete']} to delete[/], {counts['unchanged']} unchanged"
    )
    for warning in plan.warnings:
        console.print(f"[bold yellow]warning[/]: {escape(warning.message)}")


class PlanConfirmation:
    """The `confirm` callback of deploy/undeploy: print the plan, then ask (`--yes` answers).

    With no terminal to ask and no `--yes`, or no answer at all (Ctrl+D, Ctrl+C), the answer is
    no and `refused` is set, so the command can say why (`report_refusal`) instead of reporting
    a cancellation: exit 1, or 130 after Ctrl+C.
    """

    def __init__(
        self, args: argparse.Namespace, console: Console, *, title: str, question: str, verb: str
    ) -> None:
        self._args = args
        self._console = console
        self._title = title
        self._question = question
        self.verb = verb
        self.refused = False
        self._why: str | None = None  # None: no terminal; "eof" / "interrupt" at the prompt
        # Set by Ctrl+C after the prompt (see `cancel_on_interrupt`): the exit status is 130.
        self.interrupted = asyncio.Event()

    async def __call__(self, plan: Plan) -> bool:
        if not self._args.json:
            print_plan(self._console, plan, title=self._title)
        if self._args.yes:
            return True
        if not sys.stdin.isatty():
            self.refused = True
            return False
        answer = ask(self._console, self._question)
        if answer in ("eof", "interrupt"):
            self.refused, self._why = True, answer
            return False
        return answer == "yes"

    def conclude(
        self,
        app: str,
        report: DeployReport,
        *,
        idle: bool,
        say_idle: Callable[[], None],
        done: str,
        failed: str,
    ) -> int:
        """How deploy and undeploy end: the refusal, the JSON report, a cancellation, nothing
        to do (`idle`, said by `say_idle`) or the failures and the verdict; the exit status."""
        if self.refused:
            return self.report_refusal(report)
        if self._args.json:
            json_out({"app": app, **report.to_dict()})
        elif report.cancelled:
            self._console.print("[yellow]Cancelled.[/] Nothing was changed.")
        elif report.interrupted:
            print_interrupted(self._console, report)
        elif idle:
            say_idle()
        else:
            print_outcome(self._console, report, done, failed)
        if self.interrupted.is_set():
            return 130
        return 0 if report.ok else 1

    def report_refusal(self, report: DeployReport) -> int:
        """Say why nothing was done (JSON or text); the exit status is 1, or 130 after Ctrl+C."""
        if self._why == "interrupt":
            message, code = "interrupted at the prompt: nothing changed", 130
        elif self._why == "eof":
            message, code = "no answer, nothing changed", 1
        else:
            message, code = (
                f"refusing to {self.verb} without confirmation: stdin is not a terminal. "
                "Pass --yes to confirm non-interactively.",
                1,
            )
        if self._args.json:
            json_out({**report.to_dict(), "ok": False, "error": message})
        elif code == 130:
            self._console.print(f"\n[yellow]{message}[/]")
        else:
            self._console.print(f"\n[bold red]error[/]: {message}")
        return code


def ask(console: Console, question: str) -> str:
    """Ask `question [y/N]` on the terminal: `yes`, `no`, or `eof` / `interrupt` (no answer)."""
    try:
        # Ctrl+C raises from the moment the question shows: a press right after the
        # prompt appears must not land in asyncio's handler, which the read never sees.
        with _interrupt_raises():
            console.print(f"{question} [bold]\\[y/N][/] ", end="")
            answer = _read_line()
    except EOFError:
        return "eof"
    except KeyboardInterrupt:
        return "interrupt"
    return "yes" if answer.strip().lower() in ("y", "yes") else "no"


@contextlib.contextmanager
def cancel_on_interrupt(console: Console, cancel: asyncio.Event) -> Iterator[None]:
    """Inside the block (on the running loop), the first Ctrl+C sets `cancel`, so the operation
    stops starting new work and ends in a consistent state; a second one interrupts at once."""
    loop = asyncio.get_running_loop()

    def on_interrupt() -> None:
        if cancel.is_set():
            loop.remove_signal_handler(signal.SIGINT)
            # Out of the event loop and asyncio.run: `run_engine` says "interrupted", exit 130.
            raise KeyboardInterrupt
        cancel.set()
        console.print(
            "\n[yellow]cancelling[/]: no more endpoints start; those starting finish "
            "(Ctrl+C again to stop waiting)"
        )

    try:
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def print_interrupted(console: Console, report: DeployReport) -> None:
    """A deploy cancelled mid-way: what it did, what it did not start, what to run next."""
    console.print(f"[yellow]Cancelled:[/] {escape(report.interrupted_summary())}")


def _read_line() -> str:
    """A line from the terminal (what was typed before Ctrl+D ends one too, as with input());
    EOFError when nothing was.

    Waits in short selects and reads only what is there, never blocking in read(): the kernel
    may hand Ctrl+C's signal to another thread of the process (asyncio's executor), and a main
    thread blocked in read() would not run the handler until Enter. Between two selects the
    handler runs and raises.
    """
    fd = sys.stdin.fileno()
    typed = b""
    while not typed.endswith(b"\n"):
        if not select.select([fd], [], [], 0.2)[0]:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            if typed:
                break
            raise EOFError
        typed += chunk
    return typed.decode(errors="replace")


@contextlib.contextmanager
def _interrupt_raises() -> Iterator[None]:
    """Ctrl+C raises KeyboardInterrupt at once inside the block: asyncio.run's own SIGINT
    handler only cancels the main task, which a thread blocked reading the terminal would not
    notice until Enter."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def print_outcome(console: Console, report: DeployReport, done: str, failed: str) -> None:
    """Each endpoint that failed with its reason, then the verdict and the time taken."""
    for result in report.outcome.failed() if report.outcome else []:
        console.print(f"[bold red]✗ {escape(result.name)}[/]: {escape(result.error or 'failed')}")
    verdict = f"[green]{done}[/]" if report.ok else f"[bold red]{failed}[/]"
    console.print(f"{verdict} in {report.elapsed_ms / 1000:.2f} s")


def progress_printer(console: Console, quiet: bool) -> Callable[[OpEvent], None]:
    """An `OpEvent` callback printing one line per meaningful step (on stderr)."""

    def on_event(event: OpEvent) -> None:
        if quiet:
            return
        if event.step == "build" and event.build_step:
            return  # per-step build progress is too chatty for a log-style output
        if event.step == "envs" and event.state == "installing":
            return  # one line per environment: its outcome, with the time it took
        if event.step in ("scan", "plan", "confirm"):
            return
        who = f"[bold]{escape(event.name)}[/] " if event.name else ""
        color = {"healthy": "green", "removed": "green", "error": "red"}.get(
            event.state or "", "cyan"
        )
        elapsed = event.elapsed_ms
        suffix = f" [dim]({elapsed:.0f} ms)[/]" if elapsed is not None else ""
        console.print(f"[{color}]•[/] {who}{escape(event.message)}{suffix}")

    return on_event


def register(subparsers: Any) -> None:
    """Add the `plan` subcommand."""
    parser = add_command(
        subparsers,
        "plan",
        run=run,
        help="show what deploy would create, update, delete or keep",
        description="Scan the project and compare each endpoint's config (and code) with "
        "what is deployed. Changes nothing.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these endpoints")
    parser.add_argument("--force", action="store_true", help="plan updating unchanged endpoints")
    add_project_option(parser)


def run(args: argparse.Namespace) -> int:
    """Print the plan."""

    async def work(engine: Engine) -> int:
        plan = await engine.plan(args.names or None, force=args.force)
        if args.json:
            json_out({"ok": True, "app": engine.app, **plan.to_dict()})
        else:
            console = Console(highlight=False)
            print_plan(console, plan, title=f"Plan for {engine.app}")
        return 0

    return run_engine(args, work)
