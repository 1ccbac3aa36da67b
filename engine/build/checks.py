"""The build's import check, incremental: only the handlers whose inputs changed are imported.

A handler that imported cleanly is recorded with what its import depended on: the content hash of
every file it loaded from the build dir or from our runtime package, and the interpreter; the
whole record also holds what may change any import (`PYTHONPATH`, the build's list of files: a
new module can shadow another or satisfy an `ImportError` fallback). The next build re-checks a
handler only when one of those changed; a failed check is never recorded, so it runs again. The
record lives next to the build dir, never inside it (it must not reach the archive).

`ImportChecker` runs the checks through one pre-imported check server per interpreter
(`engine.build.checkserver`), kept across builds by its owner (the engine of a dev session),
and falls back to a fresh interpreter per handler when a fork cannot stand in for one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from engine.build.checkserver import CheckServer, CheckServerError
from engine.build.model import MANIFEST_NAME
from engine.handlergen import HandlerCheck, check_handler_imports

__all__ = ["RECORD_NAME", "CheckRecord", "ImportChecker"]

RECORD_NAME = ".import-checks.json"
_FORMAT = 2


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:  # gone or unreadable: the recorded input changed
        return None


def _interpreter_id(python: str | None) -> str:
    # The path names the environment (environments are keyed by what they hold); its stat
    # catches an interpreter replaced in place.
    path = python or sys.executable
    try:
        info = os.stat(path)
    except OSError:
        return path
    return f"{path}:{info.st_size}:{info.st_mtime_ns}"


def _runtime_dir() -> Path:
    import runtime

    return Path(runtime.__file__).resolve().parent


class CheckRecord:
    """The recorded checks of one build dir (loaded from, and saved to, `path`)."""

    def __init__(self, path: Path, build_dir: Path, members: Iterable[str]) -> None:
        self.path = path
        self.build_dir = build_dir.resolve()
        self._members = set(members)
        self._runtime = _runtime_dir()
        # String prefixes: a check reports ~1000 loaded files, and Path arithmetic on each
        # cost ~60 ms of every build.
        self._build_prefix = str(self.build_dir) + os.sep
        self._runtime_prefix = str(self._runtime) + os.sep
        self._key = {
            "format": _FORMAT,
            "pythonpath": os.environ.get("PYTHONPATH", ""),
            "members": hashlib.sha256("\n".join(sorted(self._members)).encode()).hexdigest(),
        }
        self._handlers: dict[str, dict[str, Any]] = {}
        self._hashes: dict[str, str | None] = {}
        saved = self._load()
        if saved.get("key") == self._key and isinstance(saved.get("handlers"), dict):
            self._handlers = {
                name: entry
                for name, entry in saved["handlers"].items()
                if isinstance(entry, dict) and isinstance(entry.get("files"), dict)
            }

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):  # none yet, or damaged: check everything again
            return {}
        return data if isinstance(data, dict) else {}

    def _hash(self, key: str) -> str | None:
        if key not in self._hashes:
            self._hashes[key] = _sha256(self._resolve(key))
        return self._hashes[key]

    def _resolve(self, key: str) -> Path:
        # Build files are recorded relative to the build dir, runtime files as absolute paths.
        return Path(key) if os.path.isabs(key) else self.build_dir / key

    def _key_of(self, loaded: str) -> str | None:
        # `loaded` paths are absolute and normalised (the check resolves them).
        if loaded.startswith(self._build_prefix):
            return Path(loaded[len(self._build_prefix) :]).as_posix()
        if loaded.startswith(self._runtime_prefix):
            return loaded
        return None  # the interpreter's own library: covered by the interpreter's id

    def stale(self, handlers: Iterable[str], python: str) -> list[str]:
        """The handlers, in order, whose recorded inputs changed (or that have no record)."""
        return [h for h in handlers if not self._fresh(h, _interpreter_id(python))]

    def _fresh(self, handler: str, interpreter: str) -> bool:
        entry = self._handlers.get(handler)
        if not entry or entry.get("python") != interpreter:
            return False
        return all(self._hash(key) == digest for key, digest in entry["files"].items())

    def update(self, checks: Iterable[HandlerCheck], python: str) -> None:
        """Record the successful `checks` (on `python`); forget failed ones and those that left
        the build."""
        self._handlers = {h: e for h, e in self._handlers.items() if h in self._members}
        for check in checks:
            self._handlers.pop(check.handler, None)
            if not check.ok:
                continue
            files: dict[str, str] = {}
            manifest = self._hash(MANIFEST_NAME)  # the runtime reads it when a handler loads
            if manifest is not None:
                files[MANIFEST_NAME] = manifest
            for loaded in check.loaded:
                key = self._key_of(loaded)
                digest = None if key is None else self._hash(key)
                if key is not None and digest is not None:
                    files[key] = digest
            if check.handler in files:  # it reported what it loaded
                self._handlers[check.handler] = {"python": _interpreter_id(python), "files": files}

    def save(self) -> None:
        """Write the record atomically (a crash mid-write leaves the old one or none)."""
        data = {"key": self._key, "handlers": self._handlers}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, sort_keys=True, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)


class ImportChecker:
    """Import checks of builds, incremental, through check servers it keeps until `close()`."""

    def __init__(self, *, servers: bool = True) -> None:
        self._use_servers = servers
        self._servers: dict[str, CheckServer] = {}
        self._lock = threading.Lock()

    def check(
        self,
        build_dir: Path,
        handlers: list[str],
        *,
        members: Iterable[str],
        timeout: float,
        on_done: Callable[[HandlerCheck], None] | None = None,
        python: str | None = None,
    ) -> list[HandlerCheck]:
        """One result per handler, in order: imported now, or `reused` when nothing it
        depends on changed since it last imported cleanly on `python`."""
        python = python or sys.executable
        members = set(members)
        record = CheckRecord(build_dir.parent / RECORD_NAME, build_dir, members)
        stale = record.stale(handlers, python)
        results = {h: HandlerCheck(h, True, reused=True) for h in handlers if h not in stale}
        for result in results.values():
            if on_done is not None:
                on_done(result)
        ran = self._run(build_dir, stale, members, timeout, on_done, python)
        results.update((c.handler, c) for c in ran)
        record.update(ran, python)
        record.save()
        return [results[h] for h in handlers]

    def _run(
        self,
        build_dir: Path,
        handlers: list[str],
        members: set[str],
        timeout: float,
        on_done: Callable[[HandlerCheck], None] | None,
        python: str,
    ) -> list[HandlerCheck]:
        if not handlers:
            return []
        server = self._server(python)
        if server is not None:
            try:
                if not server.shadowed(members):
                    return server.check(build_dir, handlers, timeout=timeout, on_done=on_done)
            except CheckServerError:
                pass  # a fresh interpreter says what is wrong (or that all is well)
        return check_handler_imports(
            build_dir, handlers, timeout=timeout, on_done=on_done, python=python
        )

    def _server(self, python: str) -> CheckServer | None:
        if not self._use_servers:
            return None
        with self._lock:
            if python not in self._servers:
                self._servers[python] = CheckServer(python)
            return self._servers[python]

    def close(self) -> None:
        """Stop the check servers."""
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close()
