"""Phase 3, the resolver: what a name used in one module is bound to, across the project's
modules, and the static value of config arguments (through `engine.staticeval`).

One `Resolver` serves one file's resolution: its memos are per file because the set of modules
it consulted (`touched`) is that file's dependency set for invalidation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.diagnostics import Diagnostic
from engine.scan.facts import FileEntry, FileFacts, package_of
from engine.scan.index import ModuleIndex
from engine.staticeval import CallExpr, Ref, Unresolved, evaluate
from runtime import enums as _enums
from runtime.resourcekinds import RESOURCE_TYPES

SDK_ROOTS: tuple[str, ...] = ("tetra_rp", "runpod_flash", "runtime")
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
#   ("def", module, name)               a top-level def/class (or a name bound opaquely)
#   ("other",)                          anything else (third-party, unknown)
Sym = tuple[Any, ...]
OTHER: Sym = ("other",)
SDK_MODULE: Sym = ("sdk", "")


def is_sdk_module(name: str) -> bool:
    """True for an SDK module or submodule name."""
    root = name.partition(".")[0]
    return root in SDK_ROOTS


class Resolver:
    """Resolves names across modules for one file (memoised; records the modules it used)."""

    def __init__(
        self, index: ModuleIndex, facts_of: Callable[[FileEntry], FileFacts | None]
    ) -> None:
        # `facts_of` parses a file on demand (a config module no decorator is in).
        self.index = index
        self.facts_of = facts_of
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
        """The facts of a project module (parsed on demand); records it as consulted."""
        self.touched.add(module)
        entry = self.index.entry(module)
        if entry is None:
            return None
        return self.facts_of(entry)

    def is_project(self, module: str) -> bool:
        """True for a module or package of the project."""
        return self.index.is_project(module)

    def import_target(self, name: str, importer: str) -> str | None:
        """The project module an absolute import names (None for SDK / third party)."""
        if name.partition(".")[0] in ("tetra_rp", "runpod_flash"):
            return None
        if self.is_project(name):
            return name
        if is_sdk_module(name):
            return None
        entry = self.index.entry(importer)
        package = package_of(importer, entry.rel) if entry else importer.rpartition(".")[0]
        sibling = f"{package}.{name}" if package else name
        if self.is_project(sibling):
            return sibling
        return self.index.unique_suffix(name)

    def module_sym(self, name: str, importer: str) -> Sym:
        """The symbol of `import name` in `importer`."""
        target = self.import_target(name, importer)
        if target is not None:
            return ("module", target)
        return SDK_MODULE if is_sdk_module(name) else OTHER

    def from_module(self, name: str, attr: str, importer: str) -> Sym:
        """The symbol of `from name import attr` in `importer`."""
        target = self.import_target(name, importer)
        if target is None:
            if is_sdk_module(name):
                return ("sdk", attr) if attr in SDK_NAMES else SDK_MODULE
            return OTHER
        return self.attr_of_module(target, attr)

    def attr_of_module(self, module: str, attr: str) -> Sym:
        """`module.attr`: a top-level name of the module, or its submodule."""
        sym = self.name(module, attr)
        # A submodule of the same name rebinds the attribute once imported: it wins over a def
        # made in the module itself, but not over one a from-import binds (`from .x import x`
        # imports the submodule first, then binds the function over it).
        own = sym[0] == "other" or (sym[0] == "def" and sym[1] == module)
        if own and self.is_project(f"{module}.{attr}"):
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
            return OTHER  # an import cycle
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
            return OTHER
        binding = facts.names.get(name)
        if binding is None:
            for star in facts.stars:
                sym = self.from_module(star, name, module)
                if sym != OTHER and sym != SDK_MODULE:
                    return sym
            return OTHER
        kind = binding[0]
        if kind == "import":
            if binding[2] is None:
                return self.module_sym(binding[1], module)
            return self.from_module(binding[1], binding[2], module)
        if kind == "assign":
            return ("value", module, name, binding[1], binding[2])
        if kind == "def":
            return ("def", module, name)
        return OTHER

    def dotted(self, module: str, parts: tuple[str, ...]) -> Sym:
        """What a dotted name used in `module` refers to."""
        sym = self.name(module, parts[0])
        for part in parts[1:]:
            sym = self.attr(sym, part)
            if sym == OTHER:
                break
        return sym

    def attr(self, sym: Sym, part: str) -> Sym:
        """`sym.part`: an SDK name or enum member, a module attribute, or an Endpoint route."""
        kind = sym[0]
        if kind == "sdk":
            if sym[1] == "":
                return ("sdk", part) if part in SDK_NAMES else SDK_MODULE
            if sym[1] in ENUM_NAMES:
                return ("enum", sym[1], part)
            return OTHER
        if kind == "module":
            return self.attr_of_module(sym[1], part)
        if kind == "value" and part in ROUTE_METHODS and self.is_endpoint(sym):
            return ("route", sym, part.upper())
        return OTHER

    def callee(self, module: str, call: CallExpr) -> Sym:
        """What the function of a call in `module` refers to."""
        return self.dotted(module, call.func.parts)

    def is_endpoint(self, sym: Sym) -> bool:
        """True when a value symbol is an `Endpoint(...)` object."""
        value = sym[3]
        return isinstance(value, CallExpr) and self.callee(sym[1], value) == ("sdk", "Endpoint")

    # -- definitions (the call graph) ------------------------------------------------------

    def called_definition(self, module: str, parts: tuple[str, ...]) -> tuple[str, str] | None:
        """The (module, name) of the project function or class a dotted call in `module`
        names, following imports and re-exports; None for anything else."""
        if len(parts) == 1:
            return self.definition_of(module, parts[0])
        owner = self.dotted(module, parts[:-1])
        if owner[0] != "module":
            return None
        return self.definition_of(owner[1], parts[-1])

    def definition_of(self, module: str, name: str) -> tuple[str, str] | None:
        """Where the top-level `def`/`class` that `module.name` is bound to is defined."""
        sym = self.name(module, name)
        return (sym[1], sym[2]) if sym[0] == "def" else None

    # -- values ----------------------------------------------------------------------------

    def evaluate(self, module: str, value: Any) -> Any:
        """The static value of a partial expression in `module` (`Unresolved` parts kept)."""
        return evaluate(
            value,
            lambda ref: self.ref_value(module, ref),
            lambda call: self.call_value(module, call),
        )

    def ref_value(self, module: str, ref: Ref) -> Any:
        """The static value of a name (a module-level assignment or an SDK enum member)."""
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
        """The static value of a call: `NetworkVolume(...)` / `PodTemplate(...)` keywords only."""
        sym = self.callee(module, call)
        if sym in (("sdk", "NetworkVolume"), ("sdk", "PodTemplate")) and not call.star:
            if call.args:
                return Unresolved(call.source)
            return {k: self.evaluate(module, v) for k, v in call.kwargs}
        return Unresolved(call.source)
