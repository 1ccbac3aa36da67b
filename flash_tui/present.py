"""Presentation helpers: turn engine values into short strings and Rich text for the widgets.

Nothing here decides anything about a deployment; it only formats what the engine reported.
The colours of status, drift, plan and severity words come from `engine.styles`, the one table
the CLI uses too.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.text import Text

from engine.styles import style_of

SPARK_CHARS = "▁▂▃▄▅▆▇█"

# Narrow cells (the endpoints table) name a drift state in at most 8 characters; the detail
# pane and the CLI say the full word and why.
SHORT_DRIFT_LABELS: dict[str, str] = {"unparsable": "no parse"}

SEVERITY_ICONS: dict[str, str] = {"error": "✖", "warning": "⚠", "info": "ℹ"}


def label(value: str | None) -> str:
    """`not_deployed` -> `not deployed`; None -> an em dash."""
    if not value:
        return "—"
    return str(value).replace("_", " ")


def styled(value: str | None, styles: Mapping[Any, str]) -> Text:
    """The label of an enum-like value coloured by its meaning."""
    return Text(label(value), style=style_of(value, styles))


def sparkline(samples: Sequence[float | None], width: int = 8) -> Text:
    """A block-character sparkline of the last `width` latencies; failed probes are red."""
    recent = list(samples)[-width:]
    text = Text()
    values = [v for v in recent if v is not None]
    if not recent:
        return Text("—", style="dim")
    # Scale from zero, not from the minimum: 2.0ms vs 2.2ms should look flat, not dramatic.
    top = max(values) if values else 1.0
    top = max(top, 1e-9)
    for value in recent:
        if value is None:
            text.append("▁", style="red")
            continue
        level = min(len(SPARK_CHARS) - 1, int(value / top * (len(SPARK_CHARS) - 1)))
        text.append(SPARK_CHARS[level], style="green")
    return text


def latency(ms: float | None) -> str:
    """A compact latency: `3ms`, `12ms`, `1.2s`."""
    if ms is None:
        return "—"
    if ms < 10:
        return f"{ms:.1f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.1f}s"


def clock_time(at: float | None) -> str:
    """`HH:MM:SS` (local) of an epoch time; blanks when unknown (an unstamped old log line)."""
    if at is None:
        return " " * 8
    return datetime.fromtimestamp(at).astimezone().strftime("%H:%M:%S")


def duration(seconds: float | None) -> str:
    """`42s`, `3m`, `2h05m`, `4d` — uptime as a human reads it at a glance."""
    if seconds is None or seconds < 0:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def value_text(value: Any) -> str:
    """A config value as a one-line string (JSON for containers, `$unresolved` shown as source)."""
    if isinstance(value, Mapping) and "$unresolved" in value:
        return f"‹{value['$unresolved']}›"
    if isinstance(value, str):
        return json.dumps(value)
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def resource_badges(resource: Mapping[str, Any]) -> str:
    """`LB · CPU · live` for a manifest resource entry."""
    rtype = str(resource.get("resource_type") or "")
    parts = ["LB" if resource.get("is_load_balanced") else "QB"]
    parts.append("CPU" if rtype.startswith("Cpu") else "GPU")
    if resource.get("is_live_resource"):
        parts.append("live")
    return " · ".join(parts)


def short_type(resource_type: str | None, is_lb: bool | None = None) -> str:
    """`LB CPU` / `QB GPU*` for the table (`*`: GPU endpoints run on this machine's CPU)."""
    rtype = str(resource_type or "")
    if not rtype:
        return "—"
    lb = is_lb if is_lb is not None else "LoadBalancer" in rtype
    kind = "LB" if lb else "QB"
    return f"{kind} CPU" if rtype.startswith("Cpu") else f"{kind} GPU*"


_PLACEHOLDERS: dict[str, Any] = {
    "int": 0,
    "float": 0.0,
    "str": "",
    "bool": False,
    "list": [],
    "dict": {},
    "tuple": [],
    "set": [],
    "bytes": "",
}


def placeholder(annotation: str | None) -> Any:
    """A JSON placeholder for a parameter annotation given as source text (`list[int]` -> [])."""
    if not annotation:
        return None
    head = annotation.replace("typing.", "").split("[", 1)[0].split("|", 1)[0].strip()
    if head in {"List", "Sequence", "Iterable"}:
        head = "list"
    elif head in {"Dict", "Mapping"}:
        head = "dict"
    elif head == "Optional":
        inner = annotation.split("[", 1)[1].rstrip("]") if "[" in annotation else ""
        return placeholder(inner)
    return _PLACEHOLDERS.get(head)


def prefill_body(signature: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    """A request body with one key per parameter: its default, else a typed placeholder."""
    body: dict[str, Any] = {}
    for param in signature or ():
        name = str(param.get("name") or "")
        kind = str(param.get("kind") or "")
        if not name or name in {"self", "cls"} or "VAR" in kind.upper():
            continue
        default = param.get("default")
        if default is not None:
            try:
                body[name] = ast.literal_eval(default)
                continue
            except (ValueError, SyntaxError):
                pass
        body[name] = placeholder(param.get("annotation"))
    return body


def signature_text(name: str, signature: Iterable[Mapping[str, Any]] | None, is_async: bool) -> str:
    """`async def embed(text: str, n: int = 3)` rebuilt from the manifest's signature entries."""
    params = []
    for param in signature or ():
        piece = str(param.get("name"))
        kind = str(param.get("kind") or "").upper()
        if kind == "VAR_POSITIONAL":
            piece = "*" + piece
        elif kind == "VAR_KEYWORD":
            piece = "**" + piece
        if param.get("annotation"):
            piece += f": {param['annotation']}"
        if param.get("default") is not None:
            piece += f" = {param['default']}" if param.get("annotation") else f"={param['default']}"
        params.append(piece)
    prefix = "async def" if is_async else "def"
    return f"{prefix} {name}({', '.join(params)})"


def short_reason(text: str, line_chars: int = 160) -> str:
    """A toast-sized reason: the first line and, for a traceback, its final exception line.

    A failed import carries a whole traceback; in a notification it would be taller than the
    screen. The full text stays in the log pane, where it can be scrolled.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return text
    kept = lines if len(lines) <= 2 else [lines[0], "…", lines[-1]]
    return "\n".join(
        line if len(line) <= line_chars else line[: line_chars - 1] + "…" for line in kept
    )
