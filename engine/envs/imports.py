"""Which top-level modules a project's code imports, read statically (user code never runs).

Every non-ignored `*.py` file of the project counts, and every import statement in it: at
module level, inside functions (upstream's GPU examples do `import torch` in the function
body) and under `try`. Only absolute imports name a distribution's module; relative ones are
the project's own. A file is parsed only when its bytes mention one of the names asked about,
so asking costs a read per file and a parse of the few that might match.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterable
from pathlib import Path

from engine.project import Project

__all__ = ["imported_in_source", "project_imports"]


def imported_in_source(source: bytes, names: Iterable[str]) -> frozenset[str]:
    """The `names` (top-level modules) that one file's import statements import."""
    wanted = frozenset(names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes in user code are not ours to report
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            return frozenset()  # the scan reports unparsable files; nothing is imported here
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return frozenset(found & wanted)


def project_imports(root: Path, names: Iterable[str]) -> frozenset[str]:
    """The `names` (top-level modules) that any of the project's Python files imports."""
    wanted = frozenset(names)
    try:
        files = Project.open(root).python_files()
    except (NotADirectoryError, OSError):
        return frozenset()
    found: set[str] = set()
    for file in files:
        missing = wanted - found
        if not missing:
            break
        try:
            data = Path(file.path).read_bytes()
        except OSError:
            continue
        if any(name.encode() in data for name in missing):
            found |= imported_in_source(data, missing)
    return frozenset(found)
