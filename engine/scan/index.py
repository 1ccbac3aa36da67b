"""Phase 2, the module index: which cached file each dotted module is, across the project.

Built from the scanner's file entries when files come or go; the resolver asks it whether a
module is the project's, which file defines it, and which module a bare dotted suffix names.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.scan.facts import FileEntry


class ModuleIndex:
    """Modules of the project's files, their parent packages and their dotted suffixes."""

    def __init__(
        self,
        by_module: dict[str, FileEntry] | None = None,
        packages: set[str] | None = None,
        suffixes: dict[str, list[str]] | None = None,
    ) -> None:
        self.by_module: dict[str, FileEntry] = by_module if by_module is not None else {}
        self.packages: set[str] = packages if packages is not None else set()
        self.suffixes: dict[str, list[str]] = suffixes if suffixes is not None else {}

    def rebuilt(self, entries: Mapping[str, FileEntry]) -> tuple[ModuleIndex, bool]:
        """The index of `entries` (keyed by relative path); True when the set of modules changed."""
        by_module: dict[str, FileEntry] = {}
        for rel in sorted(entries):
            entry = entries[rel]
            # `a.py` and `a/__init__.py` both claim module `a`; Python imports the package.
            if entry.module in by_module and not rel.endswith("__init__.py"):
                continue
            by_module[entry.module] = entry
        if by_module.keys() == self.by_module.keys():
            return ModuleIndex(by_module, self.packages, self.suffixes), False
        packages: set[str] = set()
        suffixes: dict[str, list[str]] = {}
        for module in by_module:
            parts = module.split(".")
            for i in range(1, len(parts)):
                packages.add(".".join(parts[:i]))
                suffixes.setdefault(".".join(parts[i:]), []).append(module)
        return ModuleIndex(by_module, packages, suffixes), True

    def replace(self, old: FileEntry, new: FileEntry) -> None:
        """Point `new`'s module at `new` when it was `old` (a file re-read in place)."""
        if self.by_module.get(new.module) is old:
            self.by_module[new.module] = new

    def entry(self, module: str) -> FileEntry | None:
        """The file entry of a project module, if any."""
        return self.by_module.get(module)

    def is_project(self, module: str) -> bool:
        """True for a module or package of the project."""
        return module in self.by_module or module in self.packages

    def unique_suffix(self, name: str) -> str | None:
        """The one project module whose dotted name ends with `name` (None: none or several)."""
        found = self.suffixes.get(name)
        if found is not None and len(found) == 1:
            return found[0]
        return None
