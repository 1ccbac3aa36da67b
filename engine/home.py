"""The flash-tui home: where the local cloud keeps its state, database, logs and deployments.

`$FLASH_TUI_HOME` when set, otherwise the platform's per-user data directory
(`platformdirs.user_data_dir("flash-tui")`, e.g. `~/.local/share/flash-tui` on Linux).

Everything in it is private to the user: directories are created 0700 and files written 0600,
because the home holds the local cloud's API token and every endpoint's key. Writes that other
processes may read concurrently (state file, token, endpoint tables) are atomic: written to a
temporary file in the same directory, fsynced, then renamed over the target, so a reader never
sees half a file and a SIGKILL mid-write leaves the old version intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import platformdirs

__all__ = [
    "HOME_ENV",
    "DIR_MODE",
    "FILE_MODE",
    "Home",
    "ensure_private_dir",
    "flash_home",
    "write_private",
]

HOME_ENV = "FLASH_TUI_HOME"
DIR_MODE = 0o700
FILE_MODE = 0o600


def flash_home() -> Path:
    """The home directory path ($FLASH_TUI_HOME or the platform default); not created."""
    raw = os.environ.get(HOME_ENV, "").strip()
    if raw:
        return Path(raw).expanduser().resolve()
    return Path(platformdirs.user_data_dir("flash-tui", appauthor=False)).resolve()


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) if needed and make sure it is 0700; returns it."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    # Create each missing level ourselves: mkdir(parents=True) gives parents the default mode.
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)
        os.chmod(directory, DIR_MODE)  # the mode given to mkdir is filtered by the umask
    if (path.stat().st_mode & 0o777) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def write_private(path: Path, data: str | bytes) -> None:
    """Atomically replace `path` with `data`, mode 0600 from the first byte on."""
    ensure_private_dir(path.parent)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600 already; chmod anyway in case of an odd platform.
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Home:
    """Paths inside one flash-tui home. Creating the object creates the home (0700)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = ensure_private_dir(Path(root) if root is not None else flash_home())

    @property
    def cloud_dir(self) -> Path:
        """The local cloud's own directory (state file, token, database, locks)."""
        return ensure_private_dir(self.root / "localcloud")

    @property
    def state_file(self) -> Path:
        """JSON written by the running service: pid, port, token path, started_at."""
        return self.cloud_dir / "state.json"

    @property
    def token_file(self) -> Path:
        """The service's API token (0600)."""
        return self.cloud_dir / "token"

    @property
    def db_path(self) -> Path:
        """The SQLite database of the local cloud."""
        return self.cloud_dir / "cloud.db"

    @property
    def start_lock(self) -> Path:
        """Lock file serialising "find or start the service" across processes."""
        return self.cloud_dir / "start.lock"

    @property
    def service_lock(self) -> Path:
        """Lock file the running service holds for its whole life (one service per home)."""
        return self.cloud_dir / "service.lock"

    @property
    def service_log(self) -> Path:
        """The service's own stdout/stderr."""
        return self.cloud_dir / "service.log"

    def app_dir(self, app: str) -> Path:
        """Per-app directory: builds, endpoint table, logs."""
        return ensure_private_dir(self.root / "apps" / app)

    def builds_dir(self, app: str) -> Path:
        """Immutable per-build copies that workers run from."""
        return ensure_private_dir(self.app_dir(app) / "builds")

    def logs_dir(self, app: str) -> Path:
        """Per-endpoint log files."""
        return ensure_private_dir(self.app_dir(app) / "logs")

    def endpoints_file(self, app: str) -> Path:
        """The service-registry JSON (URLs and keys of the app's endpoints) given to workers.

        Alone in its directory: a sandboxed worker may read that directory (the file is
        replaced by a rename, so a rule on the file itself would not follow it).
        """
        return self.app_dir(app) / "registry" / "endpoints.json"
