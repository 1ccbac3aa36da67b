"""The shared cache of endpoint environments: one virtual environment per contents key.

Where: `$FLASH_TUI_ENV_CACHE`, else `platformdirs.user_cache_dir("flash-tui")/envs` (e.g.
`~/.cache/flash-tui/envs`). Every project of the user shares it: an environment is found by the
key of what it holds (`EnvContents.key`), so a second project with the same requirements
installs nothing.

Built with uv (`uv venv --relocatable --python <our interpreter>`, then `uv pip install` with
the user's index settings, `engine.envs.indexes`) in a staging directory that is renamed to its
key only once complete (with its `flash-env.json` inside): a crash mid-install leaves a staging
directory that is never taken as ready (and is removed by the next build of that key), and a
reader never sees half an environment. Builds of one key are serialised by a lock file; the
second builder then finds the first one's environment.

Each environment can import this install's runtime and its dependencies: a `.pth` file puts a
directory holding only our `runtime` package FIRST on `sys.path` (so the runtime is always
ours), and appends this install's site-packages AFTER the environment's own (so an endpoint's
pinned packages win over ours).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

import runtime
from engine.envs.contents import EnvContents
from engine.envs.indexes import pip_settings, uv_index_args

__all__ = [
    "ENV_CACHE_ENV",
    "MARKER",
    "CachedEnv",
    "EnvCache",
    "EnvError",
    "Environment",
    "env_cache_dir",
    "redact_urls",
    "runtime_paths",
]

ENV_CACHE_ENV = "FLASH_TUI_ENV_CACHE"
MARKER = "flash-env.json"
# Touched by each deploy that uses the environment: its mtime is when it was last used.
_USED = "flash-env.used"
_RUNTIME_DIR = "flash-runtime"
_PTH = "_flash_tui_runtime.pth"
_REQUIREMENTS = "flash-requirements.txt"
_TAIL_LINES = 15
# `scheme://user:secret@host`: what uv may echo of an index URL the user's settings hold.
_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def redact_urls(text: str) -> str:
    """`text` with the credentials of any URL in it (an index's `user:token@`) masked."""
    return _CREDENTIALS.sub(r"\1***@", text)


class EnvError(Exception):
    """An environment could not be built; the message ends with the installer's last lines."""


@dataclass(frozen=True)
class Environment:
    """A ready environment of the cache: its key, directory and interpreter."""

    key: str
    path: Path
    built: bool  # installed by this call (False: found in the cache)

    @property
    def python(self) -> Path:
        """The environment's interpreter (what its endpoints' workers run on)."""
        return self.path / "bin" / "python"


@dataclass(frozen=True)
class CachedEnv:
    """One ready environment of the cache, as `flash-tui envs` lists it."""

    key: str
    path: Path
    requirements: tuple[str, ...]
    torch: bool
    size_bytes: int
    built_at: float
    last_used: float

    @property
    def python(self) -> str:
        """The environment's interpreter (what deployed endpoints on it record)."""
        return str(self.path / "bin" / "python")


def _tree_size(path: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def env_cache_dir(environ: Mapping[str, str]) -> Path:
    """`$FLASH_TUI_ENV_CACHE`, or the platform's per-user cache directory's `envs`."""
    raw = environ.get(ENV_CACHE_ENV, "").strip()
    if raw:
        return Path(raw).expanduser().resolve()
    return Path(platformdirs.user_cache_dir("flash-tui", appauthor=False)).resolve() / "envs"


def runtime_paths() -> tuple[str, ...]:
    """Where this install's runtime and its dependencies live (what each `.pth` points at)."""
    paths = [str(Path(runtime.__file__).resolve().parent)]
    for kind in ("purelib", "platlib"):
        path = str(Path(sysconfig.get_paths()[kind]).resolve())
        if path not in paths:
            paths.append(path)
    return tuple(paths)


def _ready(path: Path) -> bool:
    return (path / MARKER).is_file() and (path / "bin" / "python").exists()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _site_packages(env: Path) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return env / "lib" / f"python{version}" / "site-packages"


class EnvCache:
    """Environments by contents key under `root`, built with the uv binary `uv`."""

    def __init__(
        self,
        root: Path,
        *,
        uv: str | None = None,
        environ: Mapping[str, str] | None = None,
        timeout: float = 1800.0,
    ) -> None:
        self.root = Path(root)
        self._uv = uv
        self._environ = dict(os.environ if environ is None else environ)
        self.timeout = timeout
        self.runtime_paths = runtime_paths()

    def key(self, contents: EnvContents) -> str:
        """The key `contents` are cached under."""
        return contents.key(self.runtime_paths)

    def interpreter(self, contents: EnvContents) -> str:
        """The interpreter the environment of `contents` has (or will have once built)."""
        return str(Environment(self.key(contents), self.root / self.key(contents), False).python)

    def find(self, contents: EnvContents) -> Environment | None:
        """The ready environment of `contents`, if the cache has it (no I/O beyond a stat)."""
        key = self.key(contents)
        path = self.root / key
        return Environment(key, path, built=False) if _ready(path) else None

    def ensure(
        self, contents: EnvContents, on_line: Callable[[str], None] | None = None
    ) -> Environment:
        """The environment of `contents`, built now when the cache lacks it (`EnvError`)."""
        found = self.find(contents)
        if found is not None:
            return found
        key = self.key(contents)
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root / f"{key}.lock"):
            found = self.find(contents)
            if found is not None:  # built by whoever held the lock before us
                return found
            # Left by a build that died: nobody else builds this key while we hold the lock.
            for stale in self.root.glob(f".staging-{key}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            staging = self.root / f".staging-{key}-{uuid.uuid4().hex[:8]}"
            try:
                self._build(staging, contents, key, on_line)
                final = self.root / key
                if final.exists():  # not ready (no marker): nothing trusts it
                    shutil.rmtree(final)
                os.rename(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return Environment(key, self.root / key, built=True)

    def mark_used(self, env: Environment) -> None:
        """Record that a deploy uses `env` now (what `prune --older-than` goes by)."""
        with contextlib.suppress(OSError):
            (env.path / _USED).touch()

    def environments(self) -> list[CachedEnv]:
        """The ready environments of the cache, most recently used first (sizes summed)."""
        found: list[CachedEnv] = []
        if not self.root.is_dir():
            return found
        for path in self.root.iterdir():
            if path.name.startswith(".") or not _ready(path):
                continue
            try:
                marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                marker = {}
            built = float(marker.get("built_at") or (path / MARKER).stat().st_mtime)
            try:
                used = (path / _USED).stat().st_mtime
            except OSError:
                used = built
            found.append(
                CachedEnv(
                    key=path.name,
                    path=path,
                    requirements=tuple(str(r) for r in marker.get("requirements") or ()),
                    torch=bool(marker.get("torch")),
                    size_bytes=_tree_size(path),
                    built_at=built,
                    last_used=used,
                )
            )
        return sorted(found, key=lambda e: e.last_used, reverse=True)

    def remove(self, key: str) -> None:
        """Delete the environment `key`, under its lock (a deploy building it waits): moved
        aside first, so nothing ever finds half of it."""
        path = self.root / key
        if not _ready(path):
            return
        with _locked(self.root / f"{key}.lock"):
            aside = self.root / f".removing-{key}-{uuid.uuid4().hex[:8]}"
            os.rename(path, aside)
            shutil.rmtree(aside, ignore_errors=True)

    def _uv_binary(self) -> str:
        if self._uv is not None:
            return self._uv
        try:
            import uv

            return uv.find_uv_bin()
        except (ImportError, FileNotFoundError) as exc:
            raise EnvError(f"uv is not installed here ({exc}): pip install uv") from exc

    def _build(
        self,
        staging: Path,
        contents: EnvContents,
        key: str,
        on_line: Callable[[str], None] | None,
    ) -> None:
        started = time.monotonic()
        uv = self._uv_binary()
        self._run(
            [uv, "venv", "--relocatable", "--quiet", "--python", contents.python, str(staging)],
            "creating the environment",
            on_line,
        )
        requirements = staging / _REQUIREMENTS
        requirements.write_text("\n".join(contents.requirements) + "\n", encoding="utf-8")
        index = uv_index_args(pip_settings(self._environ))
        self._run(
            # Compiled once here: workers never write bytecode (not into a shared environment,
            # nor, sandboxed, anywhere but their own directory), so each start reads it.
            [
                uv,
                "pip",
                "install",
                "--compile-bytecode",
                "--python",
                str(staging / "bin" / "python"),
            ]
            + index
            + ["-r", str(requirements)],
            "installing " + ", ".join(contents.requirements),
            on_line,
        )
        self._link_runtime(staging)
        marker = {
            "key": key,
            "requirements": list(contents.requirements),
            "python": contents.python,
            "torch": contents.torch,
            "runtime": list(self.runtime_paths),
            "built_at": time.time(),
            "build_seconds": round(time.monotonic() - started, 2),
        }
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")

    def _link_runtime(self, env: Path) -> None:
        """Our runtime first on the environment's path, our site-packages after its own."""
        holder = env / _RUNTIME_DIR
        holder.mkdir()
        (holder / "runtime").symlink_to(self.runtime_paths[0], target_is_directory=True)
        # sys.prefix, not this path: the directory is renamed after this is written.
        lines = [
            f"import os, sys; sys.path.insert(0, os.path.join(sys.prefix, {_RUNTIME_DIR!r}))",
            *(f"import site; site.addsitedir({p!r})" for p in self.runtime_paths[1:]),
        ]
        site_packages = _site_packages(env)
        (site_packages / _PTH).write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _run(self, cmd: list[str], what: str, on_line: Callable[[str], None] | None) -> None:
        """Run one uv command, its output line by line to `on_line`; `EnvError` on failure."""
        env = {k: v for k, v in self._environ.items() if k != "VIRTUAL_ENV"}
        env["NO_COLOR"] = "1"
        tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                env=env,
            )
        except OSError as exc:
            raise EnvError(f"{what} failed: cannot run uv ({cmd[0]}): {exc}") from exc
        timer = threading.Timer(self.timeout, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = redact_urls(raw.rstrip())
                # uv's "Using Python ... environment at <staging dir>" says nothing useful.
                if line and not line.startswith("Using Python "):
                    tail.append(line)
                    if on_line is not None:
                        on_line(line)
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0:
            said = "\n".join(tail) or f"uv exited with code {code}"
            if code < 0:
                said += f"\n(stopped after {self.timeout:g}s)"
            raise EnvError(redact_urls(f"{what} failed:\n{said}"))
