"""Incremental, AST-only scanner of a Flash project (never imports user code).

What it recognises (any import form: `from tetra_rp import remote`, `import runpod_flash as rf`
then `@rf.remote(...)`, `from tetra_rp import remote as r`, submodules such as
`tetra_rp.core.resources`):

- `@remote(cfg, ...)` / `@remote(resource_config=cfg, method=..., path=..., dependencies=[...])`
  on functions, async functions and classes, nested ones included;
- resource configs of the 8 serverless classes assigned to module-level names (plain or
  annotated assignments, also inside top-level `if`/`try`), referenced from any module
  (`from workers.gpu.endpoint import gpu_config`, relative imports, `import workers.cfg as c`
  then `c.gpu_config`, re-exports through `__init__.py`), or written inline
  (`@remote(LiveServerless(name="x"))`);
- the `Endpoint` API: `@Endpoint(name=..., gpu=..., workers=(1, 3))` on a function or class
  (queue-based), `api = Endpoint(...)` then `@api.get/post/put/delete/patch("/path")`
  (load-balanced routes) or `@api` (queue-based).

Which names count: a decorator or config class counts only when its name resolves, through the
project's own imports, to the SDK — a module named `tetra_rp`, `runpod_flash` or `runtime` (or a
submodule), unless the project itself has a `runtime` module. Resolution follows re-exports
through project modules (`from .config import remote`, where `config.py` imports it from
`tetra_rp`), so projects that wrap the SDK imports in one module work; a local function that
happens to be called `remote` does not. Absolute imports are looked up from the project root,
then (leniently, for script-style projects) as a sibling of the importing module, then as the
unique project module with that dotted suffix.

Incremental: per-file cache keyed by (path, mtime_ns, size), then by a content hash, so a
touched but unchanged file costs a stat, a read and a hash. Files whose bytes contain neither
`remote` nor `Endpoint` (every file that applies a Flash decorator spells one of them, through
any alias) are not parsed, except: on demand, when a decorator refers to one of their names (a
config module, constants, a re-export through `__init__.py`; their syntax errors are then
reported too), or when they use as a decorator a name that some parsed module binds to an
`Endpoint` object or re-exported SDK decorator (`from app import api` then `@api.post(...)`).
Syntax errors in files that no Flash code depends on are not reported: they are not parsed.
Project-level resolution is cached per file and redone only for files whose module, or a module
they consulted, changed; `scan(changed_paths=...)` (a watcher batch) skips the walk entirely.

Endpoint objects map to resource classes through `runtime.endpoint.endpoint_resource` with
`live=False`: what `flash build`/`deploy` provision (upstream sets
FLASH_IS_LIVE_PROVISIONING=false for them).
"""

from __future__ import annotations

import ast
import json
import os
import re
import stat as stat_module
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from engine import diagnostics as codes
from engine.diagnostics import Diagnostic, sorted_diagnostics
from engine.manifest import FunctionInfo, ResourceDef, build_manifest, now_iso
from engine.project import RACY_NS, RULE_FILES, Project, SourceFile
from engine.staticeval import (
    CallExpr,
    Ref,
    SourceText,
    Unresolved,
    contains_unresolved,
    dotted,
    evaluate,
    partial,
)
from runtime import enums as _enums
from runtime.resources import IMAGE_FIELDS, RESOURCE_TYPES, missing_image_message, needs_image

__all__ = ["ScanResult", "ScanStats", "Scanner", "module_name", "scan_project"]

# A file that defines or uses a Flash decorator must spell one of these (`@remote`, `@rf.remote`,
# `@Endpoint`, `E = Endpoint`, `api = rf.Endpoint(...)`); configs and constants elsewhere are
# parsed on demand when a decorator refers to them, routes on an imported Endpoint object are
# found through hot names. Fewer words: less to search in every byte of every file.
TRIGGERS: tuple[bytes, ...] = (b"remote", b"Endpoint")
SDK_ROOTS: tuple[str, ...] = ("tetra_rp", "runpod_flash", "runtime")
MAX_PARSE_BYTES = 4 * 1024 * 1024  # bigger candidate files are reported, not parsed
ENUM_NAMES: frozenset[str] = frozenset(
    {
        "GpuGroup",
        "GpuType",
        "CpuInstanceType",
        "CudaVersion",
        "DataCenter",
        "ServerlessScalerType",
        "ServerlessType",
    }
)
SDK_NAMES: frozenset[str] = frozenset(
    {"remote", "Endpoint", "NetworkVolume", "PodTemplate", "ServerlessResource"}
    | set(RESOURCE_TYPES)
    | ENUM_NAMES
)
ROUTE_METHODS: frozenset[str] = frozenset({"get", "post", "put", "delete", "patch"})
_MEMBERS: dict[str, frozenset[str]] = {
    name: frozenset(getattr(_enums, name).__members__) for name in ENUM_NAMES
}

# Symbols (the result of resolving a name) are small tuples, cheap to build and compare:
#   ("sdk", name)                       a public SDK name; name "" is an SDK (sub)module
#   ("module", dotted)                  a project module or package
#   ("value", module, name, value, line) a module-level assignment (value from staticeval.partial)
#   ("enum", enum, member)              an SDK enum member
#   ("route", value_symbol, METHOD)     `api.post` where `api` is an Endpoint object
#   ("other",)                          anything else (functions, third-party, unknown)
Sym = tuple[Any, ...]
_OTHER: Sym = ("other",)
_SDK_MODULE: Sym = ("sdk", "")


# --------------------------------------------------------------------------------------------
# per-file facts (cached)


@dataclass
class Decorated:
    """A decorated function or class, with its decorators kept as `CallExpr` values."""

    name: str
    qualname: str
    line: int
    is_async: bool
    is_class: bool
    nested: bool
    decorators: list[tuple[CallExpr, bool]]  # (call, called) - `called` False for bare `@x`
    signature: list[dict[str, Any]]
    # For a class: each public method (in source order) and its parameters without `self`,
    # as `signature`; the method names are its keys.
    method_signatures: dict[str, list[dict[str, Any]]]


@dataclass
class FileFacts:
    """Everything the resolver needs from one file: bindings, star imports, decorated defs."""

    names: dict[str, tuple[Any, ...]]
    stars: list[str]
    decorated: list[Decorated]
    hot: frozenset[str]


@dataclass
class _Entry:
    rel: str
    path: str
    module: str
    mtime_ns: int
    size: int
    digest: int | None
    level1: bool  # contains a trigger word
    candidate: bool  # level1, or mentions a hot name
    facts: FileFacts | None = None
    diags: tuple[Diagnostic, ...] = ()
    parsed: bool = False
    # modified so recently that a later change might keep the same mtime: re-hash next time
    racy: bool = False


def _digest(data: bytes) -> int:
    # The cache lives in memory only, so Python's own (64-bit, per-process) hash will do: it is
    # several times faster than a cryptographic digest over every byte of the project.
    return hash(data)


def module_name(rel: str) -> str:
    """Dotted module of a relative posix path: `a/b.py` -> `a.b`, `pkg/__init__.py` -> `pkg`."""
    stem = rel[:-3] if rel.endswith(".py") else rel
    if stem.endswith("/__init__"):
        stem = stem[: -len("/__init__")]
    return stem.replace("/", ".")


def _package(module: str, rel: str) -> str:
    return module if rel.endswith("__init__.py") else module.rpartition(".")[0]


def _is_sdk_module(name: str) -> bool:
    root = name.partition(".")[0]
    return root in SDK_ROOTS


def _param(name: str, annotation: str | None, default: str | None, kind: str) -> dict[str, Any]:
    # Keys in sorted order: the manifest is written with sorted keys either way.
    return {"annotation": annotation, "default": default, "kind": kind, "name": name}


def _signature(args: ast.arguments, src: SourceText, skip_first: bool) -> list[dict[str, Any]]:
    """`[{name, annotation, default, kind}]` with source texts; `kind` as in `inspect`."""

    def text(node: ast.AST | None) -> str | None:
        return None if node is None else src.segment(node)

    out: list[dict[str, Any]] = []
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += list(args.defaults)
    for index, arg in enumerate(positional):
        kind = "POSITIONAL_ONLY" if index < len(args.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        out.append(_param(arg.arg, text(arg.annotation), text(defaults[index]), kind))
    if args.vararg is not None:
        out.append(_param(args.vararg.arg, text(args.vararg.annotation), None, "VAR_POSITIONAL"))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        out.append(_param(arg.arg, text(arg.annotation), text(default), "KEYWORD_ONLY"))
    if args.kwarg is not None:
        out.append(_param(args.kwarg.arg, text(args.kwarg.annotation), None, "VAR_KEYWORD"))
    if skip_first and out and out[0]["kind"] in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD"):
        out = out[1:]
    return out


class _Extractor:
    """Builds `FileFacts` from one parsed file."""

    def __init__(self, module: str, rel: str, src: SourceText) -> None:
        self.module = module
        self.package = _package(module, rel)
        self.src = src
        self.names: dict[str, tuple[Any, ...]] = {}
        self.stars: list[str] = []
        self.decorated: list[Decorated] = []

    def _absolute(self, module: str | None, level: int) -> str | None:
        if level == 0:
            return module
        parts = self.package.split(".") if self.package else []
        up = level - 1
        if up > len(parts):
            return None
        base = parts[: len(parts) - up]
        if module:
            base = [*base, module]
        return ".".join(base) if base else None

    def bindings(self, body: list[ast.stmt]) -> None:
        """Module-level names, in order (later bindings win, as at run time)."""
        for st in body:
            if isinstance(st, ast.Import):
                for alias in st.names:
                    if alias.asname:
                        self.names[alias.asname] = ("import", alias.name, None)
                    else:
                        first = alias.name.partition(".")[0]
                        self.names[first] = ("import", first, None)
            elif isinstance(st, ast.ImportFrom):
                target = self._absolute(st.module, st.level)
                for alias in st.names:
                    if alias.name == "*":
                        if target:
                            self.stars.append(target)
                        continue
                    local = alias.asname or alias.name
                    if target is None:
                        self.names[local] = ("def",)
                    else:
                        self.names[local] = ("import", target, alias.name)
            elif isinstance(st, ast.Assign):
                value = partial(st.value, self.src)
                for target in st.targets:
                    if isinstance(target, ast.Name):
                        self.names[target.id] = ("assign", value, st.lineno)
                    else:
                        for node in ast.walk(target):
                            if isinstance(node, ast.Name):
                                self.names[node.id] = ("def",)
            elif isinstance(st, ast.AnnAssign):
                if isinstance(st.target, ast.Name):
                    if st.value is not None:
                        self.names[st.target.id] = (
                            "assign",
                            partial(st.value, self.src),
                            st.lineno,
                        )
            elif isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.names[st.name] = ("def",)
            elif isinstance(st, ast.If):
                self.bindings(st.body)
                self.bindings(st.orelse)
            elif isinstance(st, (ast.Try, getattr(ast, "TryStar", ast.Try))):
                self.bindings(st.body)
                for handler in st.handlers:
                    self.bindings(handler.body)
                self.bindings(st.orelse)
                self.bindings(st.finalbody)
            elif isinstance(st, ast.With):
                self.bindings(st.body)

    def defs(self, body: list[ast.stmt], prefix: str, nested: bool) -> None:
        """Decorated functions and classes anywhere in the statements."""
        for st in body:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if st.decorator_list:
                    self._decorated(st, prefix, nested)
                self.defs(st.body, f"{prefix}{st.name}.", True)
                continue
            for name in ("body", "orelse", "finalbody"):
                sub = getattr(st, name, None)
                if sub and isinstance(sub, list):
                    self.defs(sub, prefix, nested)
            handlers = getattr(st, "handlers", None)
            if handlers:
                for handler in handlers:
                    self.defs(handler.body, prefix, nested)
            cases = getattr(st, "cases", None)
            if cases:
                for case in cases:
                    self.defs(case.body, prefix, nested)

    def _decorated(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, prefix: str, nested: bool
    ) -> None:
        decorators: list[tuple[CallExpr, bool]] = []
        for dec in node.decorator_list:
            if isinstance(dec, ast.Call):
                value = partial(dec, self.src)
                if isinstance(value, CallExpr):
                    decorators.append((value, True))
            else:
                parts = dotted(dec)
                if parts is not None:
                    text = self.src.segment(dec)
                    decorators.append((CallExpr(Ref(parts, text), (), (), text, dec.lineno), False))
        if not decorators:
            return
        if isinstance(node, ast.ClassDef):
            init = next(
                (
                    st
                    for st in node.body
                    if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and st.name == "__init__"
                ),
                None,
            )
            signature = _signature(init.args, self.src, True) if init is not None else []
            public = [
                st
                for st in node.body
                if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef))
                and not st.name.startswith("_")
            ]
            # The route tester prefills a method's body from these; `self` is not sent.
            method_signatures = {st.name: _signature(st.args, self.src, True) for st in public}
        else:
            signature = _signature(node.args, self.src, False)
            method_signatures = {}
        self.decorated.append(
            Decorated(
                name=node.name,
                qualname=prefix + node.name,
                line=node.lineno,
                is_async=isinstance(node, ast.AsyncFunctionDef),
                is_class=isinstance(node, ast.ClassDef),
                nested=nested,
                decorators=decorators,
                signature=signature,
                method_signatures=method_signatures,
            )
        )

    def hot(self) -> frozenset[str]:
        """Names another file may import and use as a decorator (Endpoint objects, re-exports)."""
        out = set()
        for name, binding in self.names.items():
            if binding[0] == "assign":
                value = binding[1]
                if isinstance(value, CallExpr) and value.func.parts[-1] == "Endpoint":
                    out.add(name)
            elif binding[0] == "import" and binding[2] in ("remote", "Endpoint"):
                if name not in ("remote", "Endpoint"):
                    out.add(name)
        return frozenset(out)


_DECORATOR_ROOT = re.compile(rb"@[ \t]*([A-Za-z_][A-Za-z0-9_]*)")
_CODING_COOKIE = re.compile(rb"(?:[^\n]*\n)?[ \t\f]*#[^\n]*?coding[:=][ \t]*[-\w.]+")


def _internal_error(rel: str, exc: BaseException) -> Diagnostic:
    return Diagnostic(
        "warning",
        rel,
        0,
        f"not scanned: the scanner failed on this file ({type(exc).__name__}: {exc}); "
        "please report it",
        codes.INTERNAL_ERROR,
    )


def _parse(rel: str, module: str, data: bytes) -> tuple[FileFacts | None, list[Diagnostic]]:
    """Facts of one file, or None and a diagnostic saying why it could not be read as Python."""
    if b"\x00" in data:
        return None, [
            Diagnostic(
                "warning",
                rel,
                0,
                "not scanned: the file contains NUL bytes (binary data, not Python source)",
                codes.UNDECODABLE,
            )
        ]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # ast.parse tolerates bad bytes in comments; importing the file would not.
        if not _CODING_COOKIE.match(b"\n".join(data.split(b"\n", 2)[:2])):
            return None, [
                Diagnostic(
                    "warning",
                    rel,
                    data.count(b"\n", 0, exc.start) + 1,
                    "not scanned: the file is not valid UTF-8 and declares no other encoding "
                    f"(byte {data[exc.start]:#04x} at offset {exc.start})",
                    codes.UNDECODABLE,
                )
            ]
    try:
        tree = ast.parse(data, filename=rel)
    except SyntaxError as exc:
        message = str(exc.msg or exc)
        if "decode" in message or "codec" in message or "encoding" in message:
            return None, [
                Diagnostic(
                    "warning",
                    rel,
                    exc.lineno or 0,
                    f"not scanned: the file is not valid UTF-8 (or its declared encoding): "
                    f"{message}",
                    codes.UNDECODABLE,
                )
            ]
        return None, [
            Diagnostic(
                "error",
                rel,
                exc.lineno or 0,
                f"syntax error: {message}"
                + (f" (column {exc.offset})" if exc.offset else "")
                + " — this file's Flash functions cannot be seen until it is fixed",
                codes.SYNTAX_ERROR,
            )
        ]
    except (ValueError, UnicodeDecodeError) as exc:
        return None, [Diagnostic("warning", rel, 0, f"not scanned: {exc}", codes.UNDECODABLE)]
    except (RecursionError, MemoryError):
        return None, [
            Diagnostic(
                "warning",
                rel,
                0,
                "not scanned: the file is too deeply nested to parse",
                codes.TOO_LARGE,
            )
        ]
    extractor = _Extractor(module, rel, SourceText(data))
    try:
        extractor.bindings(tree.body)
        extractor.defs(tree.body, "", False)
    except RecursionError:
        return None, [
            Diagnostic(
                "warning", rel, 0, "not scanned: the file is too deeply nested", codes.TOO_LARGE
            )
        ]
    except Exception as exc:  # a scanner bug must not take the whole scan down
        return None, [_internal_error(rel, exc)]
    return (
        FileFacts(extractor.names, extractor.stars, extractor.decorated, extractor.hot()),
        [],
    )


# --------------------------------------------------------------------------------------------
# project-level resolution


@dataclass
class _FileResult:
    functions: list[FunctionInfo]
    resources: list[ResourceDef]
    diags: list[Diagnostic]
    deps: frozenset[str]
    endpoint_uses: list[tuple[tuple[Any, ...], str, str, int]]  # (origin, mode, file, line)


class _Resolver:
    """Resolves names across modules for one scan (memoised; records what each file used)."""

    def __init__(self, scanner: Scanner) -> None:
        self.s = scanner
        self.memo: dict[tuple[str, str], Sym] = {}
        self.values: dict[tuple[str, str], Any] = {}
        self.in_progress: set[tuple[str, str]] = set()
        self.touched: set[str] = set()
        self.defs: dict[tuple[Any, ...], tuple[Any, list[Diagnostic]]] = {}

    def definition(
        self, key: tuple[Any, ...], diags: list[Diagnostic], compute: Callable[[list], Any]
    ) -> Any:
        """`compute(diags)` once per key for this scan; later calls replay its diagnostics."""
        if key not in self.defs:
            found: list[Diagnostic] = []
            self.defs[key] = (compute(found), found)
        result, found = self.defs[key]
        diags.extend(found)
        return result

    # -- modules ---------------------------------------------------------------------------

    def facts(self, module: str) -> FileFacts | None:
        self.touched.add(module)
        entry = self.s._by_module.get(module)
        if entry is None:
            return None
        return self.s._facts_of(entry)

    def is_project(self, module: str) -> bool:
        return module in self.s._by_module or module in self.s._packages

    def import_target(self, name: str, importer: str) -> str | None:
        """The project module an absolute import names (None for SDK / third party)."""
        if name.partition(".")[0] in ("tetra_rp", "runpod_flash"):
            return None
        if self.is_project(name):
            return name
        if _is_sdk_module(name):
            return None
        entry = self.s._by_module.get(importer)
        package = _package(importer, entry.rel) if entry else importer.rpartition(".")[0]
        sibling = f"{package}.{name}" if package else name
        if self.is_project(sibling):
            return sibling
        found = self.s._suffixes.get(name)
        if found is not None and len(found) == 1:
            return found[0]
        return None

    def module_sym(self, name: str, importer: str) -> Sym:
        target = self.import_target(name, importer)
        if target is not None:
            return ("module", target)
        return _SDK_MODULE if _is_sdk_module(name) else _OTHER

    def from_module(self, name: str, attr: str, importer: str) -> Sym:
        target = self.import_target(name, importer)
        if target is None:
            if _is_sdk_module(name):
                return ("sdk", attr) if attr in SDK_NAMES else _SDK_MODULE
            return _OTHER
        return self.attr_of_module(target, attr)

    def attr_of_module(self, module: str, attr: str) -> Sym:
        sym = self.name(module, attr)
        if sym == _OTHER and self.is_project(f"{module}.{attr}"):
            return ("module", f"{module}.{attr}")
        return sym

    # -- names -----------------------------------------------------------------------------

    def name(self, module: str, name: str) -> Sym:
        """What `name` is bound to at the top level of `module`."""
        key = (module, name)
        found = self.memo.get(key)
        if found is not None:
            return found
        if key in self.in_progress:
            return _OTHER  # an import cycle
        self.in_progress.add(key)
        try:
            sym = self._name(module, name)
        finally:
            self.in_progress.discard(key)
        self.memo[key] = sym
        return sym

    def _name(self, module: str, name: str) -> Sym:
        facts = self.facts(module)
        if facts is None:
            return _OTHER
        binding = facts.names.get(name)
        if binding is None:
            for star in facts.stars:
                sym = self.from_module(star, name, module)
                if sym != _OTHER and sym != _SDK_MODULE:
                    return sym
            return _OTHER
        kind = binding[0]
        if kind == "import":
            if binding[2] is None:
                return self.module_sym(binding[1], module)
            return self.from_module(binding[1], binding[2], module)
        if kind == "assign":
            return ("value", module, name, binding[1], binding[2])
        return _OTHER

    def dotted(self, module: str, parts: tuple[str, ...]) -> Sym:
        """What a dotted name used in `module` refers to."""
        sym = self.name(module, parts[0])
        for part in parts[1:]:
            sym = self.attr(sym, part)
            if sym == _OTHER:
                break
        return sym

    def attr(self, sym: Sym, part: str) -> Sym:
        kind = sym[0]
        if kind == "sdk":
            if sym[1] == "":
                return ("sdk", part) if part in SDK_NAMES else _SDK_MODULE
            if sym[1] in ENUM_NAMES:
                return ("enum", sym[1], part)
            return _OTHER
        if kind == "module":
            return self.attr_of_module(sym[1], part)
        if kind == "value" and part in ROUTE_METHODS and self.is_endpoint(sym):
            return ("route", sym, part.upper())
        return _OTHER

    def callee(self, module: str, call: CallExpr) -> Sym:
        return self.dotted(module, call.func.parts)

    def is_endpoint(self, sym: Sym) -> bool:
        value = sym[3]
        return isinstance(value, CallExpr) and self.callee(sym[1], value) == ("sdk", "Endpoint")

    # -- values ----------------------------------------------------------------------------

    def evaluate(self, module: str, value: Any) -> Any:
        return evaluate(
            value,
            lambda ref: self.ref_value(module, ref),
            lambda call: self.call_value(module, call),
        )

    def ref_value(self, module: str, ref: Ref) -> Any:
        sym = self.dotted(module, ref.parts)
        if sym[0] == "enum":
            return sym[2] if sym[2] in _MEMBERS[sym[1]] else Unresolved(ref.source)
        if sym[0] == "value":
            key = (sym[1], sym[2])
            if key in self.values:
                return self.values[key]
            if key in self.in_progress:
                return Unresolved(ref.source)
            self.in_progress.add(key)
            try:
                result = self.evaluate(sym[1], sym[3])
            finally:
                self.in_progress.discard(key)
            if isinstance(result, Unresolved):
                result = Unresolved(ref.source)
            self.values[key] = result
            return result
        return Unresolved(ref.source)

    def call_value(self, module: str, call: CallExpr) -> Any:
        sym = self.callee(module, call)
        if sym in (("sdk", "NetworkVolume"), ("sdk", "PodTemplate")) and not call.star:
            if call.args:
                return Unresolved(call.source)
            return {k: self.evaluate(module, v) for k, v in call.kwargs}
        return Unresolved(call.source)


def _ensure_list_of_str(value: Any) -> list[str] | None:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


# --------------------------------------------------------------------------------------------
# results


@dataclass
class ScanStats:
    """What one scan did: files seen, candidates, files parsed now, elapsed milliseconds."""

    files: int = 0
    candidates: int = 0
    parsed: int = 0
    read: int = 0
    resolved: int = 0
    elapsed_ms: float = 0.0


@dataclass
class ScanResult:
    """The manifest dict, sorted diagnostics, and the resolved functions/resources."""

    manifest: dict[str, Any]
    diagnostics: list[Diagnostic]
    functions: list[FunctionInfo] = field(default_factory=list)
    resources: list[ResourceDef] = field(default_factory=list)
    stats: ScanStats = field(default_factory=ScanStats)

    @property
    def errors(self) -> list[Diagnostic]:
        """The error diagnostics."""
        return [d for d in self.diagnostics if d.severity == "error"]

    def to_json(self) -> dict[str, Any]:
        """`scan --json` output: the manifest keys plus `diagnostics`."""
        out = dict(self.manifest)
        out["diagnostics"] = [d.to_json() for d in self.diagnostics]
        return out


class Scanner:
    """An incremental scanner of one project: call `scan()` again after files change.

    `Scanner(path)` raises `NotADirectoryError` when `path` is not a directory. Calls to `scan()`
    from several threads are serialised (the TUI's watcher and an engine operation may both
    ask). The returned manifest shares nested dicts with later results (unchanged parts are
    reused), so treat it as read-only.
    """

    def __init__(self, project: Project | str | os.PathLike[str]) -> None:
        self.project = project if isinstance(project, Project) else Project.open(project)
        self._entries: dict[str, _Entry] = {}
        self._by_module: dict[str, _Entry] = {}
        self._packages: set[str] = set()
        self._suffixes: dict[str, list[str]] = {}
        self._hot: frozenset[str] = frozenset()
        self._results: dict[str, _FileResult] = {}
        self._hashes: dict[str, tuple[str | None, str | None]] = {}
        self._rules_sig: tuple[Any, ...] | None = None
        self._membership_changed = True
        self._candidates: list[_Entry] = []
        self._last: (
            tuple[dict[str, Any], list[Diagnostic], list[FunctionInfo], list[ResourceDef]] | None
        ) = None
        self.stats = ScanStats()
        self._lock = threading.Lock()

    # -- files -----------------------------------------------------------------------------

    def _read(self, path: str, size: int = 0) -> bytes:
        # os.open/os.read: about half the cost of open() for thousands of small files.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            data = os.read(fd, size + 1)
            if len(data) <= size:
                return data  # a regular file returns less only at its end
            chunks = [data]
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _facts_of(self, entry: _Entry) -> FileFacts | None:
        """The facts of an entry, parsing a non-candidate on demand (its constants, re-exports)."""
        if entry.parsed:
            return entry.facts
        entry.parsed = True
        try:
            data = self._read(entry.path, entry.size)
        except OSError:
            return None
        # Its diagnostics are shown when a Flash file depends on it (see `scan`).
        self._parse_entry(entry, data)
        return entry.facts

    def _load(self, rel: str, path: str, mtime_ns: int, size: int, data: bytes) -> _Entry:
        digest = _digest(data)
        module = module_name(rel)
        level1 = any(t in data for t in TRIGGERS)
        entry = _Entry(rel, path, module, mtime_ns, size, digest, level1, level1)
        if level1:
            self._parse_entry(entry, data)
        return entry

    def _parse_entry(self, entry: _Entry, data: bytes) -> None:
        entry.parsed = True
        if len(data) > MAX_PARSE_BYTES:
            entry.facts = None
            entry.diags = (
                Diagnostic(
                    "warning",
                    entry.rel,
                    0,
                    f"not scanned: {len(data) / 1e6:.1f} MB is more than the "
                    f"{MAX_PARSE_BYTES // (1024 * 1024)} MiB limit for Python sources",
                    codes.TOO_LARGE,
                ),
            )
            return
        self.stats.parsed += 1
        facts, diags = _parse(entry.rel, entry.module, data)
        entry.facts = facts
        entry.diags = tuple(diags)

    def _hinted(
        self, paths: Iterable[str | os.PathLike[str]]
    ) -> tuple[list[SourceFile], set[str]] | None:
        """The files to refresh and the ones removed, from changed paths; None: walk instead."""
        root = str(self.project.root)
        prefix = root.rstrip(os.sep) + os.sep
        ignore = self.project.ignore
        files: list[SourceFile] = []
        removed: set[str] = set()
        for raw in paths:
            path = os.path.abspath(os.fspath(raw))
            if path == root:
                return None
            if not path.startswith(prefix):
                continue
            rel = path[len(prefix) :].replace(os.sep, "/")
            name = rel.rpartition("/")[2]
            if name in RULE_FILES or not name.endswith(".py"):
                if name in RULE_FILES or os.path.isdir(path):
                    return None
                if any(r.startswith(rel + "/") for r in self._entries):
                    return None  # a directory that went away
                continue
            if ignore.is_ignored(rel):
                continue
            try:
                st = os.stat(path)
                is_link = os.path.islink(path)
            except FileNotFoundError:
                removed.add(rel)
                continue
            except OSError:
                return None
            if stat_module.S_ISDIR(st.st_mode):
                return None
            if not stat_module.S_ISREG(st.st_mode) or (
                is_link and not os.path.realpath(path).startswith(prefix)
            ):
                removed.add(rel)
                continue
            files.append(SourceFile(rel, path, st.st_mtime_ns, st.st_size))
        return files, removed

    def _refresh_files(
        self, files: list[SourceFile], removed: set[str] | None = None
    ) -> tuple[set[str], dict[str, bytes]]:
        """Update the cache from `files`: every file (a walk), or only changed ones (`removed`
        given). Returns the changed modules and the bytes of new non-candidate files."""
        changed: set[str] = set()
        fresh: dict[str, bytes] = {}
        entries = self._entries
        seen: dict[str, _Entry] = {} if removed is None else dict(entries)
        racy_after = time.time_ns() - RACY_NS
        for rel in removed or ():
            gone = seen.pop(rel, None)
            if gone is not None:
                changed.add(gone.module)
                self._membership_changed = True
        for sf in files:
            rel = sf.rel
            entry = entries.get(rel)
            if (
                entry is not None
                and entry.mtime_ns == sf.mtime_ns
                and entry.size == sf.size
                and not entry.racy
            ):
                seen[rel] = entry
                continue
            try:
                data = self._read(sf.path, sf.size)
            except OSError as exc:
                # Kept as an entry (with its diagnostic) so the next rescan does not retry a
                # file whose stat did not change.
                unreadable = _Entry(
                    rel,
                    sf.path,
                    module_name(rel),
                    sf.mtime_ns,
                    sf.size,
                    None,
                    False,
                    True,
                    parsed=True,
                    diags=(
                        Diagnostic(
                            "warning",
                            rel,
                            0,
                            f"not scanned: cannot read the file ({exc.strerror or exc})",
                            codes.UNREADABLE,
                        ),
                    ),
                )
                self._replace(entry, unreadable, seen, changed)
                continue
            self.stats.read += 1
            if entry is not None:
                if _digest(data) == entry.digest:
                    entry.mtime_ns, entry.size = sf.mtime_ns, sf.size
                    entry.racy = sf.mtime_ns >= racy_after
                    seen[rel] = entry
                    continue
            new = self._load(rel, sf.path, sf.mtime_ns, sf.size, data)
            new.racy = sf.mtime_ns >= racy_after
            if not new.level1:
                fresh[rel] = data
            self._replace(entry, new, seen, changed)
        if len(seen) != len(entries) or self._membership_changed:
            for rel in entries.keys() - seen.keys():
                changed.add(entries[rel].module)
                self._membership_changed = True
        self._entries = seen
        return changed, fresh

    def _replace(
        self, old: _Entry | None, new: _Entry, seen: dict[str, _Entry], changed: set[str]
    ) -> None:
        seen[new.rel] = new
        changed.add(new.module)
        if old is None:
            self._membership_changed = True
        elif self._by_module.get(new.module) is old:
            self._by_module[new.module] = new

    def _promote(self, changed: set[str], fresh: dict[str, bytes]) -> None:
        """Second-level prefilter: files mentioning a hot name are candidates too."""
        if not changed:
            return
        hot: set[str] = set()
        for entry in self._entries.values():
            if entry.level1 and entry.facts is not None:
                hot |= entry.facts.hot
        hot_now = frozenset(hot)
        recheck_all = hot_now != self._hot
        self._hot = hot_now
        needles = frozenset(name.encode() for name in hot_now)
        for rel, entry in self._entries.items():
            if entry.level1:
                continue
            if rel in fresh:
                data: bytes | None = fresh[rel]
            elif recheck_all:
                try:
                    data = self._read(entry.path, entry.size)
                except OSError:
                    data = None
            else:
                continue
            # One regex pass over the file (cheap: it only stops at '@') finds the names used
            # as decorators; searching for every hot name separately costs far more.
            candidate = bool(
                needles
                and data is not None
                and b"@" in data
                and not needles.isdisjoint(_DECORATOR_ROOT.findall(data))
            )
            if candidate and not (entry.candidate and entry.facts is not None):
                self._parse_entry(entry, data or b"")
            if candidate != entry.candidate:
                entry.candidate = candidate
                changed.add(entry.module)

    def _index_modules(self) -> bool:
        """Rebuild the module indexes; True when the set of modules changed."""
        if not self._membership_changed:
            return False
        self._membership_changed = False
        by_module: dict[str, _Entry] = {}
        for rel in sorted(self._entries):
            entry = self._entries[rel]
            # `a.py` and `a/__init__.py` both claim module `a`; Python imports the package.
            if entry.module in by_module and not rel.endswith("__init__.py"):
                continue
            by_module[entry.module] = entry
        changed = by_module.keys() != self._by_module.keys()
        self._by_module = by_module
        if changed:
            packages: set[str] = set()
            suffixes: dict[str, list[str]] = {}
            for module in by_module:
                parts = module.split(".")
                for i in range(1, len(parts)):
                    packages.add(".".join(parts[:i]))
                    suffixes.setdefault(".".join(parts[i:]), []).append(module)
            self._packages = packages
            self._suffixes = suffixes
        return changed

    # -- resolution ------------------------------------------------------------------------

    def _hash(self, resource_type: str, config: dict[str, Any]) -> tuple[str | None, str | None]:
        """(config_hash, error) for a fully resolved config, memoised across scans."""
        key = resource_type + json.dumps(config, sort_keys=True, default=str)
        found = self._hashes.get(key)
        if found is None:
            from runtime.confighash import config_hash

            try:
                found = (config_hash(resource_type, config), None)
            except (ValueError, KeyError, TypeError) as exc:
                found = (None, str(exc.args[0] if exc.args else exc))
            self._hashes[key] = found
        return found

    def _resource(
        self,
        name: str,
        resource_type: str,
        config: dict[str, Any],
        file: str,
        line: int,
        variable: str | None,
        origin: tuple[Any, ...],
        diags: list[Diagnostic],
    ) -> ResourceDef:
        digest: str | None = None
        unresolved = sorted(k for k, v in config.items() if contains_unresolved(v))
        if unresolved:
            diags.append(
                Diagnostic(
                    "info",
                    file,
                    line,
                    f"resource {name!r}: "
                    + ", ".join(f"{k} = {_source(config[k])}" for k in unresolved)
                    + " cannot be evaluated without running the code; its config hash (and so "
                    "its drift) is unknown",
                    codes.CONFIG_UNRESOLVED,
                )
            )
        elif needs_image(resource_type) and not any(config.get(f) for f in IMAGE_FIELDS):
            # Its own error (upstream refuses it at import), instead of an "invalid config".
            diags.append(
                Diagnostic(
                    "error",
                    file,
                    line,
                    missing_image_message(resource_type, name),
                    codes.CONFIG_NEEDS_IMAGE,
                )
            )
        else:
            digest, error = self._hash(resource_type, config)
            if error:
                diags.append(
                    Diagnostic(
                        "warning",
                        file,
                        line,
                        f"resource {name!r} ({resource_type}): invalid config: {error}",
                        codes.CONFIG_INVALID,
                    )
                )
        return ResourceDef(name, resource_type, config, file, line, variable, digest, origin)

    def _config_def(
        self,
        r: _Resolver,
        module: str,
        call: CallExpr,
        variable: str | None,
        file: str,
        line: int,
        origin: tuple[Any, ...],
        diags: list[Diagnostic],
    ) -> ResourceDef | None:
        """`_config_def_uncached`, once per definition per file (several functions share one)."""
        return r.definition(
            ("config", origin),
            diags,
            lambda found: self._config_def_uncached(
                r, module, call, variable, file, line, origin, found
            ),
        )

    def _config_def_uncached(
        self,
        r: _Resolver,
        module: str,
        call: CallExpr,
        variable: str | None,
        file: str,
        line: int,
        origin: tuple[Any, ...],
        diags: list[Diagnostic],
    ) -> ResourceDef | None:
        """A resource from a `LiveServerless(...)`-style call evaluated in `module`."""
        sym = r.callee(module, call)
        if sym[0] != "sdk" or sym[1] not in RESOURCE_TYPES:
            return None
        config: dict[str, Any] = {}
        for key, value in call.kwargs:
            config[key] = r.evaluate(module, value)
        if call.args:
            config["*args"] = Unresolved(", ".join(_source(a) for a in call.args))
        if call.star:
            config["**kwargs"] = Unresolved(call.source)
        name = config.get("name")
        if not isinstance(name, str):
            if variable is None:
                diags.append(
                    Diagnostic(
                        "error",
                        file,
                        line,
                        f"{sym[1]}(...) has no name= that can be read statically; give it a "
                        'literal name, e.g. name="worker"',
                        codes.UNKNOWN_CONFIG,
                    )
                )
                return None
            diags.append(
                Diagnostic(
                    "warning",
                    file,
                    line,
                    f"{sym[1]} config {variable!r} has no literal name=; the endpoint is named "
                    f"{variable!r} after the variable",
                    codes.CONFIG_UNRESOLVED,
                )
            )
            name = variable
        return self._resource(name, sym[1], config, file, line, variable, origin, diags)

    def _endpoint_def(
        self,
        r: _Resolver,
        module: str,
        call: CallExpr,
        variable: str | None,
        file: str,
        line: int,
        origin: tuple[Any, ...],
        load_balanced: bool,
        default_name: str | None,
        diags: list[Diagnostic],
    ) -> tuple[ResourceDef | None, list[str], list[str]]:
        """`_endpoint_def_uncached`, once per Endpoint and use per file."""
        return r.definition(
            ("endpoint", origin, load_balanced, default_name),
            diags,
            lambda found: self._endpoint_def_uncached(
                r, module, call, variable, file, line, origin, load_balanced, default_name, found
            ),
        )

    def _endpoint_def_uncached(
        self,
        r: _Resolver,
        module: str,
        call: CallExpr,
        variable: str | None,
        file: str,
        line: int,
        origin: tuple[Any, ...],
        load_balanced: bool,
        default_name: str | None,
        diags: list[Diagnostic],
    ) -> tuple[ResourceDef | None, list[str], list[str]]:
        """A resource from `Endpoint(...)` keyword arguments; plus its dependencies."""
        from runtime.endpoint import endpoint_resource

        kwargs = {k: r.evaluate(module, v) for k, v in call.kwargs}
        if call.args:
            kwargs.setdefault("name", r.evaluate(module, call.args[0]))
        name = kwargs.get("name")
        if name is None and default_name is not None and not load_balanced:
            name = kwargs["name"] = default_name
        if not isinstance(name, str):
            diags.append(
                Diagnostic(
                    "error",
                    file,
                    line,
                    "Endpoint(...) "
                    + ("with routes " if load_balanced else "")
                    + 'needs a name= that can be read statically, e.g. name="api"',
                    codes.ENDPOINT_INVALID,
                )
            )
            return None, [], []
        deps = _ensure_list_of_str(kwargs.pop("dependencies", None)) or []
        sys_deps = _ensure_list_of_str(kwargs.pop("system_dependencies", None)) or []
        # Unresolved arguments: map them with a neutral stand-in, then mark the fields unknown.
        stand_in = {"cpu": "ANY", "gpu": "ANY"}
        fields = {
            "workers": ("workersMin", "workersMax"),
            "gpu": ("gpus",),
            "cpu": ("instanceIds",),
            "idle_timeout": ("idleTimeout",),
            "execution_timeout_ms": ("executionTimeoutMs",),
            "flashboot": ("flashboot",),
            "scaler_value": ("scalerValue",),
            "scaler_type": ("scalerType",),
            "env": ("env",),
            "image": ("imageName",),
            "template": ("template",),
            "datacenter": ("datacenter",),
            "gpu_count": ("gpuCount",),
            "min_cuda_version": ("cudaVersions",),
            "volume": ("networkVolume",),
        }
        clean: dict[str, Any] = {}
        unknown: dict[str, Unresolved] = {}
        for key, value in kwargs.items():
            if contains_unresolved(value):
                unknown[key] = Unresolved(_source(value))
                if key in stand_in:
                    clean[key] = stand_in[key]
            else:
                clean[key] = value
        if call.star:
            unknown["**kwargs"] = Unresolved(call.source)
        try:
            resource_type, config = endpoint_resource(
                clean, load_balanced=load_balanced, live=False
            )
        except (ValueError, KeyError, TypeError) as exc:
            diags.append(
                Diagnostic(
                    "error",
                    file,
                    line,
                    f"Endpoint {name!r}: {exc.args[0] if exc.args else exc}",
                    codes.ENDPOINT_INVALID,
                )
            )
            return None, deps, sys_deps
        for key, marker in unknown.items():
            for fld in fields.get(key, (key,)):
                config[fld] = marker
        resource = self._resource(name, resource_type, config, file, line, variable, origin, diags)
        return resource, deps, sys_deps

    def _resolve_file(self, entry: _Entry) -> _FileResult:
        r = self._resolver
        # Memos are per file: each file's result must record every module it consulted (its
        # dependencies for invalidation), which a memo hit from another file would hide.
        r.touched = set()
        r.memo.clear()
        r.values.clear()
        r.defs.clear()
        facts = entry.facts
        functions: list[FunctionInfo] = []
        resources: list[ResourceDef] = []
        diags: list[Diagnostic] = []
        uses: list[tuple[tuple[Any, ...], str, str, int]] = []
        module = entry.module
        if facts is None:
            return _FileResult(functions, resources, diags, frozenset({module}), uses)
        for item in facts.decorated:
            self._resolve_item(r, entry, item, functions, resources, diags, uses)
        return _FileResult(functions, resources, diags, frozenset(r.touched | {module}), uses)

    def _resolve_item(
        self,
        r: _Resolver,
        entry: _Entry,
        item: Decorated,
        functions: list[FunctionInfo],
        resources: list[ResourceDef],
        diags: list[Diagnostic],
        uses: list[tuple[tuple[Any, ...], str, str, int]],
    ) -> None:
        module, rel = entry.module, entry.rel
        for call, called in item.decorators:
            sym = r.callee(module, call)
            kind = sym[0]
            resource: ResourceDef | None = None
            method = path = None
            deps: list[str] = []
            sys_deps: list[str] = []
            variable: str | None = None
            route_unknown = False
            if sym == ("sdk", "remote"):
                if not called:
                    diags.append(
                        Diagnostic(
                            "warning",
                            rel,
                            call.line,
                            f"bare @remote on {item.name!r} has no resource config and is "
                            "ignored; write @remote(<config>)",
                            codes.BARE_DECORATOR,
                        )
                    )
                    return
                kw = call.kwarg_dict()
                target = kw.get("resource_config", call.args[0] if call.args else None)
                resource, variable = self._remote_config(r, entry, item, call, target, diags)
                if resource is None:
                    return
                before = len(diags)
                method = self._str_arg(r, module, kw.get("method"), "method", item, call, diags)
                path = self._str_arg(r, module, kw.get("path"), "path", item, call, diags)
                route_unknown = len(diags) > before
                deps_value = kw.get("dependencies", call.args[1] if len(call.args) > 1 else None)
                sys_value = kw.get(
                    "system_dependencies", call.args[2] if len(call.args) > 2 else None
                )
                deps = self._deps(r, module, deps_value, item, call, diags)
                sys_deps = self._deps(r, module, sys_value, item, call, diags)
            elif sym == ("sdk", "Endpoint") and called:
                origin = ("endpoint", rel, call.line)
                resource, deps, sys_deps = self._endpoint_def(
                    r, module, call, None, rel, call.line, origin, False, item.name, diags
                )
                uses.append((origin, "decorator", rel, call.line))
                if resource is None:
                    return
            elif kind == "route" and called:
                value_sym = sym[1]
                origin = ("endpoint", value_sym[1], value_sym[2])
                def_entry = self._by_module.get(value_sym[1])
                def_rel = def_entry.rel if def_entry else rel
                variable = value_sym[2]
                resource, deps, sys_deps = self._endpoint_def(
                    r,
                    value_sym[1],
                    value_sym[3],
                    variable,
                    def_rel,
                    value_sym[4],
                    origin,
                    True,
                    None,
                    diags,
                )
                uses.append((origin, "routes", rel, call.line))
                if resource is None:
                    return
                method = sym[2]
                kw = call.kwarg_dict()
                path_value = kw.get("path", call.args[0] if call.args else None)
                before = len(diags)
                path = self._str_arg(r, module, path_value, "path", item, call, diags)
                route_unknown = len(diags) > before
            elif kind == "value" and not called and r.is_endpoint(sym):
                origin = ("endpoint", sym[1], sym[2])
                def_entry = self._by_module.get(sym[1])
                variable = sym[2]
                resource, deps, sys_deps = self._endpoint_def(
                    r,
                    sym[1],
                    sym[3],
                    variable,
                    def_entry.rel if def_entry else rel,
                    sym[4],
                    origin,
                    False,
                    item.name,
                    diags,
                )
                uses.append((origin, "decorator", rel, call.line))
                if resource is None:
                    return
            else:
                continue  # not a Flash decorator
            if item.nested:
                diags.append(
                    Diagnostic(
                        "warning",
                        rel,
                        item.line,
                        f"{item.qualname!r} is decorated inside another function or class; the "
                        "generated handler imports module-level names only, so it will not be "
                        "found — move it to the top level of the module",
                        codes.NESTED_FUNCTION,
                    )
                )
            resources.append(resource)
            functions.append(
                FunctionInfo(
                    name=item.name,
                    module=entry.module,
                    file=rel,
                    line=item.line,
                    resource=resource.name,
                    is_async=item.is_async,
                    is_class=item.is_class,
                    http_method=method.upper() if isinstance(method, str) else None,
                    http_path=path,
                    config_variable=variable,
                    dependencies=deps,
                    system_dependencies=sys_deps,
                    signature=item.signature,
                    method_signatures=item.method_signatures,
                    decorator_line=call.line,
                    route_unknown=route_unknown,
                )
            )
            return  # one Flash decorator per object

    def _remote_config(
        self,
        r: _Resolver,
        entry: _Entry,
        item: Decorated,
        call: CallExpr,
        target: Any,
        diags: list[Diagnostic],
    ) -> tuple[ResourceDef | None, str | None]:
        module, rel = entry.module, entry.rel

        def unknown(text: str, why: str) -> tuple[None, None]:
            diags.append(
                Diagnostic(
                    "error",
                    rel,
                    call.line,
                    f"@remote on {item.name!r}: {why} ({text}); define it as a module-level "
                    'config, e.g. cfg = LiveServerless(name="worker"), and pass that',
                    codes.UNKNOWN_CONFIG,
                )
            )
            return None, None

        if target is None:
            return unknown("no argument", "no resource config given")
        if isinstance(target, Ref):
            sym = r.dotted(module, target.parts)
            if sym[0] != "value":
                return unknown(target.source, "unknown resource config")
            value = sym[3]
            def_module, variable, line = sym[1], sym[2], sym[4]
            def_entry = self._by_module.get(def_module)
            def_rel = def_entry.rel if def_entry else rel
            if not isinstance(value, CallExpr):
                return unknown(target.source, "not a resource config")
            if r.callee(def_module, value) == ("sdk", "Endpoint"):
                return unknown(
                    target.source,
                    "an Endpoint object is not a resource config: use @"
                    + variable
                    + " or @"
                    + variable
                    + '.post("/path") instead of @remote',
                )
            resource = self._config_def(
                r,
                def_module,
                value,
                variable,
                def_rel,
                line,
                ("config", def_module, variable),
                diags,
            )
            if resource is None:
                return unknown(target.source, "not a resource config")
            return resource, variable
        if isinstance(target, CallExpr):
            resource = self._config_def(
                r, module, target, None, rel, target.line, ("inline", rel, target.line), diags
            )
            if resource is None:
                return unknown(target.source, "not a resource config class call")
            return resource, None
        return unknown(_source(target), "not a resource config")

    def _str_arg(
        self,
        r: _Resolver,
        module: str,
        value: Any,
        what: str,
        item: Decorated,
        call: CallExpr,
        diags: list[Diagnostic],
    ) -> str | None:
        if value is None:
            return None
        result = r.evaluate(module, value)
        if isinstance(result, str):
            return result
        diags.append(
            Diagnostic(
                "error",
                self._current_rel,
                call.line,
                f"{item.name!r}: {what} must be a string known without running the code, got "
                f"{_source(value)}",
                codes.INVALID_METHOD if what == "method" else codes.INVALID_PATH,
            )
        )
        return None

    def _deps(
        self,
        r: _Resolver,
        module: str,
        value: Any,
        item: Decorated,
        call: CallExpr,
        diags: list[Diagnostic],
    ) -> list[str]:
        if value is None:
            return []
        result = _ensure_list_of_str(r.evaluate(module, value))
        if result is None:
            diags.append(
                Diagnostic(
                    "warning",
                    self._current_rel,
                    call.line,
                    f"{item.name!r}: dependencies {_source(value)} cannot be read statically "
                    "(a list of strings is expected); they will not be installed by the build",
                    codes.CONFIG_UNRESOLVED,
                )
            )
            return []
        return result

    def _endpoint_checks(self, results: list[_FileResult]) -> list[Diagnostic]:
        modes: dict[tuple[Any, ...], dict[str, tuple[str, int]]] = {}
        for result in results:
            for origin, mode, file, line in result.endpoint_uses:
                modes.setdefault(origin, {}).setdefault(mode, (file, line))
        diags = []
        for origin, used in modes.items():
            if len(used) > 1:
                file, line = max(used.values())
                diags.append(
                    Diagnostic(
                        "error",
                        file,
                        line,
                        f"Endpoint {origin[2]!r} is used both as a decorator (queue-based) and "
                        "with routes (load-balanced); use two Endpoint objects",
                        codes.ENDPOINT_MIXED,
                    )
                )
        return diags

    # -- scan ------------------------------------------------------------------------------

    def scan(
        self,
        *,
        generated_at: str | None = None,
        changed_paths: Iterable[str | os.PathLike[str]] | None = None,
    ) -> ScanResult:
        """Rescan the project (only what changed) and return the manifest and diagnostics.

        `changed_paths` (e.g. a batch from `engine.watch`) lets a rescan stat only those paths
        instead of walking the project; anything it cannot judge from them alone (a directory,
        a rule file) falls back to the full walk, as does the first scan.
        """
        with self._lock:
            return self._scan(generated_at, changed_paths)

    def _scan(
        self, generated_at: str | None, changed_paths: Iterable[str | os.PathLike[str]] | None
    ) -> ScanResult:
        started = time.perf_counter()
        self.stats = stats = ScanStats()
        project = self.project
        hinted = None
        if changed_paths is not None and self._rules_sig is not None:
            hinted = self._hinted(changed_paths)
        if hinted is not None:
            changed, fresh = self._refresh_files(hinted[0], removed=hinted[1])
        else:
            # After the first scan, directories whose mtime did not change are not listed again.
            files = project.rewalk(".py") if self._rules_sig is not None else project.walk(".py")
            if self._rules_sig is not None and project.last_rule_files != self._rules_sig:
                # A .gitignore / .flashignore changed: other files may be in or out now.
                project.ignore.reload()
                files = project.python_files()
            self._rules_sig = project.last_rule_files
            changed, fresh = self._refresh_files(files)
        self._promote(changed, fresh)
        modules_changed = self._index_modules()
        if modules_changed:
            self._results.clear()
        stats.files = len(self._entries)
        if changed or modules_changed:
            self._candidates = [
                self._entries[rel] for rel in sorted(self._entries) if self._entries[rel].candidate
            ]
        candidates = self._candidates
        stats.candidates = len(candidates)

        if self._last is not None and not changed and not modules_changed:
            manifest, diags, functions, resources = self._last
            manifest = dict(manifest)
            manifest["generated_at"] = generated_at or now_iso()
            stats.elapsed_ms = (time.perf_counter() - started) * 1000
            return ScanResult(manifest, list(diags), list(functions), list(resources), stats)

        self._resolver = _Resolver(self)
        results: list[_FileResult] = []
        live = {entry.rel for entry in candidates}
        for rel in list(self._results):
            if rel not in live:
                del self._results[rel]
        diags: list[Diagnostic] = []
        for entry in candidates:
            diags.extend(entry.diags)
            cached = self._results.get(entry.rel)
            if cached is None or entry.module in changed or cached.deps & changed:
                self._current_rel = entry.rel
                try:
                    cached = self._resolve_file(entry)
                except Exception as exc:  # a scanner bug must not take the whole scan down
                    cached = _FileResult([], [], [_internal_error(entry.rel, exc)], frozenset(), [])
                self._results[entry.rel] = cached
                stats.resolved += 1
            results.append(cached)
        # Problems in files parsed on demand (a config module with a syntax error, say) matter
        # as soon as a Flash file depends on them.
        for module in sorted(set().union(*(result.deps for result in results))):
            dep = self._by_module.get(module)
            if dep is not None and not dep.candidate and dep.diags:
                diags.extend(dep.diags)
        functions = [f for result in results for f in result.functions]
        resources = [d for result in results for d in result.resources]
        for result in results:
            diags.extend(result.diags)
        diags.extend(self._endpoint_checks(results))
        manifest, manifest_diags = build_manifest(
            self.project.name, functions, resources, generated_at=generated_at
        )
        diags = sorted_diagnostics(diags + manifest_diags)
        self._last = (manifest, diags, functions, resources)
        stats.elapsed_ms = (time.perf_counter() - started) * 1000
        return ScanResult(manifest, diags, functions, resources, stats)

    # The file being resolved (diagnostics of argument checks are filed under it) and the
    # resolver of the current scan.
    _current_rel: str = ""
    _resolver: _Resolver


def _source(value: Any) -> str:
    if isinstance(value, Unresolved):
        return value.source
    if isinstance(value, (Ref, CallExpr)):
        return value.source
    if isinstance(value, (list, tuple, dict)) and contains_unresolved(value):
        found: list[str] = []

        def walk(v: Any) -> None:
            if isinstance(v, Unresolved):
                found.append(v.source)
            elif isinstance(v, (list, tuple)):
                for x in v:
                    walk(x)
            elif isinstance(v, dict):
                for x in v.values():
                    walk(x)

        walk(value)
        return ", ".join(found)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def scan_project(
    path: Project | str | os.PathLike[str], *, generated_at: str | None = None
) -> ScanResult:
    """One full scan of the project at `path` (a fresh `Scanner`)."""
    return Scanner(path).scan(generated_at=generated_at)
