"""Imports go flash_tui -> engine -> runtime, and runtime stays small."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# httptools: uvicorn's own HTTP parser, which the cross-endpoint client (runtime/httpwire.py)
# parses answers with.
RUNTIME_ALLOWED = {
    "pydantic",
    "cloudpickle",
    "fastapi",
    "uvicorn",
    "httptools",
    "httpx",
    "starlette",
    "runtime",
}


def test_import_linter_layers_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a dev dependency"
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_runtime_depends_only_on_its_allowed_packages() -> None:
    stdlib = set(sys.stdlib_module_names)
    offenders = {}
    for path in (ROOT / "runtime").rglob("*.py"):
        extra = _top_level_imports(path) - stdlib - RUNTIME_ALLOWED
        if extra:
            offenders[str(path.relative_to(ROOT))] = sorted(extra)
    assert offenders == {}


def test_engine_never_imports_textual() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "engine").rglob("*.py")
        if {"textual", "flash_tui"} & _top_level_imports(path)
    ]
    assert offenders == []


def test_no_module_imports_itself_back() -> None:
    """No import cycle between our modules, lazy imports included (grimp: import-linter's graph)."""
    import grimp

    graph = grimp.build_graph("engine", "runtime", "flash_tui")
    cycles = sorted(
        {
            tuple(sorted((module, imported)))
            for module in graph.modules
            for imported in graph.find_modules_directly_imported_by(module)
            if graph.chain_exists(importer=imported, imported=module)
        }
    )
    assert cycles == [], cycles
