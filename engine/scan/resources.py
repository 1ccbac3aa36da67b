"""Phase 4, resources: each decorated function of one file becomes a `FunctionInfo` on a
`ResourceDef` (its endpoint's config, evaluated statically and hashed), with diagnostics.

`FileResolution` resolves one file and owns its outputs; `endpoint_checks` then looks across
every file's results (one Endpoint object used in two modes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine import diagnostics as codes
from engine.diagnostics import Diagnostic
from engine.manifest import FunctionInfo, ResourceDef
from engine.scan.confighashes import ConfigHashes
from engine.scan.facts import Decorated, FileEntry, FileFacts
from engine.scan.index import ModuleIndex
from engine.scan.resolve import Resolver
from engine.staticeval import CallExpr, Ref, Unresolved, contains_unresolved
from runtime.resourcekinds import IMAGE_FIELDS, RESOURCE_TYPES, missing_image_message, needs_image

Origin = tuple[Any, ...]  # what identifies a definition: ("config", module, variable), ...


@dataclass(frozen=True)
class RawCall:
    """A call from a decorated definition to a project function or class, not yet mapped to
    the callee's endpoint (that needs every file's functions: `engine.scan.scanner`)."""

    caller: str  # the caller's endpoint
    caller_function: str
    callee: tuple[str, str]  # (module, top-level name) of the called definition
    method: str | None  # the method called on an instance of the callee class
    file: str
    line: int


@dataclass
class FileResult:
    """One file's functions, resources, diagnostics, the modules it consulted, Endpoint uses,
    and its calls of project definitions."""

    functions: list[FunctionInfo]
    resources: list[ResourceDef]
    diags: list[Diagnostic]
    deps: frozenset[str]
    endpoint_uses: list[tuple[Origin, str, str, int]]  # (origin, mode, file, line)
    calls: list[RawCall] = field(default_factory=list)


@dataclass(frozen=True)
class ScanContext:
    """What resolving a file needs from its scan: the module index, on-demand facts, hashes."""

    index: ModuleIndex
    facts_of: Callable[[FileEntry], FileFacts | None]
    hashes: ConfigHashes


@dataclass(frozen=True)
class _Site:
    """A resource-defining call: evaluated in `module`, reported at `file:line`."""

    module: str
    call: CallExpr
    variable: str | None  # the module-level name it is assigned to, if any
    file: str
    line: int
    origin: Origin


class FileResolution:
    """Resolves the decorated definitions of one file; owns that file's outputs."""

    def __init__(self, entry: FileEntry, ctx: ScanContext) -> None:
        self.entry = entry
        self.ctx = ctx
        self.resolver = Resolver(ctx.index, ctx.facts_of)
        self.functions: list[FunctionInfo] = []
        self.resources: list[ResourceDef] = []
        self.diags: list[Diagnostic] = []
        self.uses: list[tuple[Origin, str, str, int]] = []
        self.calls: list[RawCall] = []

    def run(self) -> FileResult:
        """The file's result; its `deps` are every module the resolution consulted."""
        module = self.entry.module
        facts = self.entry.facts
        if facts is not None:
            for item in facts.decorated:
                self._item(item)
            deps = frozenset(self.resolver.touched | {module})
        else:
            deps = frozenset({module})
        return FileResult(self.functions, self.resources, self.diags, deps, self.uses, self.calls)

    def _resource(
        self,
        name: str,
        resource_type: str,
        config: dict[str, Any],
        site: _Site,
        diags: list[Diagnostic],
    ) -> ResourceDef:
        """The resource `name` with its config hash, or a diagnostic saying why it has none."""
        file, line = site.file, site.line
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
            digest, error = self.ctx.hashes.get(resource_type, config)
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
        return ResourceDef(
            name, resource_type, config, file, line, site.variable, digest, site.origin
        )

    def _config_def(self, site: _Site, diags: list[Diagnostic]) -> ResourceDef | None:
        """`_config_def_uncached`, once per definition per file (several functions share one)."""
        return self.resolver.definition(
            ("config", site.origin), diags, lambda found: self._config_def_uncached(site, found)
        )

    def _config_def_uncached(self, site: _Site, diags: list[Diagnostic]) -> ResourceDef | None:
        """A resource from a `LiveServerless(...)`-style call evaluated in `site.module`."""
        r, module, call = self.resolver, site.module, site.call
        variable, file, line = site.variable, site.file, site.line
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
        return self._resource(name, sym[1], config, site, diags)

    def _endpoint_def(
        self, site: _Site, load_balanced: bool, default_name: str | None, diags: list[Diagnostic]
    ) -> tuple[ResourceDef | None, list[str], list[str]]:
        """`_endpoint_def_uncached`, once per Endpoint and use per file."""
        return self.resolver.definition(
            ("endpoint", site.origin, load_balanced, default_name),
            diags,
            lambda found: self._endpoint_def_uncached(site, load_balanced, default_name, found),
        )

    def _endpoint_def_uncached(
        self, site: _Site, load_balanced: bool, default_name: str | None, diags: list[Diagnostic]
    ) -> tuple[ResourceDef | None, list[str], list[str]]:
        """A resource from `Endpoint(...)` keyword arguments; plus its dependencies."""
        from runtime.endpoint import endpoint_resource

        r, module, call, file, line = self.resolver, site.module, site.call, site.file, site.line
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
        resource = self._resource(name, resource_type, config, site, diags)
        return resource, deps, sys_deps

    def _item(self, item: Decorated) -> None:
        """The function or resource of one decorated definition (its first Flash decorator)."""
        r, entry, diags = self.resolver, self.entry, self.diags
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
                resource, variable = self._remote_config(item, call, target)
                if resource is None:
                    return
                before = len(diags)
                method = self._str_arg(kw.get("method"), "method", item, call)
                path = self._str_arg(kw.get("path"), "path", item, call)
                route_unknown = len(diags) > before
                deps_value = kw.get("dependencies", call.args[1] if len(call.args) > 1 else None)
                sys_value = kw.get(
                    "system_dependencies", call.args[2] if len(call.args) > 2 else None
                )
                deps = self._deps(deps_value, item, call)
                sys_deps = self._deps(sys_value, item, call)
            elif sym == ("sdk", "Endpoint") and called:
                origin = ("endpoint", rel, call.line)
                site = _Site(module, call, None, rel, call.line, origin)
                resource, deps, sys_deps = self._endpoint_def(site, False, item.name, diags)
                self.uses.append((origin, "decorator", rel, call.line))
                if resource is None:
                    return
            elif kind == "route" and called:
                value_sym = sym[1]
                origin = ("endpoint", value_sym[1], value_sym[2])
                def_entry = self.ctx.index.entry(value_sym[1])
                def_rel = def_entry.rel if def_entry else rel
                variable = value_sym[2]
                site = _Site(value_sym[1], value_sym[3], variable, def_rel, value_sym[4], origin)
                resource, deps, sys_deps = self._endpoint_def(site, True, None, diags)
                self.uses.append((origin, "routes", rel, call.line))
                if resource is None:
                    return
                method = sym[2]
                kw = call.kwarg_dict()
                path_value = kw.get("path", call.args[0] if call.args else None)
                before = len(diags)
                path = self._str_arg(path_value, "path", item, call)
                route_unknown = len(diags) > before
            elif kind == "value" and not called and r.is_endpoint(sym):
                origin = ("endpoint", sym[1], sym[2])
                def_entry = self.ctx.index.entry(sym[1])
                variable = sym[2]
                def_rel = def_entry.rel if def_entry else rel
                site = _Site(sym[1], sym[3], variable, def_rel, sym[4], origin)
                resource, deps, sys_deps = self._endpoint_def(site, False, item.name, diags)
                self.uses.append((origin, "decorator", rel, call.line))
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
            self.resources.append(resource)
            self.functions.append(
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
            self._record_calls(item, resource.name)
            return  # one Flash decorator per object

    def _record_calls(self, item: Decorated, endpoint: str) -> None:
        """The calls in `item` of other project definitions (endpoints are mapped later)."""
        module = self.entry.module
        for site in item.calls:
            callee = self.resolver.called_definition(module, site.parts)
            if callee is None or callee == (module, item.name):
                continue
            caller_function = f"{item.name}.{site.within}" if site.within else item.name
            self.calls.append(
                RawCall(endpoint, caller_function, callee, site.method, self.entry.rel, site.line)
            )

    def _remote_config(
        self, item: Decorated, call: CallExpr, target: Any
    ) -> tuple[ResourceDef | None, str | None]:
        """The resource `@remote(target)` names, and its config variable (None when inline)."""
        r, diags = self.resolver, self.diags
        module, rel = self.entry.module, self.entry.rel

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
            def_entry = self.ctx.index.entry(def_module)
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
            origin = ("config", def_module, variable)
            resource = self._config_def(
                _Site(def_module, value, variable, def_rel, line, origin), diags
            )
            if resource is None:
                return unknown(target.source, "not a resource config")
            return resource, variable
        if isinstance(target, CallExpr):
            origin = ("inline", rel, target.line)
            site = _Site(module, target, None, rel, target.line, origin)
            resource = self._config_def(site, diags)
            if resource is None:
                return unknown(target.source, "not a resource config class call")
            return resource, None
        return unknown(_source(target), "not a resource config")

    def _str_arg(self, value: Any, what: str, item: Decorated, call: CallExpr) -> str | None:
        """A decorator argument that must be a static string (method, path), else a diagnostic."""
        if value is None:
            return None
        result = self.resolver.evaluate(self.entry.module, value)
        if isinstance(result, str):
            return result
        self.diags.append(
            Diagnostic(
                "error",
                self.entry.rel,
                call.line,
                f"{item.name!r}: {what} must be a string known without running the code, got "
                f"{_source(value)}",
                codes.INVALID_METHOD if what == "method" else codes.INVALID_PATH,
            )
        )
        return None

    def _deps(self, value: Any, item: Decorated, call: CallExpr) -> list[str]:
        """A static list of dependency strings, else [] and a warning."""
        if value is None:
            return []
        result = _ensure_list_of_str(self.resolver.evaluate(self.entry.module, value))
        if result is None:
            self.diags.append(
                Diagnostic(
                    "warning",
                    self.entry.rel,
                    call.line,
                    f"{item.name!r}: dependencies {_source(value)} cannot be read statically "
                    "(a list of strings is expected); they will not be installed by the build",
                    codes.CONFIG_UNRESOLVED,
                )
            )
            return []
        return result


def endpoint_checks(results: list[FileResult]) -> list[Diagnostic]:
    """An error for each Endpoint object used both as a decorator and with routes."""
    modes: dict[Origin, dict[str, tuple[str, int]]] = {}
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


def _ensure_list_of_str(value: Any) -> list[str] | None:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


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
