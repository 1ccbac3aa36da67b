"""Diagnostics: problems found in a project, reported instead of raised.

A scan never fails on bad input; every problem becomes a `Diagnostic` with a severity, the file
(relative posix path), a 1-based line (0 when it concerns the whole file or project), a message
a person understands and a stable `code` that tests, the TUI and scripts can rely on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]

SEVERITY_ORDER: dict[str, int] = {"error": 0, "warning": 1, "info": 2}

# Stable codes. Never renumber or reuse one for a different meaning.
SYNTAX_ERROR = "scan-syntax-error"
UNDECODABLE = "scan-undecodable"
UNREADABLE = "scan-unreadable"
TOO_LARGE = "scan-too-large"
UNKNOWN_CONFIG = "scan-unknown-config"
BARE_DECORATOR = "scan-bare-decorator"
NESTED_FUNCTION = "scan-nested-function"
LB_MISSING_ROUTE = "manifest-lb-missing-route"
INVALID_METHOD = "manifest-invalid-method"
INVALID_PATH = "manifest-invalid-path"
ROUTE_ON_QB = "manifest-route-on-queue-endpoint"
DUPLICATE_ROUTE = "manifest-duplicate-route"
RESERVED_PATH = "manifest-reserved-path"
DUPLICATE_FUNCTION = "manifest-duplicate-function"
UNSAFE_NAME = "manifest-unsafe-name"
RESOURCE_CONFLICT = "manifest-resource-conflict"
CONFIG_INVALID = "manifest-config-invalid"
CONFIG_UNRESOLVED = "manifest-config-unresolved"
CONFIG_NEEDS_IMAGE = "manifest-config-needs-image"
ENDPOINT_INVALID = "scan-endpoint-invalid"
ENDPOINT_MIXED = "scan-endpoint-mixed"
MOTHERSHIP_CONFLICT = "manifest-mothership-conflict"
MOTHERSHIP_NOT_LB = "manifest-mothership-not-load-balanced"
INTERNAL_ERROR = "scan-internal-error"


@dataclass(frozen=True)
class Diagnostic:
    """One problem: `Diagnostic("error", "main.py", 12, "duplicate route POST /x", code)`."""

    severity: Severity
    file: str
    line: int
    message: str
    code: str

    def to_json(self) -> dict[str, Any]:
        """The JSON form (`scan --json`, the build): {severity, file, line, message, code}."""
        return {
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "message": self.message,
            "code": self.code,
        }

    @property
    def location(self) -> str:
        """`file:line`, or just the file when the line is unknown."""
        return f"{self.file}:{self.line}" if self.line else self.file


def sort_key(d: Diagnostic) -> tuple[int, str, int, str, str]:
    """Errors first, then by file, line, code and message: a stable order for output."""
    return (SEVERITY_ORDER.get(d.severity, 3), d.file, d.line, d.code, d.message)


def sorted_diagnostics(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """De-duplicated and sorted with `sort_key`."""
    return sorted(set(diagnostics), key=sort_key)
