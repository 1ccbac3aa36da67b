"""`flash-tui scan [PATH] [--json]`: what the scanner sees — endpoints, functions, routes, problems.

Human output is a Rich tree (endpoints -> functions / routes, with QB/LB, CPU/GPU and live
badges) on stdout and a diagnostics table on stderr. `--json` prints one JSON object: the
manifest keys plus `diagnostics` [{severity, file, line, message, code}] and `calls` (the call
graph: [{caller, caller_function, callee, callee_function, file, line}]). Exit code 1 when
there is any error diagnostic (or PATH is not a directory); a directory without Flash code is
not an error: it prints an empty manifest and a hint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from engine.callgraph import CallGraph, describe
from engine.cli.arguments import add_command
from engine.diagnostics import Diagnostic
from engine.styles import SEVERITY_STYLES, style_of
from engine.wording import plural

NOT_A_DIRECTORY = "scan-not-a-directory"


def register(subparsers: Any) -> None:
    """Add the `scan` subcommand."""
    add_command(
        subparsers,
        "scan",
        run=run,
        path=True,
        json="print one JSON object (manifest + diagnostics)",
        help="list the project's endpoints, functions, routes and problems",
        description="Scan a Flash project (AST only, never imports it) and show its manifest: "
        "endpoints, functions, routes and diagnostics. Exit code 1 on error diagnostics.",
    )


def _badges(resource: dict[str, Any]) -> str:
    from runtime.resourcekinds import RESOURCE_TYPES

    kind = RESOURCE_TYPES.get(str(resource.get("resource_type")))
    parts = [
        "[bold magenta]LB[/]" if resource.get("is_load_balanced") else "[bold blue]QB[/]",
        "[green]CPU[/]" if kind is not None and kind.is_cpu else "[yellow]GPU[/]",
    ]
    if resource.get("is_live_resource"):
        parts.append("[cyan]live[/]")
    if resource.get("config_hash") is None:
        parts.append("[dim]config unresolved[/]")
    return " ".join(parts)


def render_tree(manifest: dict[str, Any], calls: CallGraph | None = None) -> Tree:
    """The endpoints -> functions/routes tree of a manifest (with each endpoint's calls)."""
    resources = manifest.get("resources") or {}
    tree = Tree(
        f"[bold]{escape(str(manifest.get('project_name', '')))}[/] — "
        f"{plural(len(resources), 'endpoint')}, "
        f"{plural(len(manifest.get('function_registry') or {}), 'function')}"
    )
    for name in sorted(resources):
        resource = resources[name]
        branch = tree.add(
            f"[bold]{escape(name)}[/] {_badges(resource)} "
            f"[dim]{escape(str(resource.get('resource_type')))} · "
            f"{escape(str(resource.get('file')))}:{resource.get('line')}[/]"
        )
        for fn in resource.get("functions") or []:
            label = escape(str(fn.get("name")))
            if fn.get("is_class"):
                label = f"class {label}"
            elif fn.get("is_async"):
                label = f"async {label}"
            if resource.get("is_load_balanced"):
                method = fn.get("http_method") or "[red]no method[/]"
                path = escape(str(fn.get("http_path") or "")) or "[red]no path[/]"
                label = f"[bold]{method}[/] {path} → {label}"
            branch.add(f"{label} [dim]{escape(str(fn.get('module')))}:{fn.get('line')}[/]")
        callees = calls.callees(name) if calls is not None else {}
        if callees:
            branch.add(f"[bold]calls[/]: {escape(describe(callees))}")
    return tree


def render_diagnostics(diagnostics: list[Diagnostic]) -> Table:
    """A table of diagnostics: severity, location, code, message."""
    table = Table(title="Diagnostics", show_header=True, header_style="bold")
    table.add_column("severity", no_wrap=True)
    table.add_column("where", overflow="fold", max_width=40)
    table.add_column("message  [dim](code)[/]", overflow="fold", ratio=1)
    for d in diagnostics:
        style = style_of(d.severity, SEVERITY_STYLES)
        table.add_row(
            f"[{style}]{d.severity}[/]",
            escape(d.location),
            f"{escape(d.message)} [dim]({d.code})[/]",
        )
    return table


def run(args: argparse.Namespace) -> int:
    """Scan and report; 1 when there are error diagnostics or PATH is not a directory."""
    from engine.manifest import empty_manifest
    from engine.scan import scan_project

    path = Path(args.path).expanduser()
    console = Console()
    # Problems go to stderr, like a compiler's: stdout keeps what was found.
    err_console = Console(stderr=True)
    if not path.is_dir():
        message = f"{path} is not a directory"
        if args.json:
            out = empty_manifest(path.name)
            out["diagnostics"] = [
                Diagnostic("error", str(path), 0, message, NOT_A_DIRECTORY).to_json()
            ]
            out["calls"] = []
            print(json.dumps(out, sort_keys=True, ensure_ascii=False))
        else:
            err_console.print(f"[bold red]error[/] {escape(message)}")
        return 1
    result = scan_project(path)
    errors = result.errors
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True, ensure_ascii=False))
        return 1 if errors else 0
    if result.manifest.get("resources"):
        console.print(render_tree(result.manifest, result.calls))
    else:
        console.print(
            f"No Flash endpoints found in {escape(str(path.resolve()))}. A Flash project "
            "decorates functions with [bold]@remote(config)[/] (tetra_rp / runpod_flash) or "
            '[bold]@Endpoint(...)[/] / [bold]api.post("/path")[/] (runpod_flash).'
        )
    if result.diagnostics:
        err_console.print(render_diagnostics(result.diagnostics))
    counts = {s: sum(1 for d in result.diagnostics if d.severity == s) for s in SEVERITY_STYLES}
    console.print(
        f"{plural(result.stats.files, 'Python file')}, {result.stats.candidates} with Flash code · "
        f"[{SEVERITY_STYLES['error']}]{plural(counts['error'], 'error')}[/], "
        f"[{SEVERITY_STYLES['warning']}]{plural(counts['warning'], 'warning')}[/] · "
        f"{result.stats.elapsed_ms:.0f} ms"
    )
    return 1 if errors else 0
