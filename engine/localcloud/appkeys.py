"""Store migration: apps keyed by folder name become apps keyed by their project.

Older versions keyed an app by its project's folder name, so two projects with the same
folder name shared one app. Now the key is `engine.identity.app_slug(canonical path)`. An old
app is re-keyed only when the store proves which single project it came from:

- `apps.project_path` (recorded at each deploy; the last deployer's path), and
- for every endpoint, the project of the build it runs (`builds.source` is the deployed
  archive, `<project>/.flash/archive.tar.gz`),

all name the same path, whose folder name gives the old key. Then every row of the app is
re-keyed (apps, endpoints, keys, builds, manifests, events) and its directory
(`<home>/apps/<old>`: build copies, logs, endpoint table) is renamed; workers still running
from the old directory are then replaced by the supervisor's recovery (same key, same port
when free). Otherwise (no recorded path, endpoints from several projects, a build no longer
known) the app keeps its old key: no project computes that key any more, so none can see,
update or delete its endpoints by accident; they keep running, `cloud status` lists the app,
and an `app_kept` event says why.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from engine.identity import app_slug, legacy_app_name

__all__ = ["rekey_legacy_apps"]

_FLASH_DIR = ".flash"  # engine.build.FLASH_DIR; not imported: the service stays light


@dataclass(frozen=True)
class _Move:
    old: str
    new: str
    old_dir: Path | None
    new_dir: Path | None


def _project_of_archive(source: str | None) -> str | None:
    if not source:
        return None
    archive = Path(source)
    return str(archive.parent.parent) if archive.parent.name == _FLASH_DIR else None


def _project_of(conn: sqlite3.Connection, app: str, recorded: str | None) -> tuple[str | None, str]:
    """The one project `app` provably came from, or None and why not."""
    paths = {recorded} if recorded else set()
    endpoints = conn.execute(
        "SELECT e.name, e.build_id, b.source FROM endpoints e LEFT JOIN builds b"
        " ON b.app = e.app AND b.build_id = e.build_id WHERE e.app = ?",
        (app,),
    ).fetchall()
    for name, build_id, source in endpoints:
        project = _project_of_archive(source)
        if project is None:
            return None, f"the project of endpoint {name!r} (build {str(build_id)[:12]}) is unknown"
        paths.add(project)
    if not paths:
        return None, "no project path was recorded"
    if len(paths) > 1:
        return None, "its endpoints come from several projects: " + ", ".join(sorted(paths))
    path = paths.pop()
    if legacy_app_name(path) != app:
        return None, f"its recorded project {path} does not have this name"
    return path, ""


def _app_dir(conn: sqlite3.Connection, app: str) -> tuple[Path | None, str]:
    """The app's directory, from the build copies it records (None if it records none)."""
    rows = conn.execute(
        "SELECT build_path FROM endpoints WHERE app = ? AND build_path IS NOT NULL"
        " UNION SELECT path FROM builds WHERE app = ?",
        (app, app),
    ).fetchall()
    dirs = {Path(row[0]).parent.parent for row in rows}  # <home>/apps/<app>/builds/<id>
    if len(dirs) > 1 or any(d.name != app for d in dirs):
        return None, "its build copies are not all under one directory named after it"
    return (dirs.pop() if dirs else None), ""


def _rewrite(path: str | None, move: _Move) -> str | None:
    if path is None or move.old_dir is None or move.new_dir is None:
        return path
    prefix = str(move.old_dir) + os.sep
    return str(move.new_dir) + os.sep + path[len(prefix) :] if path.startswith(prefix) else path


def _rekey_rows(conn: sqlite3.Connection, move: _Move) -> None:
    old, new = move.old, move.new
    conn.execute("UPDATE apps SET name = ? WHERE name = ?", (new, old))
    for table in ("endpoint_keys", "manifests", "events"):
        conn.execute(f"UPDATE {table} SET app = ? WHERE app = ?", (new, old))
    # Rows that also hold a path under the app's folder: (table, its key column, path column).
    for table, key, column in (("endpoints", "name", "build_path"), ("builds", "build_id", "path")):
        rows = conn.execute(f"SELECT {key}, {column} FROM {table} WHERE app = ?", (old,))
        for row_key, path in rows.fetchall():
            conn.execute(
                f"UPDATE {table} SET app = ?, {column} = ? WHERE app = ? AND {key} = ?",
                (new, _rewrite(path, move), old, row_key),
            )


def _event(conn: sqlite3.Connection, app: str, kind: str, message: str) -> None:
    conn.execute(
        "INSERT INTO events (at, app, endpoint, kind, message, data) VALUES (?,?,?,?,?,NULL)",
        (time.time(), app, None, kind, message),
    )


def _plan(conn: sqlite3.Connection) -> list[_Move]:
    """The apps that can be re-keyed for sure; an `app_kept` event for each that cannot."""
    recorded = dict(conn.execute("SELECT name, project_path FROM apps").fetchall())
    names = set(recorded) | {r[0] for r in conn.execute("SELECT DISTINCT app FROM endpoints")}
    moves: list[_Move] = []
    for old in sorted(names):
        path, why = _project_of(conn, old, recorded.get(old))
        old_dir, why_dir = _app_dir(conn, old) if path else (None, "")
        new = app_slug(path) if path else ""
        if path and new in names:
            why = f"the key {new} is taken"
        why = why or why_dir
        if why:
            _event(conn, old, "app_kept", f"app {old} keeps its old key: {why}")
            continue
        new_dir = old_dir.with_name(new) if old_dir is not None else None
        moves.append(_Move(old, new, old_dir, new_dir))
    return moves


def rekey_legacy_apps(conn: sqlite3.Connection) -> None:
    """Re-key every old app whose project is known for sure (in the caller's transaction).

    Directories are renamed last; if anything fails they are renamed back before the error
    propagates, so the rolled-back database and the disk agree.
    """
    moves = _plan(conn)
    renamed: list[_Move] = []
    try:
        for move in moves:
            _rekey_rows(conn, move)
            _event(conn, move.new, "app_rekeyed", f"app {move.old} is now {move.new}")
        for move in moves:
            if move.old_dir is None or move.new_dir is None:
                continue
            # An interrupted earlier run may have renamed the directory already.
            if move.old_dir.is_dir() and not move.new_dir.exists():
                move.old_dir.rename(move.new_dir)
                renamed.append(move)
    except BaseException:
        for move in reversed(renamed):
            assert move.old_dir is not None and move.new_dir is not None
            move.new_dir.rename(move.old_dir)
        raise
