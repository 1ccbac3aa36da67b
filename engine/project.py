"""The project model: its root, its name, its ignore rules and a fast walk over its sources.

Ignore rules (shared by the scanner, the build's file copy and the file watcher):

- always skipped, at any depth: `.git`, `.venv`, `venv`, `.flash`, `.runpod`, `__pycache__`,
  `node_modules`, `site-packages`, and any directory holding a `pyvenv.cfg` (a virtual
  environment can have any name);
- patterns of `.gitignore` and `.flashignore` files with gitignore semantics (via `pathspec`'s
  `GitIgnoreSpec`: `dir/`, `*.log`, `**`, anchored `/x`, `!negation`). A rule file applies to
  its own directory and below, like git; in one directory `.flashignore` patterns come after
  `.gitignore` ones (so they can re-include), and a deeper file overrides a shallower one. As in
  git, nothing inside an ignored directory can be re-included.

The walk uses `os.scandir`, prunes ignored directories before entering them and follows a
symlinked directory only when it resolves inside the project and was not visited yet (so links
out of the project are never followed and link loops end). A symlinked file that resolves
outside the project is skipped (the build refuses to ship it, so the scanner must not see it).
"""

from __future__ import annotations

import os
import stat as stat_module
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pathspec

__all__ = [
    "ALWAYS_SKIP",
    "RULE_FILES",
    "IgnoreRules",
    "Project",
    "SourceFile",
    "ignore_predicate",
    "load_ignore",
]

ALWAYS_SKIP: frozenset[str] = frozenset(
    {".git", ".venv", "venv", ".flash", ".runpod", "__pycache__", "node_modules", "site-packages"}
)
RULE_FILES: tuple[str, ...] = (".gitignore", ".flashignore")


class SourceFile(NamedTuple):
    """One file found by the walk: relative posix path, absolute path, stat key."""

    rel: str
    path: str
    mtime_ns: int
    size: int


def _read_rules(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


class IgnoreRules:
    """The ignore decision for any relative posix path of one project (files and directories).

    Decisions are cached, so asking again for the same path costs a dict lookup; call
    `reload()` after a rule file changed.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}
        self._cache: dict[tuple[str, bool], bool] = {}

    def reload(self) -> None:
        """Forget cached rule files and decisions (a `.gitignore` / `.flashignore` changed)."""
        self._specs.clear()
        self._cache.clear()

    def rule_files_signature(self) -> tuple[tuple[str, int, int], ...]:
        """(path, mtime_ns, size) of every rule file read so far: changes mean `reload()`."""
        out = []
        for rel_dir in sorted(self._specs):
            for name in RULE_FILES:
                path = self.root / rel_dir / name if rel_dir else self.root / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                out.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _spec(self, rel_dir: str) -> pathspec.GitIgnoreSpec | None:
        """The combined rules of the rule files in one directory ('' is the root)."""
        try:
            return self._specs[rel_dir]
        except KeyError:
            pass
        base = self.root / rel_dir if rel_dir else self.root
        lines: list[str] = []
        for name in RULE_FILES:
            lines.extend(_read_rules(base / name))
        spec = (
            pathspec.GitIgnoreSpec.from_lines(lines)
            if any(line.strip() and not line.lstrip().startswith("#") for line in lines)
            else None
        )
        self._specs[rel_dir] = spec
        return spec

    def has_rules(self, rel_dir: str) -> bool:
        """Whether any rule file applies inside `rel_dir` ('' is the root); cached."""
        key = ("\0rules:" + rel_dir, True)
        cached = self._cache.get(key)
        if cached is None:
            parent = rel_dir.rpartition("/")[0] if "/" in rel_dir else ""
            cached = self._spec(rel_dir) is not None or (
                rel_dir != "" and self.has_rules(parent)
            )
            self._cache[key] = cached
        return cached

    def _match(self, rel: str, is_dir: bool) -> bool:
        """The rule files alone decide `rel` (its parent directories are not checked here)."""
        parts = rel.split("/")
        decision = False
        # From the root down: a deeper rule file that has an opinion overrides shallower ones.
        for depth in range(len(parts)):
            rel_dir = "/".join(parts[:depth])
            spec = self._spec(rel_dir)
            if spec is None:
                continue
            sub = "/".join(parts[depth:]) + ("/" if is_dir else "")
            include = spec.check_file(sub).include
            if include is not None:
                decision = include
        return decision

    def is_ignored(self, rel: str, is_dir: bool = False) -> bool:
        """True when the relative posix path `rel` (a file, or a directory with `is_dir`) is
        excluded, by the built-in names, a venv marker or the rule files — itself or any parent.
        """
        rel = rel.strip("/")
        if not rel or rel == ".":
            return False
        key = (rel, is_dir)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        parent, _, name = rel.rpartition("/")
        result = (
            (parent != "" and self.is_ignored(parent, True))
            or (is_dir and (name in ALWAYS_SKIP or _is_venv(self.root / rel)))
            or self._match(rel, is_dir)
        )
        self._cache[key] = result
        return result

    def is_ignored_path(self, path: str | os.PathLike[str]) -> bool:
        """`is_ignored` for an absolute path; paths outside the root count as ignored."""
        p = Path(path)
        try:
            rel = p.relative_to(self.root).as_posix()
        except ValueError:
            try:
                rel = p.resolve().relative_to(self.root).as_posix()
            except (ValueError, OSError):
                return True
        if rel in ("", "."):
            return False
        try:
            is_dir = p.is_dir()
        except OSError:
            is_dir = False
        return self.is_ignored(rel, is_dir)


def _is_venv(path: Path) -> bool:
    try:
        return os.path.isfile(path / "pyvenv.cfg")
    except OSError:
        return False


def load_ignore(root: str | os.PathLike[str]) -> IgnoreRules:
    """The ignore rules of the project at `root` (see the module docstring)."""
    return IgnoreRules(Path(root).expanduser().resolve())


def ignore_predicate(root: str | os.PathLike[str]) -> Callable[[Path], bool]:
    """A predicate over absolute paths: True when the project at `root` ignores it."""
    return load_ignore(root).is_ignored_path


@dataclass
class Project:
    """A Flash project: a directory whose name is the project (app) name."""

    root: Path
    ignore: IgnoreRules = field(repr=False)
    last_rule_files: tuple[tuple[str, int, int], ...] = field(default=(), repr=False)

    @property
    def name(self) -> str:
        """The project name: the directory's name, as upstream (`flash build`) uses the cwd's."""
        return self.root.name

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Project:
        """The project rooted at `path` (resolved). Raises `NotADirectoryError` otherwise."""
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise NotADirectoryError(f"{root} is not a directory")
        return cls(root=root, ignore=IgnoreRules(root))

    def is_ignored(self, rel: str, is_dir: bool = False) -> bool:
        """Whether the relative posix path is excluded (see `IgnoreRules.is_ignored`)."""
        return self.ignore.is_ignored(rel, is_dir)

    def relpath(self, path: str | os.PathLike[str]) -> str:
        """The relative posix path of an absolute path inside the project."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    def python_files(self) -> list[SourceFile]:
        """Every `*.py` file that is not ignored, with its stat key (unordered)."""
        return self.walk(suffix=".py")

    def walk(self, suffix: str = "") -> list[SourceFile]:
        """Every non-ignored regular file whose name ends with `suffix` (unordered).

        Real directories are walked first; symlinked directories only afterwards, and only when
        they resolve inside the project to a directory not walked yet, so the result does not
        depend on listing order and link loops end. Also records the rule files it passed
        (`last_rule_files`), which lets a rescan notice an edited `.gitignore` for free.
        """
        root = str(self.root)
        seen: set[str] = {root}
        ignore = self.ignore
        out: list[SourceFile] = []
        rule_files: list[tuple[str, int, int]] = []
        append = out.append
        stack: list[tuple[str, str]] = [(root, "")]
        links: list[tuple[str, str]] = []
        while stack or links:
            if not stack:
                # Only now follow directory links: every real directory has been seen.
                path, rel = links.pop()
                real = os.path.realpath(path)
                if real in seen or not _inside(real, root) or not os.path.isdir(real):
                    continue
                seen.add(real)
                stack.append((path, rel + "/"))
                continue
            directory, prefix = stack.pop()
            file_rules = ignore.has_rules(prefix[:-1])
            try:
                with os.scandir(directory) as it:
                    for entry in it:
                        name = entry.name
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                if name in ALWAYS_SKIP:
                                    continue
                                rel = prefix + name
                                if ignore.is_ignored(rel, True):
                                    continue
                                seen.add(entry.path)
                                stack.append((entry.path, rel + "/"))
                                continue
                            if name in RULE_FILES:
                                st = entry.stat()
                                rule_files.append((prefix + name, st.st_mtime_ns, st.st_size))
                            is_link = entry.is_symlink()
                            if is_link and entry.is_dir():
                                rel = prefix + name
                                if name not in ALWAYS_SKIP and not ignore.is_ignored(rel, True):
                                    links.append((entry.path, rel))
                                continue
                            if not name.endswith(suffix):
                                continue
                            rel = prefix + name
                            if file_rules and ignore.is_ignored(rel, False):
                                continue
                            st = entry.stat()  # follows links
                        except OSError:
                            continue  # vanished, dangling or looping link, no permission
                        if not stat_module.S_ISREG(st.st_mode):
                            continue
                        if is_link and not _inside(os.path.realpath(entry.path), root):
                            continue
                        append(SourceFile(rel, entry.path, st.st_mtime_ns, st.st_size))
            except OSError:
                continue  # unreadable directory: nothing to scan there
        rule_files.sort()
        self.last_rule_files = tuple(rule_files)
        return out


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
