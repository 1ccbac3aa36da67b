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

The call graph (`ScanResult.calls`, an `engine.callgraph.CallGraph`): facts record the calls of
module-level names in each decorated body (and `obj.m(...)` after `obj = Cls(...)`), resources
resolve them to the project definition they name (following imports and re-exports, so a caller
file depends on the callee's module for invalidation), and the scanner maps each definition to
its endpoint; calls within one endpoint are not edges.

Endpoint objects map to resource classes through `runtime.endpoint.endpoint_resource` with
`live=False`: what `flash build`/`deploy` provision (upstream sets
FLASH_IS_LIVE_PROVISIONING=false for them).

Phases, each a module consuming the previous one's output: `facts` (one file's AST facts and
its cache entry) -> `index` (modules across files) -> `resolve` (names and static values across
modules) -> `resources` (functions, resources, diagnostics of one file) -> `scanner` (the
incremental `Scanner`, its cache and lock, `scan_project`).
"""

from engine.scan.facts import MAX_PARSE_BYTES, module_name
from engine.scan.scanner import Scanner, ScanResult, ScanStats, scan_project

__all__ = ["MAX_PARSE_BYTES", "ScanResult", "ScanStats", "Scanner", "module_name", "scan_project"]
