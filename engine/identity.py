"""App identity: a project is its canonical path; its app key is a readable, unique slug.

Two projects whose folders share a name (`~/a/quickstart`, `~/b/quickstart`) are two apps:
the key is the folder name made readable in ASCII (transliterated, never collapsed to a
placeholder) plus a short hash of the canonical path, e.g. `quickstart-3f9c2a1b`. The key is
a path component and a URL segment on the target, hence ASCII letters, digits, `_.-` only.

`legacy_app_name` is how apps were keyed before (the folder name alone); the local cloud's
store migration uses it to recognise which old apps it can attach to their project for sure.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from anyascii import anyascii

__all__ = ["HASH_LENGTH", "app_slug", "canonical_path", "legacy_app_name", "readable_name"]

HASH_LENGTH = 8
_MAX_NAME = 64  # room for the hash, well under the target's 128-character limit
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def canonical_path(project: str | os.PathLike[str]) -> Path:
    """The absolute path of a project with symlinks and `..` resolved."""
    return Path(project).expanduser().resolve()


def readable_name(folder: str) -> str:
    """The folder name in ASCII letters, digits and `_.-` (`проект` -> `proekt`)."""
    name = _UNSAFE.sub("-", anyascii(folder)).strip("-._")
    return name[:_MAX_NAME].rstrip("-._") or "project"


def app_slug(path: str | os.PathLike[str]) -> str:
    """The app key of the project at canonical `path`: readable name + short path hash.

    `path` is used as given (callers pass a canonical path; the store migration passes the
    path recorded at deploy time, which may no longer exist).
    """
    text = os.fspath(path)
    digest = hashlib.sha256(os.fsencode(text)).hexdigest()[:HASH_LENGTH]
    return f"{readable_name(Path(text).name)}-{digest}"


def legacy_app_name(path: str | os.PathLike[str]) -> str:
    """The key older versions gave the project at `path`: its folder name, ASCII-only."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(os.fspath(path)).name).strip("-.") or "app"
    return name[:128]
