"""The local cloud's SQLite store: apps, endpoints, keys, builds, manifests and an event log.

One database file in the flash-tui home, WAL mode (readers never block the writer, and a
SIGKILL mid-transaction rolls back cleanly on next open), `busy_timeout` so two processes that
touch it at once wait instead of failing. The schema lives here and only here; it evolves by
numbered migrations tracked in `PRAGMA user_version`.

Texts that come from user programs (`last_error`, event messages and data) are bounded when
stored: a 30 MB log line must not become a 30 MB status answer. The head and the tail are kept
(the tail usually says what went wrong) around a "… N bytes cut …" marker.

A record never claims a running worker that is gone: reads check each recorded pid (with its
start time, against pid reuse) and report `unhealthy` until the supervisor handles the exit.

Endpoint keys are in their own table and only `endpoint_key()` reads them, so no listing can
leak a key by accident. Every state change of an endpoint is written before the in-memory
supervisor acts on it ("nothing kept only in memory").
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from engine.localcloud import texts
from engine.localcloud.appkeys import rekey_legacy_apps

__all__ = [
    "ENDPOINT_COLUMNS",
    "MAX_TEXT_BYTES",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Store",
    "StoreError",
    "bound_text",
    "check_database",
]

# A few KB keep a whole traceback readable; more belongs in the log file.
MAX_TEXT_BYTES = 8 * 1024

Migration = str | Callable[[sqlite3.Connection], None]


def _add_column(conn: sqlite3.Connection, table: str, column: str, kind: str) -> None:
    """Add a column unless the table has it (a store rewound to an older version keeps it)."""
    if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _add_columns(conn: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    """`_add_column` for each name → kind of `columns`."""
    for column, kind in columns.items():
        _add_column(conn, table, column, kind)


def add_python_column(conn: sqlite3.Connection) -> None:
    """The interpreter of the endpoint's own environment (NULL: the service's own)."""
    _add_column(conn, "endpoints", "python", "TEXT")


# Each entry migrates from version i to i+1: SQL, or a function run in the same transaction.
# Never edit a released entry: append a new one.
MIGRATIONS: tuple[Migration, ...] = (
    """
    CREATE TABLE apps (
        name         TEXT PRIMARY KEY,
        project_path TEXT,
        created_at   REAL NOT NULL,
        updated_at   REAL NOT NULL
    );
    CREATE TABLE builds (
        app        TEXT NOT NULL,
        build_id   TEXT NOT NULL,
        source     TEXT,
        path       TEXT NOT NULL,
        manifest   TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (app, build_id)
    );
    CREATE TABLE endpoints (
        app              TEXT NOT NULL,
        name             TEXT NOT NULL,
        resource_type    TEXT NOT NULL,
        is_load_balanced INTEGER NOT NULL DEFAULT 0,
        config           TEXT NOT NULL DEFAULT '{}',
        config_hash      TEXT,
        code_hash        TEXT,
        build_id         TEXT,
        build_path       TEXT,
        status           TEXT NOT NULL,
        url              TEXT,
        port             INTEGER,
        pid              INTEGER,
        pid_started      REAL,
        restarts         INTEGER NOT NULL DEFAULT 0,
        crash_times      TEXT NOT NULL DEFAULT '[]',
        last_error       TEXT,
        created_at       REAL NOT NULL,
        updated_at       REAL NOT NULL,
        started_at       REAL,
        PRIMARY KEY (app, name)
    );
    CREATE TABLE endpoint_keys (
        app  TEXT NOT NULL,
        name TEXT NOT NULL,
        key  TEXT NOT NULL,
        PRIMARY KEY (app, name)
    );
    CREATE TABLE manifests (
        app         TEXT NOT NULL,
        environment TEXT NOT NULL,
        manifest    TEXT NOT NULL,
        updated_at  REAL NOT NULL,
        PRIMARY KEY (app, environment)
    );
    CREATE TABLE events (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        at       REAL NOT NULL,
        app      TEXT,
        endpoint TEXT,
        kind     TEXT NOT NULL,
        message  TEXT NOT NULL DEFAULT '',
        data     TEXT
    );
    CREATE INDEX events_app ON events (app, id);
    """,
    # apps keyed by folder name are re-keyed by their project where that is known for sure
    rekey_legacy_apps,
    add_python_column,
    # the mothership: who provisioned an endpoint, for which environment
    lambda conn: _add_columns(
        conn,
        "endpoints",
        {"role": "TEXT NOT NULL DEFAULT 'endpoint'", "mothership": "TEXT", "environment": "TEXT"},
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

ENDPOINT_COLUMNS: tuple[str, ...] = (
    "app",
    "name",
    "resource_type",
    "is_load_balanced",
    "config",
    "config_hash",
    "code_hash",
    "build_id",
    "build_path",
    "status",
    "url",
    "port",
    "pid",
    "pid_started",
    "restarts",
    "crash_times",
    "last_error",
    "created_at",
    "updated_at",
    "started_at",
    "python",
    "role",
    "mothership",
    "environment",
)
_JSON_COLUMNS = {"config", "crash_times"}
_TEXT_COLUMNS = {"last_error"}
# Statuses that claim a live worker process.
_LIVE_STATUSES = frozenset({"healthy", "deploying"})


def bound_text(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """`text` cut to about `limit` UTF-8 bytes (head and tail kept; see `texts`)."""
    return texts.bound_text(text, limit)


def _bound_data(value: Any, limit: int) -> Any:
    """Every string inside a JSON-like value bounded, and a list of lines bounded as a whole."""
    if isinstance(value, str):
        return bound_text(value, limit)
    if isinstance(value, dict):
        return {k: _bound_data(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_bound_data(v, limit) for v in value]
        # Keep the last items (the end of a log tail) within the budget.
        kept: list[Any] = []
        budget = limit
        for item in reversed(items):
            size = len(json.dumps(item))
            if kept and size > budget:
                break
            kept.append(item)
            budget -= size
        return list(reversed(kept))
    return value


def _pid_running(pid: Any, started: Any) -> bool:
    """Whether `pid` is a live process that started at `started` (not a reused pid)."""
    if not pid or started is None:
        return False
    try:
        process = psutil.Process(int(pid))
        return (
            abs(process.create_time() - float(started)) < 0.05
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


class StoreError(Exception):
    """The database cannot be used (not SQLite, unreadable); the message names the file."""


def _describe_error(path: Path, exc: sqlite3.Error) -> str:
    if type(exc) is sqlite3.DatabaseError or "not a database" in str(exc):
        return f"cloud.db at {path} is not a SQLite database: {exc}"
    return f"cloud.db at {path} cannot be opened: {exc}"


def check_database(path: Path) -> None:
    """Raise `StoreError` when `path` exists and is not a usable SQLite database.

    Read-only: a damaged file is left exactly as it is, for the user to inspect or restore.
    """
    if not Path(path).exists():
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(_describe_error(Path(path), exc)) from None


def split_statements(script: str) -> Iterator[str]:
    """The SQL statements of `script`, one at a time.

    A ";" only ends a statement when SQLite agrees the text so far is complete, so semicolons
    inside string literals, comments and trigger bodies (BEGIN ... END) don't split it.
    """
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):  # an empty statement (";") needs no running
                yield pending.strip()
            pending = ""
    # Left over: a trailing comment (harmless to run) or an unfinished statement, which is
    # run too so that SQLite reports the syntax error instead of it being dropped silently.
    rest = pending.removesuffix(";").strip()
    if rest:
        yield rest


def _endpoint_row(row: sqlite3.Row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in row.keys():
        value = row[name]
        if name in _JSON_COLUMNS:
            value = json.loads(value) if value else ({} if name == "config" else [])
        elif name == "is_load_balanced":
            value = bool(value)
        out[name] = value
    # The supervisor notices a dead worker within moments; until it has, the record must not
    # claim a live one.
    if out.get("status") in _LIVE_STATUSES and out.get("pid"):
        if not _pid_running(out.get("pid"), out.get("pid_started")):
            out["status"] = "unhealthy"
    return out


class Store:
    """Thread-safe access to the database (one connection, serialised by a lock).

    The service runs its handlers on one event loop, so a single connection is enough; the
    lock covers the few calls made from helper threads.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # Checked before opening read-write, so a damaged file is never written to.
        check_database(self.path)
        existed = self.path.exists()
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False
        )
        if not existed:
            os.chmod(self.path, 0o600)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        # WAL side files inherit the umask; keep them private like the database.
        for suffix in ("-wal", "-shm"):
            side = Path(str(self.path) + suffix)
            if side.exists():
                os.chmod(side, 0o600)

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locked) transaction; commits on success, rolls back on error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params))

    def _migrate(self) -> None:
        # All pending migrations and their version bumps run in one transaction: a crash or a
        # failing statement leaves the database at its old version, untouched. (executescript
        # would commit first, so each statement is executed on its own instead.)
        latest = len(MIGRATIONS)
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > latest:
                raise RuntimeError(
                    f"{self.path} has schema version {version}, newer than this flash-tui "
                    f"({latest}); upgrade flash-tui or use another FLASH_TUI_HOME"
                )
            for index in range(version, latest):
                migration = MIGRATIONS[index]
                if callable(migration):
                    migration(conn)
                else:
                    for statement in split_statements(migration):
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {index + 1}")

    @property
    def schema_version(self) -> int:
        """The database's current schema version."""
        return int(self._query("PRAGMA user_version")[0][0])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    # -- apps -----------------------------------------------------------------------------

    def upsert_app(self, name: str, project_path: str | None) -> None:
        """Create the app or refresh its project path."""
        now = time.time()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO apps (name, project_path, created_at, updated_at) VALUES (?,?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET project_path = COALESCE(excluded.project_path,"
                " apps.project_path), updated_at = excluded.updated_at",
                (name, project_path, now, now),
            )

    def list_apps(self) -> list[dict[str, Any]]:
        """Every app with its endpoint count."""
        rows = self._query(
            "SELECT a.name, a.project_path, a.created_at, a.updated_at,"
            " (SELECT COUNT(*) FROM endpoints e WHERE e.app = a.name) AS endpoints"
            " FROM apps a ORDER BY a.name"
        )
        return [dict(r) for r in rows]

    # -- builds ---------------------------------------------------------------------------

    def record_build(
        self, app: str, build_id: str, source: str | None, path: str, manifest: Any
    ) -> None:
        """Remember an immutable build copy (idempotent)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO builds (app, build_id, source, path, manifest, created_at)"
                " VALUES (?,?,?,?,?,?)",
                (app, build_id, source, path, json.dumps(manifest), time.time()),
            )

    def list_builds(self, app: str) -> list[dict[str, Any]]:
        """Builds of an app, newest first (without their manifests)."""
        rows = self._query(
            "SELECT app, build_id, source, path, created_at FROM builds WHERE app = ?"
            " ORDER BY created_at DESC",
            (app,),
        )
        return [dict(r) for r in rows]

    def delete_build(self, app: str, build_id: str) -> None:
        """Forget a build copy."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM builds WHERE app = ? AND build_id = ?", (app, build_id))

    # -- endpoints ------------------------------------------------------------------------

    def get_endpoint(self, app: str, name: str) -> dict[str, Any] | None:
        """One endpoint record (never with its key), or None."""
        rows = self._query("SELECT * FROM endpoints WHERE app = ? AND name = ?", (app, name))
        return _endpoint_row(rows[0]) if rows else None

    def list_endpoints(self, app: str | None = None) -> list[dict[str, Any]]:
        """Endpoint records (never with keys), of one app or all, ordered by app and name."""
        if app is None:
            rows = self._query("SELECT * FROM endpoints ORDER BY app, name")
        else:
            rows = self._query("SELECT * FROM endpoints WHERE app = ? ORDER BY name", (app,))
        return [_endpoint_row(r) for r in rows]

    def upsert_endpoint(self, app: str, name: str, **fields: Any) -> dict[str, Any]:
        """Insert or update an endpoint's columns; returns the stored record."""
        unknown = set(fields) - set(ENDPOINT_COLUMNS)
        if unknown:
            raise KeyError(f"unknown endpoint column(s): {', '.join(sorted(unknown))}")
        now = time.time()
        values = {
            k: json.dumps(v) if k in _JSON_COLUMNS else (int(v) if isinstance(v, bool) else v)
            for k, v in fields.items()
        }
        for column in _TEXT_COLUMNS & set(values):
            if isinstance(values[column], str):
                values[column] = bound_text(values[column])
        values["updated_at"] = now
        with self.transaction() as conn:
            exists = conn.execute(
                "SELECT 1 FROM endpoints WHERE app = ? AND name = ?", (app, name)
            ).fetchone()
            if exists:
                assignments = ", ".join(f"{k} = ?" for k in values)
                conn.execute(
                    f"UPDATE endpoints SET {assignments} WHERE app = ? AND name = ?",
                    (*values.values(), app, name),
                )
            else:
                values.setdefault("status", "deploying")
                values.setdefault("resource_type", "")
                values["created_at"] = now
                columns = ["app", "name", *values]
                conn.execute(
                    f"INSERT INTO endpoints ({', '.join(columns)})"
                    f" VALUES ({', '.join('?' for _ in columns)})",
                    (app, name, *values.values()),
                )
        record = self.get_endpoint(app, name)
        assert record is not None
        return record

    def delete_endpoint(self, app: str, name: str) -> None:
        """Remove an endpoint and its key."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM endpoints WHERE app = ? AND name = ?", (app, name))
            conn.execute("DELETE FROM endpoint_keys WHERE app = ? AND name = ?", (app, name))

    def endpoint_key(self, app: str, name: str) -> str | None:
        """The endpoint's API key; the only reader of the keys table."""
        rows = self._query("SELECT key FROM endpoint_keys WHERE app = ? AND name = ?", (app, name))
        return str(rows[0][0]) if rows else None

    def set_endpoint_key(self, app: str, name: str, key: str) -> None:
        """Store (or replace) an endpoint's API key."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO endpoint_keys (app, name, key) VALUES (?,?,?)"
                " ON CONFLICT(app, name) DO UPDATE SET key = excluded.key",
                (app, name, key),
            )

    def app_keys(self, app: str) -> dict[str, str]:
        """Every key of an app's endpoints (for the workers' endpoint table only)."""
        rows = self._query("SELECT name, key FROM endpoint_keys WHERE app = ?", (app,))
        return {str(r[0]): str(r[1]) for r in rows}

    # -- manifests (state manager) --------------------------------------------------------

    def get_manifest(self, app: str, environment: str) -> dict[str, Any] | None:
        """The persisted manifest of an app's environment, or None."""
        rows = self._query(
            "SELECT manifest FROM manifests WHERE app = ? AND environment = ?", (app, environment)
        )
        return json.loads(rows[0][0]) if rows else None

    def environments(self, app: str) -> list[str]:
        """Environments of `app` that have a persisted manifest."""
        rows = self._query(
            "SELECT environment FROM manifests WHERE app = ? ORDER BY environment", (app,)
        )
        return [str(r[0]) for r in rows]

    def app_environments(self, app: str) -> list[dict[str, str | None]]:
        """Every environment of `app` (a persisted manifest or an endpoint recorded in it), by
        name, each with `mothership`: the mothership endpoint deployed to it, or None."""
        # `app_environments.environment_app`: environments under `{app}.{env}`, direct's `app`.
        own = "environment > '' AND (app=? OR app=?||'.'||environment AND environment!='local')"
        query = f"SELECT environment FROM manifests WHERE {own}"
        names = {str(r[0]) for r in self._query(query, (app, app))}
        motherships: dict[str, str] = {}
        query = f"SELECT name, role, environment FROM endpoints WHERE {own} ORDER BY name"
        for name, role, environment in self._query(query, (app, app)):
            names.add(str(environment))
            if role == "mothership":
                motherships.setdefault(str(environment), str(name))
        return [{"name": n, "mothership": motherships.get(n)} for n in sorted(names)]

    def put_manifest(self, app: str, environment: str, manifest: dict[str, Any]) -> None:
        """Replace the persisted manifest."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO manifests (app, environment, manifest, updated_at) VALUES (?,?,?,?)"
                " ON CONFLICT(app, environment) DO UPDATE SET manifest = excluded.manifest,"
                " updated_at = excluded.updated_at",
                (app, environment, json.dumps(manifest), time.time()),
            )

    def patch_manifest_resource(
        self, app: str, environment: str, name: str, data: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Shallow-merge `data` into `resources[name]` (None removes it), atomically.

        Read-modify-write inside one immediate transaction, so concurrent patches of
        different resources never lose each other's changes.
        """
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT manifest FROM manifests WHERE app = ? AND environment = ?",
                (app, environment),
            ).fetchone()
            manifest = json.loads(row[0]) if row else {"resources": {}}
            resources = manifest.setdefault("resources", {})
            if data is None:
                resources.pop(name, None)
            else:
                entry = dict(resources.get(name) or {})
                entry.update(data)
                resources[name] = entry
            conn.execute(
                "INSERT INTO manifests (app, environment, manifest, updated_at) VALUES (?,?,?,?)"
                " ON CONFLICT(app, environment) DO UPDATE SET manifest = excluded.manifest,"
                " updated_at = excluded.updated_at",
                (app, environment, json.dumps(manifest), time.time()),
            )
        return manifest

    # -- events ---------------------------------------------------------------------------

    def add_event(
        self,
        kind: str,
        message: str = "",
        *,
        app: str | None = None,
        endpoint: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> int:
        """Append to the event log (message and data bounded); returns the event id."""
        message = bound_text(message, MAX_TEXT_BYTES // 4)
        payload = json.dumps(_bound_data(data, MAX_TEXT_BYTES)) if data else None
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO events (at, app, endpoint, kind, message, data) VALUES (?,?,?,?,?,?)",
                (time.time(), app, endpoint, kind, message, payload),
            )
            return int(cursor.lastrowid or 0)

    def events(
        self, app: str | None = None, since_id: int = 0, limit: int = 500
    ) -> list[dict[str, Any]]:
        """Events after `since_id`, oldest first."""
        if app is None:
            rows = self._query(
                "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (since_id, limit)
            )
        else:
            rows = self._query(
                "SELECT * FROM events WHERE app = ? AND id > ? ORDER BY id LIMIT ?",
                (app, since_id, limit),
            )
        out = []
        for r in rows:
            item = dict(r)
            item["data"] = json.loads(item["data"]) if item["data"] else None
            out.append(item)
        return out
