"""Phase 1, per-file facts: what one Python file binds, star-imports and decorates, from its AST.

Also the per-file cache entry (`FileEntry`: path, mtime_ns, size, content hash, facts) and the
reading and parsing of one file into it. Nothing here looks at another file.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from typing import Any

from engine import diagnostics as codes
from engine.diagnostics import Diagnostic
from engine.staticeval import CallExpr, Ref, SourceText, dotted, partial

# A file that defines or uses a Flash decorator must spell one of these (`@remote`, `@rf.remote`,
# `@Endpoint`, `E = Endpoint`, `api = rf.Endpoint(...)`); configs and constants elsewhere are
# parsed on demand when a decorator refers to them, routes on an imported Endpoint object are
# found through hot names. Fewer words: less to search in every byte of every file.
TRIGGERS: tuple[bytes, ...] = (b"remote", b"Endpoint")
MAX_PARSE_BYTES = 4 * 1024 * 1024  # bigger candidate files are reported, not parsed


@dataclass(frozen=True)
class CallSite:
    """A call in a decorated definition of a name bound at module level (resolved later).

    `parts` is the called dotted name (`fn`, `mod.fn`), or for `obj.m(...)` after
    `obj = Cls(...)`, the class's dotted name with `method` "m". `within`: the calling method
    of a decorated class, "" for a function.
    """

    parts: tuple[str, ...]
    line: int
    method: str | None = None
    within: str = ""


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
    # Calls of module-level names in its body (the call graph's raw material).
    calls: tuple[CallSite, ...] = ()


@dataclass
class FileFacts:
    """Everything the resolver needs from one file: bindings, star imports, decorated defs."""

    names: dict[str, tuple[Any, ...]]
    stars: list[str]
    decorated: list[Decorated]
    hot: frozenset[str]


@dataclass
class FileEntry:
    """One file in the scanner's cache: its stat key, content hash, and facts once parsed."""

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


def digest(data: bytes) -> int:
    """The content hash of the cache key."""
    # The cache lives in memory only, so Python's own (64-bit, per-process) hash will do: it is
    # several times faster than a cryptographic digest over every byte of the project.
    return hash(data)


def module_name(rel: str) -> str:
    """Dotted module of a relative posix path: `a/b.py` -> `a.b`, `pkg/__init__.py` -> `pkg`."""
    stem = rel[:-3] if rel.endswith(".py") else rel
    if stem.endswith("/__init__"):
        stem = stem[: -len("/__init__")]
    return stem.replace("/", ".")


def package_of(module: str, rel: str) -> str:
    """The package relative imports in `module` (file `rel`) start from."""
    return module if rel.endswith("__init__.py") else module.rpartition(".")[0]


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
        self.package = package_of(module, rel)
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
                calls=self._calls(node),
            )
        )

    def _calls(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
    ) -> tuple[CallSite, ...]:
        """Calls of module-level names (and of methods of instances of them) in `node`."""
        if isinstance(node, ast.ClassDef):
            out: list[CallSite] = []
            for st in node.body:
                if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out.extend(self._body_calls(st, st.name))
            return tuple(out)
        return tuple(self._body_calls(node, ""))

    def _body_calls(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef, within: str
    ) -> list[CallSite]:
        # Only names bound at module level can be another endpoint's function or class: this
        # drops builtins and locals before any cross-module resolution.
        instances: dict[str, tuple[str, ...]] = {}
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Assign, ast.AnnAssign)) and isinstance(sub.value, ast.Call):
                cls = dotted(sub.value.func)
                if cls is None or cls[0] not in self.names:
                    continue
                targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        instances[target.id] = cls
        out: list[CallSite] = []
        for sub in ast.walk(node):
            if not isinstance(sub, ast.Call):
                continue
            func = sub.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call):
                # `Cls(...).m(...)`: a method of a fresh instance
                cls = dotted(func.value.func)
                if cls is not None and cls[0] in self.names:
                    out.append(CallSite(cls, sub.lineno, func.attr, within))
                continue
            parts = dotted(func)
            if parts is None:
                continue
            if len(parts) == 2 and parts[0] in instances:
                out.append(CallSite(instances[parts[0]], sub.lineno, parts[1], within))
            elif parts[0] in self.names:
                out.append(CallSite(parts, sub.lineno, None, within))
        return out

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


_CODING_COOKIE = re.compile(rb"(?:[^\n]*\n)?[ \t\f]*#[^\n]*?coding[:=][ \t]*[-\w.]+")


def internal_error(rel: str, exc: BaseException) -> Diagnostic:
    """The warning filed when the scanner itself fails on a file."""
    return Diagnostic(
        "warning",
        rel,
        0,
        f"not scanned: the scanner failed on this file ({type(exc).__name__}: {exc}); "
        "please report it",
        codes.INTERNAL_ERROR,
    )


def parse_facts(rel: str, module: str, data: bytes) -> tuple[FileFacts | None, list[Diagnostic]]:
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
        return None, [internal_error(rel, exc)]
    return (
        FileFacts(extractor.names, extractor.stars, extractor.decorated, extractor.hot()),
        [],
    )


def read_bytes(path: str, size: int = 0) -> bytes:
    """The whole file at `path`; `size` (its stat size) lets one read call suffice."""
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


def parse_entry(entry: FileEntry, data: bytes) -> bool:
    """Fill `entry`'s facts and diagnostics from its bytes; False when too large to parse."""
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
        return False
    facts, diags = parse_facts(entry.rel, entry.module, data)
    entry.facts = facts
    entry.diags = tuple(diags)
    return True
