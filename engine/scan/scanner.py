"""Phase 5, the scanner: the incremental `Scanner` (per-file cache, prefilters, lock) and
`scan_project`, running facts -> module index -> resolution -> resources on what changed.

Incremental: per-file cache keyed by (path, mtime_ns, size), then by a content hash, so a
touched but unchanged file costs a stat, a read and a hash. Project-level resolution is cached
per file and redone only for files whose module, or a module they consulted, changed;
`scan(changed_paths=...)` (a watcher batch) skips the walk entirely.
"""

from __future__ import annotations

import os
import re
import stat as stat_module
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import diagnostics as codes
from engine.callgraph import CallEdge, CallGraph
from engine.diagnostics import Diagnostic, sorted_diagnostics
from engine.manifest import FunctionInfo, ResourceDef, build_manifest, now_iso
from engine.project import RACY_NS, RULE_FILES, Project, SourceFile
from engine.scan.confighashes import ConfigHashes
from engine.scan.facts import (
    TRIGGERS,
    FileEntry,
    FileFacts,
    digest,
    internal_error,
    module_name,
    parse_entry,
    read_bytes,
)
from engine.scan.index import ModuleIndex
from engine.scan.resources import (
    FileResolution,
    FileResult,
    RawCall,
    ScanContext,
    endpoint_checks,
)

_DECORATOR_ROOT = re.compile(rb"@[ \t]*([A-Za-z_][A-Za-z0-9_]*)")


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
    """The manifest dict, sorted diagnostics, the resolved functions/resources, the call graph."""

    manifest: dict[str, Any]
    diagnostics: list[Diagnostic]
    functions: list[FunctionInfo] = field(default_factory=list)
    resources: list[ResourceDef] = field(default_factory=list)
    stats: ScanStats = field(default_factory=ScanStats)
    calls: CallGraph = field(default_factory=CallGraph)

    @property
    def errors(self) -> list[Diagnostic]:
        """The error diagnostics."""
        return [d for d in self.diagnostics if d.severity == "error"]

    def to_json(self) -> dict[str, Any]:
        """`scan --json` output: the manifest keys plus `diagnostics` and `calls` (call sites)."""
        out = dict(self.manifest)
        out["diagnostics"] = [d.to_json() for d in self.diagnostics]
        out["calls"] = self.calls.to_json()
        return out


class Scanner:
    """An incremental scanner of one project: call `scan()` again after files change.

    `Scanner(path)` raises `NotADirectoryError` when `path` is not a directory. Calls to `scan()`
    from several threads are serialised (the TUI's watcher and an engine operation may both
    ask). The returned manifest shares nested dicts with later results (unchanged parts are
    reused), so treat it as read-only.
    """

    def __init__(
        self, project: Project | str | os.PathLike[str], *, hash_store: Path | None = None
    ) -> None:
        self.project = project if isinstance(project, Project) else Project.open(project)
        self._entries: dict[str, FileEntry] = {}
        self._index = ModuleIndex()
        self._hot: frozenset[str] = frozenset()
        self._results: dict[str, FileResult] = {}
        # `hash_store` (engine.scan.confighashes.config_hash_store): config hashes kept across
        # runs, so an unchanged project's scan needs no resource models.
        self._hashes = ConfigHashes(hash_store)
        self._rules_sig: tuple[Any, ...] | None = None
        self._membership_changed = True
        self._candidates: list[FileEntry] = []
        self._last: (
            tuple[
                dict[str, Any], list[Diagnostic], list[FunctionInfo], list[ResourceDef], CallGraph
            ]
            | None
        ) = None
        self.stats = ScanStats()
        self._lock = threading.Lock()

    # -- files -----------------------------------------------------------------------------

    def _read(self, path: str, size: int = 0) -> bytes:
        # One seam for every read of a project file (tests deny one file's reads through it).
        return read_bytes(path, size)

    def _facts_of(self, entry: FileEntry) -> FileFacts | None:
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

    def _load(self, rel: str, path: str, mtime_ns: int, size: int, data: bytes) -> FileEntry:
        module = module_name(rel)
        level1 = any(t in data for t in TRIGGERS)
        entry = FileEntry(rel, path, module, mtime_ns, size, digest(data), level1, level1)
        if level1:
            self._parse_entry(entry, data)
        return entry

    def _parse_entry(self, entry: FileEntry, data: bytes) -> None:
        if parse_entry(entry, data):
            self.stats.parsed += 1

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
        seen: dict[str, FileEntry] = {} if removed is None else dict(entries)
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
                unreadable = FileEntry(
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
                if digest(data) == entry.digest:
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
        self, old: FileEntry | None, new: FileEntry, seen: dict[str, FileEntry], changed: set[str]
    ) -> None:
        seen[new.rel] = new
        changed.add(new.module)
        if old is None:
            self._membership_changed = True
        else:
            self._index.replace(old, new)

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
        self._index, changed = self._index.rebuilt(self._entries)
        return changed

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
            result = self._scan(generated_at, changed_paths)
            self._hashes.save()
            return result

    @property
    def hashes(self) -> ConfigHashes:
        """The scanner's config-hash memo (its `computed` counts hashes worked out anew)."""
        return self._hashes

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
            manifest, diags, functions, resources, graph = self._last
            manifest = dict(manifest)
            manifest["generated_at"] = generated_at or now_iso()
            stats.elapsed_ms = (time.perf_counter() - started) * 1000
            return ScanResult(manifest, list(diags), list(functions), list(resources), stats, graph)

        ctx = ScanContext(self._index, self._facts_of, self._hashes)
        results: list[FileResult] = []
        live = {entry.rel for entry in candidates}
        for rel in list(self._results):
            if rel not in live:
                del self._results[rel]
        diags: list[Diagnostic] = []
        for entry in candidates:
            diags.extend(entry.diags)
            cached = self._results.get(entry.rel)
            if cached is None or entry.module in changed or cached.deps & changed:
                try:
                    cached = FileResolution(entry, ctx).run()
                except Exception as exc:  # a scanner bug must not take the whole scan down
                    cached = FileResult([], [], [internal_error(entry.rel, exc)], frozenset(), [])
                self._results[entry.rel] = cached
                stats.resolved += 1
            results.append(cached)
        # Problems in files parsed on demand (a config module with a syntax error, say) matter
        # as soon as a Flash file depends on them.
        for module in sorted(set().union(*(result.deps for result in results))):
            dep = self._index.entry(module)
            if dep is not None and not dep.candidate and dep.diags:
                diags.extend(dep.diags)
        functions = [f for result in results for f in result.functions]
        resources = [d for result in results for d in result.resources]
        for result in results:
            diags.extend(result.diags)
        diags.extend(endpoint_checks(results))
        graph = _call_graph(functions, [c for result in results for c in result.calls])
        manifest, manifest_diags = build_manifest(
            self.project.name,
            functions,
            resources,
            generated_at=generated_at,
            remote_callers=graph.callers_of_any,
        )
        in_manifest = manifest["resources"]
        graph = CallGraph.of(
            e for e in graph.edges if e.caller in in_manifest and e.callee in in_manifest
        )
        diags = sorted_diagnostics(diags + manifest_diags)
        self._last = (manifest, diags, functions, resources, graph)
        stats.elapsed_ms = (time.perf_counter() - started) * 1000
        return ScanResult(manifest, diags, functions, resources, stats, graph)


def _call_graph(functions: list[FunctionInfo], calls: list[RawCall]) -> CallGraph:
    """Each call of another endpoint's function, or method of its class, as an edge."""
    by_definition = {(f.module, f.name): f for f in functions}
    edges: list[CallEdge] = []
    for call in calls:
        callee = by_definition.get(call.callee)
        if callee is None or callee.resource == call.caller:
            continue
        if callee.is_class:
            # `Cls(...)` only makes a handle; the remote call is `obj.method(...)`.
            if call.method is None or call.method.startswith("_"):
                continue
            function = f"{callee.name}.{call.method}"
        elif call.method is None:
            function = callee.name
        else:
            continue  # a method of what a plain function returned: not a remote call
        edges.append(
            CallEdge(
                call.caller, callee.resource, call.caller_function, function, call.file, call.line
            )
        )
    return CallGraph.of(edges)


def scan_project(
    path: Project | str | os.PathLike[str], *, generated_at: str | None = None
) -> ScanResult:
    """One full scan of the project at `path` (a fresh `Scanner`)."""
    return Scanner(path).scan(generated_at=generated_at)
