"""Build a Flash project: `.flash/.build/` + `flash_manifest.json` + handlers -> archive.

`build_project()` runs these steps, reporting each as `BuildProgress` events:

1. scan      - AST scan and manifest (engine.scan / engine.manifest); error diagnostics stop the
               build with a `BuildError` listing them.
2. deps      - only with `deps=True`: pip-install requirements.txt + per-function dependencies
               for RunPod's platform into a cache under `.flash/.deps/`, merged into the build
               (so the import check sees them: user code may import them).
3. copy      - assemble `.flash/.build/` incrementally: a file is copied only when its size,
               mtime or content differ; files that left the project are deleted. Ignore rules
               come from engine.project; on top of them the build never ships secrets (`.env`),
               VCS data, virtual environments or its own output. Symlinks that resolve outside
               the project are refused (warning diagnostic); file symlinks inside are copied as
               regular files.
4. manifest  - write `flash_manifest.json`. Its `generated_at` is NOT the wall clock, which would
               make every archive different: it is `$SOURCE_DATE_EPOCH` when set (the
               reproducible-builds convention), else the archive's fixed epoch 1980-01-01.
   The manifest's resources carry the upstream worker image each runs in on RunPod
               (`imageName`, engine.build.images), fixed here.
5. handlers  - generate `handler_<resource>.py` per resource (engine.handlergen), plus our
               runtime and the packages upstream's images lack under `_flash_packages/`
               (engine.build.vendor), so the archive runs in those images as it is.
6. check     - import every handler as a fresh interpreter would (cwd = build dir) on the
               interpreter its endpoint will run on (engine.build.interpreters); a failure names
               the handler and shows the error. Only handlers whose recorded inputs changed are
               imported again, in children forked from a pre-imported interpreter
               (engine.build.checks keeps the record, next to the build). A handler whose
               environment is not built yet and misses a module that environment will provide
               is checked by the deploy's `envs` step instead, once it is built.
7. archive   - `.flash/archive.tar.gz`, reproducible (engine.archive); the build id is its
               SHA-256, so the same sources give the same id.

The function is synchronous and thread-safe to call from a worker thread; concurrent builds of
one project are serialised by a lock file. Step 2 is `deps`, step 3 `files`; the build's
paths and types are `model`; reuse of a build is in `current`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.archive import FIXED_MTIME, MAX_ARCHIVE_BYTES, write_archive
from engine.build.checks import ImportChecker
from engine.build.deps import collect_requirements, install_deps
from engine.build.files import collect_files, prune, sync_file
from engine.build.images import image_clashes, python_version, with_images
from engine.build.interpreters import (
    deferred,
    handler_interpreters,
    missing_import_diagnostics,
)
from engine.build.model import (
    ARCHIVE_NAME,
    BUILD_DIR,
    FLASH_DIR,
    LOCK_NAME,
    MANIFEST_NAME,
    BuildError,
    BuildProgress,
    BuildResult,
)
from engine.build.vendor import VENDOR_DIR, VendorError, vendor_files
from engine.diagnostics import Diagnostic
from engine.handlergen import generate_handlers, handler_filename
from engine.manifest import manifest_json
from engine.project import load_ignore
from engine.scan import scan_project
from engine.wording import plural

__all__ = ["ARCHIVE_LEVEL", "build_project", "generated_at"]

# gzip level of the archive. Every build writes it (each save of a dev session): level 1 packs
# ~3x faster than the default 6 for ~15% more bytes, which an upload of any size gains back.
ARCHIVE_LEVEL = 1


def generated_at() -> str:
    """The manifest timestamp: `$SOURCE_DATE_EPOCH` if set and valid, else 1980-01-01.

    Deterministic by design (see the module docstring); the real build time is in BuildResult.
    """
    epoch = FIXED_MTIME
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if raw.isdigit():
        epoch = int(raw)
    stamp = datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat()
    return stamp.replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# step 1: scan


def _project_root(project: Any) -> Path:
    # Not getattr(project, "root"): every Path has a `.root` too (the anchor "/").
    root = project if isinstance(project, (str, os.PathLike)) else project.root
    return Path(root).expanduser().resolve()


def _scan(root: Path) -> tuple[dict[str, Any], list[Diagnostic]]:
    """Manifest dict (with the reproducible `generated_at`) and sorted diagnostics."""
    result = scan_project(root, generated_at=generated_at())
    return result.manifest, list(result.diagnostics)


# --------------------------------------------------------------------------------------------
# step 3: what the build refuses to ship


# Top-level names a project must not define: the generated handlers import them from flash-tui,
# and the build dir comes first on sys.path inside a worker.
_RESERVED_TOP_LEVEL = ("runtime", VENDOR_DIR)


def _refuse_runtime_shadowing(files: dict[str, Path]) -> None:
    clashes = sorted(
        rel
        for rel in files
        for name in _RESERVED_TOP_LEVEL
        if rel == f"{name}.py"
        or (rel.startswith(f"{name}/") and rel.endswith(".py"))
        or (name == VENDOR_DIR and rel.startswith(f"{name}/"))
    )
    if clashes:
        first = clashes[0].split("/")[0]
        raise BuildError(
            f"the project's top-level {first!r} would shadow flash-tui's runtime package",
            [
                Diagnostic(
                    "error",
                    clashes[0],
                    0,
                    f"top-level module {first!r} clashes with the flash-tui runtime that the "
                    "generated handlers import; rename it (e.g. move it into a package)",
                    "build-runtime-shadow",
                )
            ],
            step="copy",
        )


# --------------------------------------------------------------------------------------------
# the build


@contextlib.contextmanager
def _build_lock(flash_dir: Path) -> Iterator[None]:
    """Serialise builds of one project (e.g. the TUI and a CLI build at the same time)."""
    flash_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock, builds are still atomic per file
        yield
        return
    with open(flash_dir / LOCK_NAME, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_project(
    project: Any,
    *,
    deps: bool = False,
    on_progress: Callable[[BuildProgress], None] | None = None,
    import_check: bool = True,
    check_timeout: float = 60.0,
    deps_timeout: float = 600.0,
    python: str | None = None,
    checker: ImportChecker | None = None,
) -> BuildResult:
    """Build `project` (a path, or an object with `.root`) and return the `BuildResult`.

    Raises `BuildError` (with diagnostics) when the project has error diagnostics, a handler
    does not import, or dependency installation fails. Emits `BuildProgress` events through
    `on_progress`, from the calling thread. `python` is the interpreter that imports the
    handlers for the check (default: this one), e.g. the environment the workers will run in.
    `checker` keeps check servers across builds (a dev session's); default: one for this build.
    """
    started = time.perf_counter()
    root = _project_root(project)
    if not root.is_dir():
        raise BuildError(f"{root} is not a directory", step="scan")

    def progress(step: str, done: int, total: int, message: str = "") -> None:
        if on_progress is not None:
            on_progress(BuildProgress(step, done, total, message))

    flash_dir = root / FLASH_DIR
    build_dir = root / BUILD_DIR
    archive = flash_dir / ARCHIVE_NAME
    # 1. scan, before anything is written: a refused build leaves no .flash/ behind
    progress("scan", 0, 1, "scanning")
    manifest, diagnostics = _scan(root)
    errors = [d for d in diagnostics if d.severity == "error"]
    if errors:
        raise BuildError(
            f"build refused: {plural(len(errors), 'error diagnostic')}", diagnostics, step="scan"
        )
    if not manifest.get("resources"):
        raise BuildError(
            f"no Flash code in {root}: nothing to build (a Flash project decorates functions "
            'with @remote(config), @Endpoint(...) or api.post("/path"))',
            step="scan",
        )
    warnings = [d for d in diagnostics if d.severity == "warning"]
    progress("scan", 1, 1, plural(len(manifest["resources"]), "resource"))
    with _build_lock(flash_dir):
        # what ships (part of step 3)
        files, file_warnings = collect_files(root, load_ignore(root).is_ignored)
        warnings.extend(file_warnings)
        _refuse_runtime_shadowing(files)
        for rel in image_clashes(files):
            warnings.append(
                Diagnostic(
                    "warning",
                    rel,
                    0,
                    f"{rel} would replace the RunPod worker image's own {rel} when the artifact "
                    "is unpacked there (fine in the local cloud); move it into a package",
                    "build-image-clash",
                )
            )
        generated = {MANIFEST_NAME}
        for name, resource in (manifest.get("resources") or {}).items():
            generated.add(handler_filename(name, resource))
        for rel in sorted(generated & set(files)):
            warnings.append(
                Diagnostic(
                    "warning", rel, 0, "replaced by the generated file of that name", "build-shadow"
                )
            )
            del files[rel]

        # 2. dependencies, into a cache outside the build dir (before the copy, so the prune
        # below knows every file that belongs to the build)
        dep_files: dict[str, Path] = {}
        if deps:
            requirements = collect_requirements(root, manifest)
            progress("deps", 0, 1, f"{len(requirements)} requirement(s)")
            cache = install_deps(root, requirements, deps_timeout)
            if cache is not None:
                for path in cache.rglob("*"):
                    rel = path.relative_to(cache).as_posix()
                    # project files win over installed ones of the same name
                    if path.is_file() and rel != ".complete" and rel not in files:
                        dep_files[rel] = path
            progress("deps", 1, 1, f"{len(dep_files)} file(s) from dependencies")
        else:
            progress("deps", 1, 1, "skipped (use --deps to install into the build)")

        # the runtime and what upstream's worker images lack (part of step 5, copied with 3)
        image_python = python_version()
        try:
            vendored = vendor_files(
                image_python, root / FLASH_DIR / ".vendor", timeout=deps_timeout
            )
        except VendorError as exc:
            raise BuildError(
                f"cannot gather the packages the worker image lacks: {exc}",
                [Diagnostic("error", VENDOR_DIR, 0, str(exc), "build-vendor")],
                step="copy",
            ) from exc
        vendor = {f"{VENDOR_DIR}/{rel}": path for rel, path in vendored.items()}

        # 3. copy: prune first, so a path that turned from a file into a directory (or back)
        # never collides with its old self
        build_dir.mkdir(parents=True, exist_ok=True)
        sources = {**dep_files, **vendor, **files}
        removed = prune(build_dir, set(sources) | generated)
        copied = unchanged = 0
        total = len(sources)
        progress("copy", 0, total)
        for index, rel in enumerate(sorted(sources), 1):
            try:
                changed = sync_file(sources[rel], build_dir / rel)
            except OSError as exc:
                # Shipping a build without one of the project's files would fail at run time,
                # far from the cause: refuse now and name the file.
                reason = exc.strerror or str(exc)
                raise BuildError(
                    f"cannot copy {rel} into the build: {reason}",
                    [Diagnostic("error", rel, 0, f"cannot copy: {reason}", "build-copy")],
                    step="copy",
                ) from exc
            if rel in vendor:
                pass  # the build's own packages: not the project's files, not counted
            elif changed:
                copied += 1
            else:
                unchanged += 1
            if index % 50 == 0 or index == total:
                progress("copy", index, total, rel)

        # 4. manifest
        progress("manifest", 0, 1)
        manifest = with_images(manifest, image_python)
        manifest_text = manifest_json(manifest)
        manifest_path = build_dir / MANIFEST_NAME
        if not manifest_path.is_file() or manifest_path.read_text("utf-8") != manifest_text:
            manifest_path.write_text(manifest_text, encoding="utf-8")
        progress("manifest", 1, 1)

        # 5. handlers
        resources = manifest.get("resources") or {}
        progress("handlers", 0, len(resources))
        try:
            handlers = generate_handlers(manifest, build_dir)
        except ValueError as exc:
            raise BuildError(
                f"handler generation failed: {exc}",
                [Diagnostic("error", "", 0, str(exc), "build-handler")],
                step="handlers",
            ) from exc
        progress("handlers", len(handlers), len(resources))

        # 6. import check, of the handlers whose recorded inputs changed
        members = sorted(set(sources) | generated)
        checked_handlers: list[str] = []
        if import_check and handlers:
            done = 0
            progress("check", 0, len(handlers))

            def checked(result: Any) -> None:
                nonlocal done
                done += 1
                progress("check", done, len(handlers), result.handler)

            # Each handler on the interpreter its endpoint will run on (engine.build.interpreters)
            where = {} if python else handler_interpreters(root, manifest)
            groups: dict[str | None, list[str]] = {}
            for handler in handlers:
                groups.setdefault(python or where[handler].python, []).append(handler)
            active = checker if checker is not None else ImportChecker()
            checks = []
            try:
                for interpreter, group in groups.items():
                    checks += active.check(
                        build_dir,
                        group,
                        members=members,
                        timeout=check_timeout,
                        on_done=checked,
                        python=interpreter,
                    )
            finally:
                if checker is None:
                    active.close()
            checked_handlers = [c.handler for c in checks if not c.reused]
            failed = [c for c in checks if not c.ok and not deferred(c, where.get(c.handler))]
            if failed:
                diagnostics = [
                    Diagnostic(
                        "error",
                        c.handler,
                        0,
                        f"{c.handler} does not import: {c.error}\n{c.output.rstrip()}",
                        "build-import",
                    )
                    for c in failed
                ]
                diagnostics = [*missing_import_diagnostics(failed, build_dir), *diagnostics]
                names = ", ".join(c.handler for c in failed)
                raise BuildError(
                    f"generated handler(s) failed to import: {names}", diagnostics, step="check"
                )

        # 7. archive
        progress("archive", 0, 1, ARCHIVE_NAME)
        # The bundled packages rarely change: compressed once, kept beside the vendor cache.
        build_id = write_archive(
            build_dir,
            archive,
            members,
            compresslevel=ARCHIVE_LEVEL,
            cache_dir=flash_dir / ".archive-cache",
            cached_prefix=f"{VENDOR_DIR}/",
        )
        size = archive.stat().st_size
        if size > MAX_ARCHIVE_BYTES:
            warnings.append(
                Diagnostic(
                    "warning",
                    f"{FLASH_DIR}/{ARCHIVE_NAME}",
                    0,
                    f"archive is {size / 2**20:.0f} MB; RunPod accepts at most "
                    f"{MAX_ARCHIVE_BYTES // 2**20} MB",
                    "build-archive-size",
                )
            )
        progress("archive", 1, 1, f"{size} bytes")

    return BuildResult(
        project_dir=root,
        build_dir=build_dir,
        archive=archive,
        manifest=manifest,
        build_id=build_id,
        handlers=handlers,
        files_copied=copied,
        files_unchanged=unchanged,
        files_removed=removed,
        archive_bytes=size,
        duration=time.perf_counter() - started,
        warnings=warnings,
        handlers_checked=checked_handlers,
    )
