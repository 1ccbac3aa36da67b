"""Find the secrets a test session created (local cloud tokens, endpoint keys) where they must
not be: any file the suite wrote, any captured output.

A flash-tui home keeps its secrets in three places by design: the token file, the SQLite
database's `endpoint_keys` table and each app's `registry/endpoints.json` (handed to workers).
Those are the only places a secret may appear; every other file under the scanned roots, every other
table of the database and every captured output is searched. `tests/conftest.py` wires this
into the session: homes are recorded as tests run, and the session fails at the end on a hit.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Leak", "SecretScan", "find_homes", "home_secrets", "redact"]

_MIN_SECRET_LEN = 16  # generated secrets are 43 characters; shorter strings are not ours
_MAX_FILE_BYTES = 64 * 1024 * 1024
_SKIP_DIRS = frozenset({".git", ".venv", "__pycache__", ".ruff_cache", ".pytest_cache"})


def redact(secret: str) -> str:
    """A secret shown safely in a failure message."""
    return f"{secret[:4]}…({len(secret)} chars)"


def _cloud_dir(home: Path) -> Path:
    return home / "localcloud"


def _allowed_files(home: Path) -> set[Path]:
    """The files of `home` that hold secrets by design (the database is searched table by
    table instead, see `_db_text`)."""
    cloud = _cloud_dir(home)
    allowed = {cloud / "token", cloud / "cloud.db", cloud / "cloud.db-wal", cloud / "cloud.db-shm"}
    allowed.update((home / "apps").glob("*/registry/endpoints.json"))
    return {p.resolve() for p in allowed}


def home_secrets(home: Path) -> set[str]:
    """Every token and endpoint key stored in `home` now."""
    found: set[str] = set()
    try:
        token = (_cloud_dir(home) / "token").read_text(encoding="utf-8").strip()
        if token:
            found.add(token)
    except OSError:
        pass
    db = _cloud_dir(home) / "cloud.db"
    if db.exists():
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as conn:
                found.update(str(row[0]) for row in conn.execute("SELECT key FROM endpoint_keys"))
        except sqlite3.Error:
            pass  # a database mid-migration or locked: the next look finds them
    for table in (home / "apps").glob("*/registry/endpoints.json"):
        try:
            data = json.loads(table.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for entry in (data.get("endpoints") or {}).values():
            if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                found.add(entry["key"])
    return {s for s in found if len(s) >= _MIN_SECRET_LEN}


def find_homes(root: Path) -> set[Path]:
    """The flash-tui homes under `root` (directories with a local cloud token)."""
    homes = set()
    for token in root.rglob("localcloud/token"):
        homes.add(token.parent.parent.resolve())
    return homes


def _db_text(db: Path) -> str:
    """Every row of every table but `endpoint_keys`, as text."""
    parts: list[str] = []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as conn:
            tables = [
                row[0]
                for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            for table in tables:
                if table == "endpoint_keys":
                    continue
                for row in conn.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - names from sqlite
                    parts.append(repr(row))
    except sqlite3.Error as exc:
        parts.append(f"<unreadable: {exc}>")
    return "\n".join(parts)


@dataclass(frozen=True)
class Leak:
    """One secret found where it must not be."""

    where: str
    secret: str

    def __str__(self) -> str:
        return f"{self.where}: {redact(self.secret)}"


class SecretScan:
    """Secrets and homes collected during a session, and the search for them."""

    def __init__(self) -> None:
        self.homes: set[Path] = set()
        self.secrets: set[str] = set()
        self.outputs: list[tuple[str, str]] = []  # (where, text) of captured output
        self._seen_outputs: set[tuple[str, str]] = set()

    def add_home(self, home: Path) -> None:
        """Remember `home` and collect the secrets it holds now."""
        home = home.resolve()
        self.homes.add(home)
        self.secrets |= home_secrets(home)

    def refresh(self) -> None:
        """Collect again from every known home (keys are deleted on undeploy)."""
        for home in list(self.homes):
            self.secrets |= home_secrets(home)

    def add_output(self, where: str, text: str) -> None:
        """Remember captured output (stdout, stderr, logs, failure text) to search at the end."""
        # A later phase's report repeats the earlier phases' sections.
        if text and (where, text) not in self._seen_outputs:
            self._seen_outputs.add((where, text))
            self.outputs.append((where, text))

    def search(self, roots: Iterable[tuple[Path, float | None]]) -> list[Leak]:
        """Leaks in files under each `(root, since)` (modified at or after `since` when that is
        not None), in the databases of known homes and in captured outputs."""
        self.refresh()
        if not self.secrets:
            return []
        # One substring search per secret: over the hundreds of MB of files several times
        # faster than one regular expression of them all.
        secrets = sorted(self.secrets)
        encoded = [(secret, secret.encode()) for secret in secrets]
        allowed: set[Path] = set()
        for home in self.homes:
            allowed |= _allowed_files(home)
        leaks: list[Leak] = []
        seen: set[Path] = set()
        for root, since in roots:
            for path in _files(root):
                resolved = path.resolve()
                if resolved in seen or resolved in allowed:
                    continue
                seen.add(resolved)
                try:
                    stat = path.stat()
                    if since is not None and stat.st_mtime < since:
                        continue
                    if stat.st_size > _MAX_FILE_BYTES:
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                leaks.extend(Leak(str(path), secret) for secret, raw in encoded if raw in data)
        for home in sorted(self.homes):
            db = _cloud_dir(home) / "cloud.db"
            if db.exists():
                text = _db_text(db)
                where = f"{db} (a table other than endpoint_keys)"
                leaks.extend(Leak(where, secret) for secret in secrets if secret in text)
        for where, text in self.outputs:
            leaks.extend(Leak(where, secret) for secret in secrets if secret in text)
        return leaks


def _files(root: Path) -> Iterable[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                yield path
