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
import time
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
            cached = self._spec(rel_dir) is not None or (rel_dir != "" and self.has_rules(parent))
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
    _tree: dict[str, _DirState] | None = field(default=None, repr=False)
    _tree_suffix: str = field(default="", repr=False)

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
        (`last_rule_files`), which lets a rescan notice an edited `.gitignore` for free, and
        each directory's listing, which `rewalk()` reuses.
        """
        root = str(self.root)
        seen: set[str] = {root}
        out: list[SourceFile] = []
        rule_files: list[tuple[str, int, int]] = []
        tree: dict[str, _DirState] = {}
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
            listing = self._list_dir(directory, prefix, suffix)
            if listing is None:
                continue  # unreadable directory: nothing to scan there
            tree[directory] = listing.state
            out.extend(listing.files)
            rule_files.extend(listing.rules)
            for path, rel in listing.subdirs:
                seen.add(path)
                stack.append((path, rel + "/"))
            links.extend(listing.links)
        rule_files.sort()
        self.last_rule_files = tuple(rule_files)
        self._tree = tree
        self._tree_suffix = suffix
        return out

    def rewalk(self, suffix: str = "") -> list[SourceFile]:
        """`walk()` again, cheaper: a directory whose mtime did not change is not listed again,
        only its files are stat'ed. A directory whose subdirectories changed (or vanished)
        means a full `walk()`. Directories modified within the last `RACY_NS` are always
        listed again (their mtime might not have ticked since: the "racy git" problem).
        """
        tree = self._tree
        if tree is None or self._tree_suffix != suffix:
            return self.walk(suffix)
        out: list[SourceFile] = []
        append = out.append
        rule_files: list[tuple[str, int, int]] = []
        stat = os.stat
        is_reg = stat_module.S_ISREG
        for directory, state in tree.items():
            try:
                mtime_ns = stat(directory).st_mtime_ns
            except OSError:
                return self.walk(suffix)
            if state.trusted and mtime_ns == state.mtime_ns:
                for rel, path in state.files:
                    try:
                        st = stat(path)
                    except OSError:
                        continue
                    if is_reg(st.st_mode):
                        append(SourceFile(rel, path, st.st_mtime_ns, st.st_size))
                for rel, path in state.rule_paths:
                    try:
                        st = stat(path)
                    except OSError:
                        continue
                    rule_files.append((rel, st.st_mtime_ns, st.st_size))
                continue
            listing = self._list_dir(directory, state.prefix, suffix)
            if listing is None or listing.state.subdirs != state.subdirs:
                return self.walk(suffix)
            tree[directory] = listing.state
            out.extend(listing.files)
            rule_files.extend(listing.rules)
        rule_files.sort()
        self.last_rule_files = tuple(rule_files)
        return out

    def _list_dir(self, directory: str, prefix: str, suffix: str) -> _Listing | None:
        """One directory: its matching files (stat'ed), subdirectories, links, rule files."""
        root = str(self.root)
        ignore = self.ignore
        file_rules = ignore.has_rules(prefix[:-1])
        files: list[SourceFile] = []
        subdirs: list[tuple[str, str]] = []
        links: list[tuple[str, str]] = []
        rules: list[tuple[str, int, int]] = []
        rule_paths: list[tuple[str, str]] = []
        children: list[str] = []
        listed_at = time.time_ns()
        try:
            mtime_ns = os.stat(directory).st_mtime_ns
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
                            children.append(entry.path)
                            subdirs.append((entry.path, rel))
                            continue
                        if name in RULE_FILES:
                            st = entry.stat()
                            rules.append((prefix + name, st.st_mtime_ns, st.st_size))
                            rule_paths.append((prefix + name, entry.path))
                        is_link = entry.is_symlink()
                        if is_link and entry.is_dir():
                            rel = prefix + name
                            if name not in ALWAYS_SKIP and not ignore.is_ignored(rel, True):
                                children.append(entry.path)
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
                    files.append(SourceFile(rel, entry.path, st.st_mtime_ns, st.st_size))
        except OSError:
            return None
        state = _DirState(
            prefix=prefix,
            mtime_ns=mtime_ns,
            trusted=mtime_ns < listed_at - RACY_NS,
            subdirs=frozenset(children),
            files=[(f.rel, f.path) for f in files],
            rule_paths=rule_paths,
        )
        return _Listing(files, subdirs, links, rules, state)


RACY_NS = 200_000_000  # mtimes this close to "now" may not have ticked yet: do not trust them


@dataclass
class _DirState:
    prefix: str
    mtime_ns: int
    trusted: bool
    subdirs: frozenset[str]
    files: list[tuple[str, str]]
    rule_paths: list[tuple[str, str]]


class _Listing(NamedTuple):
    files: list[SourceFile]
    subdirs: list[tuple[str, str]]
    links: list[tuple[str, str]]
    rules: list[tuple[str, int, int]]
    state: _DirState


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
