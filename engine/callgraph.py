"""The call graph: which endpoint's code calls which other endpoint's functions.

Found statically by the scanner (`engine.scan`): a call inside a decorated function (or a method
of a decorated class) of a function or class decorated for another endpoint — `fn(...)`,
`await fn(...)`, `mod.fn(...)`, calls inside `asyncio.gather(...)`, and `obj.m(...)` where
`obj = Cls(...)` earlier in the same function and `Cls` is a decorated class. Calls between two
functions of the same endpoint are not edges (they stay on one endpoint's graph node).

Used by `scan` (text and `--json`), the TUI's detail pane ("calls" / "called by") and the
plan's warnings (`engine.plan`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallEdge", "CallGraph", "describe"]


@dataclass(frozen=True, order=True)
class CallEdge:
    """One call site: `caller`'s function `caller_function` calls `callee`'s `callee_function`.

    `callee_function` is `Cls.method` for a method of a decorated class; `file:line` is the call.
    """

    caller: str
    callee: str
    caller_function: str
    callee_function: str
    file: str
    line: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "caller": self.caller,
            "caller_function": self.caller_function,
            "callee": self.callee,
            "callee_function": self.callee_function,
            "file": self.file,
            "line": self.line,
        }


@dataclass(frozen=True)
class CallGraph:
    """Every cross-endpoint call site of a project, sorted."""

    edges: tuple[CallEdge, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, edges: Iterable[CallEdge]) -> CallGraph:
        """The graph of `edges` (deduplicated, sorted)."""
        return cls(tuple(sorted(set(edges))))

    def callees(self, endpoint: str) -> dict[str, tuple[str, ...]]:
        """The endpoints `endpoint` calls, each with the functions called there (sorted)."""
        return _grouped((e.callee, e.callee_function) for e in self.edges if e.caller == endpoint)

    def callers(self, endpoint: str) -> dict[str, tuple[str, ...]]:
        """The endpoints that call `endpoint`, each with the functions called (sorted)."""
        return _grouped((e.caller, e.callee_function) for e in self.edges if e.callee == endpoint)

    def edges_between(self, caller: str, callee: str) -> tuple[CallEdge, ...]:
        """The call sites from `caller` to `callee`."""
        return tuple(e for e in self.edges if e.caller == caller and e.callee == callee)

    @property
    def callers_of_any(self) -> frozenset[str]:
        """Endpoints that make at least one cross-endpoint call (`makes_remote_calls`)."""
        return frozenset(e.caller for e in self.edges)

    def to_json(self) -> list[dict[str, Any]]:
        """JSON-ready form: one object per call site."""
        return [e.to_json() for e in self.edges]


def _grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    out: dict[str, set[str]] = {}
    for endpoint, function in pairs:
        out.setdefault(endpoint, set()).add(function)
    return {k: tuple(sorted(v)) for k, v in sorted(out.items())}


def describe(functions: dict[str, tuple[str, ...]]) -> str:
    """`cpu_worker (preprocess, word_stats), gpu_worker (embed)`."""
    return ", ".join(f"{name} ({', '.join(fns)})" for name, fns in functions.items())
