"""`config_hash` of resolved resource configs, memoised in memory and on disk.

Computing a hash validates the config with the SDK's pydantic models, and importing those is a
large share of a warm `deploy`'s start-up. The on-disk memo (`.flash/config_hashes.json`, beside
the project's build; never in the archive, whose walk skips `.flash`) lets an unchanged
project's scan skip the models entirely. It is trusted only when its stamp matches the
source of the runtime code that computes hashes (which changes with any flash-tui or SDK
version) and every entry is well formed; anything else is ignored and rewritten. It holds digests
of configs, never the configs (an `env` value may be a secret), and only successful hashes
(error messages are recomputed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import runtime

__all__ = ["CACHE_FORMAT", "ConfigHashes", "config_hash_store", "runtime_stamp"]

CACHE_FORMAT = 1
# The runtime modules whose code decides a config's hash.
_HASHING_MODULES: tuple[str, ...] = (
    "resources.py",
    "confighash.py",
    "enums.py",
    "resourcekinds.py",
)
# Enough for many projects' endpoints; beyond it the oldest entries go.
_MAX_ENTRIES = 4096


def config_hash_store(project_root: Path) -> Path:
    """Where the on-disk memo of the project at `project_root` lives."""
    return project_root / ".flash" / "config_hashes.json"


def runtime_stamp() -> str:
    """A digest of the runtime code that computes config hashes (and of the memo's format)."""
    digest = hashlib.sha256(f"format {CACHE_FORMAT}\n".encode())
    base = Path(runtime.__file__).parent
    for name in _HASHING_MODULES:
        digest.update(name.encode() + b"\0")
        try:
            digest.update((base / name).read_bytes())
        except OSError:
            digest.update(b"missing")
    return digest.hexdigest()


def _digest(resource_type: str, config: dict[str, Any]) -> str:
    text = resource_type + "\0" + json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _replace(path: Path, text: str) -> None:
    """Atomically replace `path`: a concurrent scan reads the old memo or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _is_hex_digest(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= 128
        and all(c in "0123456789abcdef" for c in value)
    )


class ConfigHashes:
    """`config_hash` of fully resolved configs, memoised across scans (and runs, with `store`).

    `computed` counts the hashes worked out with the models (not found in either memo).
    """

    def __init__(self, store: Path | None = None, *, stamp: str | None = None) -> None:
        self._found: dict[str, tuple[str | None, str | None]] = {}
        self._store = store
        self._stamp = stamp
        self._saved: dict[str, str] | None = None  # loaded lazily: a scan may need no hash
        self._dirty = False
        self.computed = 0

    def get(self, resource_type: str, config: dict[str, Any]) -> tuple[str | None, str | None]:
        """(config_hash, error) of one config."""
        key = _digest(resource_type, config)
        found = self._found.get(key)
        if found is None:
            saved = self._load().get(key)
            if saved is not None:
                found = (saved, None)
            else:
                found = self._compute(key, resource_type, config)
            self._found[key] = found
        return found

    def save(self) -> None:
        """Write the on-disk memo when it gained entries; an unwritable home is not an error."""
        if self._store is None or not self._dirty or self._saved is None:
            return
        entries = dict(list(self._saved.items())[-_MAX_ENTRIES:])
        payload = {"format": CACHE_FORMAT, "stamp": self._current_stamp(), "hashes": entries}
        with contextlib.suppress(OSError):
            _replace(self._store, json.dumps(payload, separators=(",", ":")))
            self._dirty = False

    def _compute(
        self, key: str, resource_type: str, config: dict[str, Any]
    ) -> tuple[str | None, str | None]:
        from runtime.resources import config_hash

        self.computed += 1
        try:
            value = config_hash(resource_type, config)
        except (ValueError, KeyError, TypeError) as exc:
            return (None, str(exc.args[0] if exc.args else exc))
        if self._saved is not None and self._store is not None:
            self._saved[key] = value
            self._dirty = True
        return (value, None)

    def _current_stamp(self) -> str:
        if self._stamp is None:
            self._stamp = runtime_stamp()
        return self._stamp

    def _load(self) -> dict[str, str]:
        if self._saved is None:
            self._saved = self._read() if self._store is not None else {}
        return self._saved

    def _read(self) -> dict[str, str]:
        """The stored memo, or {} when it is missing, unreadable, foreign or corrupt."""
        assert self._store is not None
        try:
            data = json.loads(self._store.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            return {}
        if data.get("stamp") != self._current_stamp():
            return {}
        hashes = data.get("hashes")
        if not isinstance(hashes, dict):
            return {}
        if not all(_is_hex_digest(k) and _is_hex_digest(v) for k, v in hashes.items()):
            return {}
        return dict(hashes)
