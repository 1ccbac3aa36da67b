"""`flash-tui build [PATH] [--json] [--deps]`: build the project into `.flash/archive.tar.gz`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine.cli.arguments import add_command
from engine.styles import SEVERITY_STYLES, style_of

if TYPE_CHECKING:
    from engine.build import BuildError, BuildProgress, BuildResult

STEP_LABELS = {
    "scan": "Scanning",
    "copy": "Copying files",
    "manifest": "Writing manifest",
    "handlers": "Generating handlers",
    "check": "Import-checking handlers",
    "deps": "Dependencies",
    "archive": "Packing archive",
}


def register(subparsers: Any) -> None:
    """Add the `build` subcommand."""
    parser = add_command(
        subparsers,
        "build",
        run=run,
        path=True,
        json=True,
        help="build .flash/.build and .flash/archive.tar.gz",
        description="Scan the project, generate one handler per endpoint, import-check them, "
        "and pack a reproducible .flash/archive.tar.gz.",
    )
    parser.add_argument(
        "--deps",
        action="store_true",
        help="pip-install requirements.txt and function dependencies into the build "
        "(for RunPod; the local cloud does not need it)",
    )


def _print_diagnostic(console: Console, d: Any) -> None:
    where = d.location
    style = style_of(d.severity, SEVERITY_STYLES)
    prefix = f"[{style}]{d.severity}[/] " + (f"[cyan]{where}[/] " if where else "")
    console.print(prefix, end="")
    # The message is user/tool text (tracebacks, paths): never interpret it as Rich markup.
    console.print(d.message, markup=False, highlight=False, soft_wrap=True)


def _print_error(console: Console, error: BuildError) -> None:
    console.print(f"[bold red]Build failed[/]: {escape(error.args[0])}")
    shown = [d for d in error.diagnostics if d.severity == "error"] or error.diagnostics
    for d in shown:
        _print_diagnostic(console, d)


def _print_result(console: Console, result: BuildResult) -> None:
    for d in result.warnings:
        _print_diagnostic(console, d)
    table = Table(title="Handlers", show_header=True, header_style="bold")
    table.add_column("resource")
    table.add_column("type")
    table.add_column("handler")
    table.add_column("functions", justify="right")
    for name in result.resources:
        resource = result.manifest["resources"][name]
        table.add_row(
            name,
            str(resource.get("resource_type", "")),
            str(resource.get("handler_file", f"handler_{name}.py")),
            str(len(resource.get("functions") or [])),
        )
    if result.resources:
        console.print(table)
    console.print(
        f"[bold green]Built[/] {result.archive} "
        f"({result.archive_bytes:,} bytes, build id {result.build_id[:12]}) in "
        f"{result.duration * 1000:.0f} ms — files copied {result.files_copied}, "
        f"unchanged {result.files_unchanged}, removed {result.files_removed}"
    )


def run(args: argparse.Namespace) -> int:
    """Build and report; exit code 1 when the build is refused or fails."""
    # Imported here so that `flash-tui --help` and other subcommands do not pay for it.
    from engine.build import BuildError, build_project

    if args.json:
        try:
            result = build_project(args.path, deps=args.deps)
        except BuildError as error:
            print(
                json.dumps(
                    {
                        "ok": False,
                        "error": error.args[0],
                        "step": error.step,
                        "diagnostics": [d.to_json() for d in error.diagnostics],
                    },
                    indent=2,
                )
            )
            return 1
        print(json.dumps({"ok": True, **result.to_json()}, indent=2))
        return 0

    console = Console(stderr=False)
    err_console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("Building", total=None)

        def on_progress(event: BuildProgress) -> None:
            bar.update(
                task,
                description=STEP_LABELS.get(event.step, event.step),
                completed=event.done,
                total=max(event.total, 1),
            )

        try:
            result = build_project(args.path, deps=args.deps, on_progress=on_progress)
        except BuildError as error:
            bar.stop()
            _print_error(err_console, error)
            return 1
    _print_result(console, result)
    return 0
