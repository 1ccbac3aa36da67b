"""The import check's record: which generated handlers a build must import again.

A handler that imported cleanly is recorded with what its import depended on: the content hash of
every file it loaded from the build dir or from our runtime package, plus what may change any
import (the interpreter, `PYTHONPATH`, the build's list of files: a new module can shadow
another or satisfy an `ImportError` fallback). The next build re-checks a handler only when one
of those changed; a failed check is never recorded, so it runs again. The record lives next to
the build dir, never inside it (it must not reach the archive).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.build.model import MANIFEST_NAME
from engine.handlergen import HandlerCheck

__all__ = ["CheckRecord", "RECORD_NAME"]

RECORD_NAME = ".import-checks.json"
_FORMAT = 1


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

    def __init__(self, path: Path, build_dir: Path, python: str | None, members: Iterable[str]):
        self.path = path
        self.build_dir = build_dir.resolve()
        self._runtime = _runtime_dir()
        self._key = {
            "format": _FORMAT,
            "python": _interpreter_id(python),
            "pythonpath": os.environ.get("PYTHONPATH", ""),
            "members": hashlib.sha256("\n".join(sorted(members)).encode()).hexdigest(),
        }
        self._handlers: dict[str, dict[str, str]] = {}
        self._hashes: dict[str, str | None] = {}
        saved = self._load()
        if saved.get("key") == self._key and isinstance(saved.get("handlers"), dict):
            self._handlers = {
                name: files
                for name, files in saved["handlers"].items()
                if isinstance(name, str) and isinstance(files, dict)
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
        path = Path(loaded)
        if path.is_relative_to(self.build_dir):
            return path.relative_to(self.build_dir).as_posix()
        if path.is_relative_to(self._runtime):
            return str(path)
        return None  # the interpreter's own library: covered by the interpreter's id

    def stale(self, handlers: Iterable[str]) -> list[str]:
        """The handlers, in order, whose recorded inputs changed (or that have no record)."""
        return [h for h in handlers if not self._fresh(h)]

    def _fresh(self, handler: str) -> bool:
        files = self._handlers.get(handler)
        if not files:
            return False
        return all(self._hash(key) == digest for key, digest in files.items())

    def update(self, checks: Iterable[HandlerCheck], keep: Iterable[str]) -> None:
        """Record the successful `checks`; forget every handler not in `keep` or that failed."""
        keep = set(keep)
        self._handlers = {h: f for h, f in self._handlers.items() if h in keep}
        for check in checks:
            self._handlers.pop(check.handler, None)
            if not check.ok or check.handler not in keep:
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
            if len(files) > 1:  # loaded nothing we know of: no record, check again
                self._handlers[check.handler] = files

    def save(self) -> None:
        """Write the record atomically (a crash mid-write leaves the old one or none)."""
        data = {"key": self._key, "handlers": self._handlers}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, sort_keys=True, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)
