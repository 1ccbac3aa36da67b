"""The sandbox policy of a local cloud worker: which paths it may read and write.

The engine builds it (it knows the home's layout); the worker applies it with Landlock
(`runtime.sandbox`) before importing user code. A worker may read the Python installation and
its import path (and the endpoint's own environment, when it runs on one), the system's shared
files (`/usr`, `/lib*`, `/etc`, a few `/dev`, `/proc` and `/sys` entries), its app's
endpoint table and the bundled packages its build copy links to (`buildcopies`); it may write
its own build copy (pyc caches), its own state directory (job journal, private temporary
directory), `/tmp`, `/dev/shm` and `/dev/null`. Nothing else: not the rest of the home
(token, database, other apps' keys and builds), not the user's home directory. A path that
would contain the flash-tui home or the user's home is never granted (e.g. `/tmp` when the
home is under it): the worker's `TMPDIR` is its private directory either way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import runtime
from engine.home import Home
from engine.localcloud.buildcopies import shared_runtime
from runtime.sandbox import MODE_ENV, SandboxPolicy

__all__ = ["sandbox_enabled", "worker_policy", "worker_state_dir"]

_SYSTEM_READ = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/loadavg",
    "/proc/uptime",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
)
_SYSTEM_WRITE = ("/tmp", "/dev/shm", "/dev/null")


def sandbox_enabled(environ: Mapping[str, str]) -> bool:
    """False when `FLASH_SANDBOX=off` (workers then run unrestricted)."""
    return environ.get(MODE_ENV, "").strip().lower() not in ("off", "0", "false", "no")


def worker_state_dir(home: Home, app: str, name: str) -> Path:
    """The one directory of the home an endpoint's worker may write: journal, tmp (not created)."""
    return home.app_dir(app) / "workers" / name


def worker_policy(
    home: Home,
    app: str,
    name: str,
    build_path: Path,
    user_home: Path | None,
    interpreter: str | None = None,
) -> SandboxPolicy:
    """The paths the worker of `app`/`name` running from `build_path` (on the interpreter
    `interpreter`, default ours) may read and write."""
    protected = [home.root.resolve()]
    if user_home is not None:
        protected.append(user_home.resolve())
    python = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    python.append(str(Path(os.path.realpath(sys.executable)).parent))
    # An editable install finds `runtime` through a finder, not a sys.path entry.
    python.append(str(Path(runtime.__file__).resolve().parent))
    python.extend(entry for entry in sys.path if entry)
    if interpreter is not None and interpreter != sys.executable:
        # Its own environment (`<env>/bin/python`): packages, and our runtime's link in it.
        python.append(str(Path(interpreter).parent.parent))
    root = home.root.resolve()
    # The import path of the service could lead into the home (its working directory).
    python = [p for p in python if not Path(os.path.abspath(p)).resolve().is_relative_to(root)]
    read = [*python, *_SYSTEM_READ, str(home.endpoints_file(app).parent)]
    # The build's bundled packages, shared by the app's copies: read, never written.
    bundled = shared_runtime(build_path)
    if bundled is not None:
        read.append(str(bundled))
    state = worker_state_dir(home, app, name)
    write = [str(build_path), str(state), *_SYSTEM_WRITE]
    return SandboxPolicy(tuple(_granted(read, protected)), tuple(_granted(write, protected)))


def _granted(paths: Iterable[str], protected: list[Path]) -> list[str]:
    """`paths` made absolute and deduplicated, without one that holds a protected directory."""
    kept: list[str] = []
    for raw in paths:
        path = Path(os.path.abspath(raw))
        resolved = path.resolve()
        # A path holding the home (or the user's home) would open all of it.
        if any(resolved == p or resolved in p.parents for p in protected):
            continue
        text = str(path)
        if text not in kept:
            kept.append(text)
    return kept
