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
6. check     - import every handler in a fresh interpreter (cwd = build dir); a failure names
               the handler and shows the error.
7. archive   - `.flash/archive.tar.gz`, reproducible (engine.archive); the build id is its
               SHA-256, so the same sources give the same id.

The function is synchronous and thread-safe to call from a worker thread; concurrent builds of
one project are serialised by a lock file. Its size (a little over 600 lines) is earned: the seven
steps above, in order, each with the file rules it needs; reuse of a build is in `current`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.archive import FIXED_MTIME, MAX_ARCHIVE_BYTES, file_sha256, write_archive
from engine.build.images import image_clashes, python_version, with_images
from engine.build.vendor import VENDOR_DIR, VendorError, vendor_files
from engine.diagnostics import Diagnostic
from engine.handlergen import check_handler_imports, generate_handlers, handler_filename
from engine.manifest import manifest_json
from engine.project import load_ignore
from engine.scan import scan_project
from engine.wording import plural

__all__ = [
    "ARCHIVE_NAME",
    "BUILD_DIR",
    "FLASH_DIR",
    "MANIFEST_NAME",
    "STEPS",
    "BuildError",
    "BuildProgress",
    "BuildResult",
    "build_project",
    "collect_files",
    "collect_requirements",
    "generated_at",
]

FLASH_DIR = ".flash"
BUILD_DIR = ".flash/.build"
DEPS_DIR = ".flash/.deps"
ARCHIVE_NAME = "archive.tar.gz"
MANIFEST_NAME = "flash_manifest.json"
LOCK_NAME = ".build.lock"

STEPS: tuple[str, ...] = ("scan", "deps", "copy", "manifest", "handlers", "check", "archive")

# On top of engine.project's rules (which already skip .git, .venv/venv and any directory with a
# pyvenv.cfg, .flash, .runpod, __pycache__, node_modules, site-packages): never shipped either,
# whatever the ignore files say — other VCS data, upstream's state dir, tool caches.
_BUILD_SKIP_DIRS = frozenset(
    {".hg", ".svn", ".tetra", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", ".nox"}
)
_NEVER_SUFFIXES = (".pyc", ".pyo")
# `.env.example` and friends document variables without values; they may ship.
_ENV_TEMPLATES = (".example", ".sample", ".template", ".dist")


@dataclass(frozen=True)
class BuildProgress:
    """One progress event: `step` is one of `STEPS`; `done` of `total` units finished."""

    step: str
    done: int
    total: int
    message: str = ""


@dataclass
class BuildResult:
    """What a successful build produced."""

    project_dir: Path
    build_dir: Path
    archive: Path
    manifest: dict[str, Any]
    build_id: str
    handlers: list[str]
    files_copied: int
    files_unchanged: int
    files_removed: int
    archive_bytes: int
    duration: float
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def resources(self) -> list[str]:
        """Resource names of the manifest, sorted."""
        return sorted(self.manifest.get("resources") or {})

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (the `flash-tui build --json` object)."""
        return {
            "project_dir": str(self.project_dir),
            "build_id": self.build_id,
            "archive": str(self.archive),
            "archive_bytes": self.archive_bytes,
            "build_dir": str(self.build_dir),
            "resources": self.resources,
            "handlers": self.handlers,
            "counts": {
                "copied": self.files_copied,
                "unchanged": self.files_unchanged,
                "removed": self.files_removed,
            },
            "duration_ms": round(self.duration * 1000, 1),
            "warnings": [d.to_json() for d in self.warnings],
        }


class BuildError(Exception):
    """The build was refused or failed; `diagnostics` says why (errors first)."""

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None, step: str = ""):
        super().__init__(message)
        self.diagnostics = list(diagnostics or [])
        self.step = step

    def __str__(self) -> str:
        lines = [super().__str__()]
        for d in self.diagnostics:
            if d.severity == "error":
                where = f"{d.file}:{d.line}" if d.line else str(d.file or "")
                lines.append(f"  {where}: {d.message}" if where else f"  {d.message}")
        return "\n".join(lines)


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
# step 3: collect and copy


def _is_secret_env(name: str) -> bool:
    if name == ".env":
        return True
    return name.startswith(".env.") and not name.endswith(_ENV_TEMPLATES)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def collect_files(
    root: Path, is_ignored: Callable[[str, bool], bool]
) -> tuple[dict[str, Path], list[Diagnostic]]:
    """Files to ship: relative posix path -> the real file to read, plus warnings.

    Symlinks are resolved: a link whose target is inside the project is followed (files are
    later copied as regular files); a link that escapes the project, or dangles, is skipped with
    a warning. Directory links are followed once per real directory, so loops end.
    """
    files: dict[str, Path] = {}
    warnings: list[Diagnostic] = []
    seen_dirs: set[Path] = {root}

    def warn(rel: str, message: str, code: str) -> None:
        warnings.append(Diagnostic("warning", rel, 0, message, code))

    def walk(directory: Path, prefix: str) -> None:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            warn(prefix or ".", f"cannot list directory: {exc.strerror or exc}", "build-unreadable")
            return
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            path = Path(entry.path)
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir()  # follows links
                is_file = entry.is_file()
            except OSError:
                continue
            if is_dir:
                if entry.name in _BUILD_SKIP_DIRS or is_ignored(rel, True):
                    continue
            elif _is_secret_env(entry.name) or entry.name.endswith(_NEVER_SUFFIXES):
                continue
            elif is_ignored(rel, False):
                continue
            target = path
            if is_link:
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    warn(rel, "broken or looping symlink; not included", "build-symlink-broken")
                    continue
                if not _inside(target, root) or _inside(target, root / FLASH_DIR):
                    warn(
                        rel,
                        f"symlink points outside the project ({target}); not included",
                        "build-symlink-escape",
                    )
                    continue
            if is_dir:
                real = target.resolve()
                if real in seen_dirs:
                    continue  # a loop, or a second link to a directory already shipped
                seen_dirs.add(real)
                walk(path, rel + "/")
            elif is_file:
                files[rel] = target
            # sockets, fifos, devices: never shipped

    walk(root, "")
    return files, warnings


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


def _same_content(a: Path, b: Path) -> bool:
    return file_sha256(a) == file_sha256(b)


def _copy_file(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.is_dir():
        _remove(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-flash")
    shutil.copyfile(source, tmp)  # reads through symlinks: a regular file in the build
    st = source.stat()
    executable = st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.chmod(tmp, 0o755 if executable else 0o644)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, dest)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _sync_file(source: Path, dest: Path) -> bool:
    """Make `dest` a copy of `source`; True if bytes were copied.

    Size + mtime equal -> unchanged without reading either file. Same size, different mtime ->
    compare hashes (a `touch` or a fresh git checkout must not force a copy) and only adopt the
    mtime when the content is the same.
    """
    try:
        src, dst = source.stat(), dest.lstat()
    except FileNotFoundError:
        _copy_file(source, dest)
        return True
    if stat.S_ISREG(dst.st_mode) and src.st_size == dst.st_size:
        if src.st_mtime_ns == dst.st_mtime_ns:
            return False
        if _same_content(source, dest):
            os.utime(dest, ns=(src.st_atime_ns, src.st_mtime_ns))
            return False
    _copy_file(source, dest)
    return True


def _existing_files(build_dir: Path) -> set[str]:
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(build_dir):
        rel_dir = Path(dirpath).relative_to(build_dir).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        found.update(prefix + name for name in filenames)
        # directory symlinks would be reported as dirs; a build never contains any
        found.update(prefix + d for d in dirnames if (Path(dirpath) / d).is_symlink())
    return found


def _prune(build_dir: Path, keep: set[str]) -> int:
    """Delete files under `build_dir` not in `keep`, then empty directories; return the count."""
    removed = 0
    for rel in sorted(_existing_files(build_dir) - keep):
        _remove(build_dir / rel)
        removed += 1
    for dirpath, _dirnames, _filenames in sorted(os.walk(build_dir), reverse=True):
        path = Path(dirpath)
        if path != build_dir and not any(path.iterdir()):
            path.rmdir()
    return removed


# --------------------------------------------------------------------------------------------
# step 2: dependencies


def collect_requirements(root: Path, manifest: dict[str, Any]) -> list[str]:
    """requirements.txt lines + every function's `dependencies`, de-duplicated in order."""
    requirements: list[str] = []
    req_file = root / "requirements.txt"
    if req_file.is_file():
        for line in req_file.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                requirements.append(line)
    for resource_name in sorted(manifest.get("resources") or {}):
        for function in manifest["resources"][resource_name].get("functions") or []:
            requirements.extend(str(dep) for dep in function.get("dependencies") or [])
    return list(dict.fromkeys(requirements))


def _pip_command(target: Path, requirements_file: Path) -> list[str]:
    # RunPod workers are linux x86_64 CPython: fetch wheels for that platform, whatever this
    # machine is (binary wheels only: nothing can be compiled for another platform), for the
    # Python of the worker image the build targets (engine.build.images).
    version = python_version()
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--no-compile",  # .pyc files would differ per run and are excluded anyway
        "--target",
        str(target),
        "--python-version",
        version,
        "--implementation",
        "cp",
        "--only-binary=:all:",
        "--platform",
        "manylinux_2_28_x86_64",
        "--platform",
        "manylinux_2_17_x86_64",
        "--platform",
        "manylinux2014_x86_64",
        "--upgrade",
        "-r",
        str(requirements_file),
    ]


def _install_deps(root: Path, requirements: list[str], timeout: float) -> Path | None:
    """Install `requirements` into a cache directory keyed by their hash; return it."""
    if not requirements:
        return None
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:16]
    cache = root / DEPS_DIR / key
    # Only the current requirement set is kept: older caches would pile up with every change.
    if cache.parent.is_dir():
        for other in cache.parent.iterdir():
            if other.name != key:
                _remove(other)
    if (cache / ".complete").is_file():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=cache.parent))
    try:
        req_file = staging / "requirements.txt"
        req_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        target = staging / "site"
        try:
            result = subprocess.run(
                _pip_command(target, req_file),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise BuildError(
                f"dependency installation did not finish within {timeout:g}s", step="deps"
            ) from exc
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise BuildError(
                "dependency installation failed",
                [Diagnostic("error", "requirements.txt", 0, tail or "pip failed", "build-deps")],
                step="deps",
            )
        for junk in list(target.rglob("__pycache__")):
            shutil.rmtree(junk, ignore_errors=True)
        (target / ".complete").write_text(key + "\n")
        _remove(cache)
        os.replace(target, cache)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache


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
) -> BuildResult:
    """Build `project` (a path, or an object with `.root`) and return the `BuildResult`.

    Raises `BuildError` (with diagnostics) when the project has error diagnostics, a handler
    does not import, or dependency installation fails. Emits `BuildProgress` events through
    `on_progress`, from the calling thread. `python` is the interpreter that imports the
    handlers for the check (default: this one), e.g. the environment the workers will run in.
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
            cache = _install_deps(root, requirements, deps_timeout)
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
        removed = _prune(build_dir, set(sources) | generated)
        copied = unchanged = 0
        total = len(sources)
        progress("copy", 0, total)
        for index, rel in enumerate(sorted(sources), 1):
            try:
                changed = _sync_file(sources[rel], build_dir / rel)
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

        # 6. import check
        if import_check and handlers:
            done = 0
            progress("check", 0, len(handlers))

            def checked(result: Any) -> None:
                nonlocal done
                done += 1
                progress("check", done, len(handlers), result.handler)

            checks = check_handler_imports(
                build_dir, handlers, timeout=check_timeout, on_done=checked, python=python
            )
            failed = [c for c in checks if not c.ok]
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
                names = ", ".join(c.handler for c in failed)
                raise BuildError(
                    f"generated handler(s) failed to import: {names}", diagnostics, step="check"
                )

        # 7. archive
        members = sorted(set(sources) | generated)
        progress("archive", 0, 1, ARCHIVE_NAME)
        build_id = write_archive(build_dir, archive, members)
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
    )
