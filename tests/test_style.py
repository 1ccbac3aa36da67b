"""The code base stays ruff-clean and ruff-formatted, its README layout lists every module, and a
long module says why it is one."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff(command: list[str]) -> None:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert exe, "ruff is a dev dependency"
    result = subprocess.run([exe, *command], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


PACKAGES = ("runtime", "engine", "flash_tui")


def _readme_layout_rows() -> dict[str, list[str]]:
    """The first cells of the README layout tables, per package section (`### runtime/` ...)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    package = None
    for line in layout.splitlines():
        if line.startswith("### "):
            package = line[4:].strip().rstrip("/")
            rows[package] = []
        elif package is not None and line.startswith("| `"):
            first = line.split(" | ", 1)[0].removeprefix("| ")
            rows[package].append(first)
    return rows


def test_readme_layout_lists_every_module_once() -> None:
    """Each module of runtime/, engine/ and flash_tui/ has one row of its own, and no row is
    stale: a module added, moved or removed without the README fails here."""
    rows = _readme_layout_rows()
    assert set(PACKAGES) <= set(rows), f"README layout sections: {sorted(rows)}"
    problems: list[str] = []
    for package in PACKAGES:
        cells = rows[package]
        several = [c for c in cells if c.count("`") != 2]
        problems += [f"{package}/: one module per row, not {c}" for c in several]
        listed = [c.strip("`") for c in cells if c not in several]
        problems += [
            f"{package}/{m}: listed twice" for m in sorted(set(listed)) if listed.count(m) > 1
        ]
        root = ROOT / package
        modules = {
            path.relative_to(root).as_posix()
            for path in root.rglob("*.py")
            if "__pycache__" not in path.parts
        }
        problems += [
            f"{package}/{m}: missing from the README layout" for m in sorted(modules - set(listed))
        ]
        problems += [
            f"{package}/{m}: in the README layout, not in the tree"
            for m in sorted(set(listed) - modules)
        ]
    assert problems == []


# Past this many lines a module says in its docstring why it is one module ("At about N lines
# ... because ..."): a long module is split by phase unless its size is earned.
MAX_LINES = 600


def test_a_module_over_the_line_mark_says_why_in_its_docstring() -> None:
    """Each module of runtime/, engine/ and flash_tui/ longer than MAX_LINES names its size in
    its docstring (the sentence that says why it stays one module)."""
    unexplained = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            count = len(text.splitlines())
            if count <= MAX_LINES:
                continue
            docstring = ast.get_docstring(ast.parse(text)) or ""
            if not re.search(r"\b\d[\d,]* lines\b", docstring):
                unexplained.append(f"{path.relative_to(ROOT)}: {count} lines, no reason given")
    assert unexplained == []
