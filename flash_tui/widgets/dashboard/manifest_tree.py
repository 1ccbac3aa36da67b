"""The manifest tree: endpoints -> functions/routes, plus diagnostics; updated in place."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from engine.diagnostics import Diagnostic
from engine.styles import SEVERITY_STYLES, style_of
from flash_tui import present
from flash_tui.widgets.panes import vim_keys

FLASH_SECONDS = 1.5
_FLASH_STYLE = "on #5f5f00"


@dataclass
class TreeItem:
    """What a node stands for; `key` identifies it across rescans."""

    kind: str  # "endpoint" | "function" | "diagnostics" | "diagnostic" | "hint" | "error"
    key: tuple[str, ...]
    endpoint: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    # The diagnostic a `diagnostic` node stands for.
    diagnostic: Diagnostic | None = None


@dataclass
class _Spec:
    item: TreeItem
    label: Text
    children: list[_Spec] | None = None
    expand: bool = True


def _function_label(fn: Mapping[str, Any], is_lb: bool) -> Text:
    name = str(fn.get("name"))
    text = Text()
    if is_lb and fn.get("http_method"):
        text.append(f"{fn['http_method']:<6}", style="bold cyan")
        path = fn.get("http_path")
        text.append(f"{path}  " if path else "(no path)  ", style="cyan" if path else "bold red")
        text.append(name, style="dim")
        return text
    if fn.get("is_class"):
        text.append("◆ ", style="magenta")
        text.append(name)
        text.append(" class", style="dim")
    else:
        text.append("ƒ ", style="green")
        text.append(name)
        if fn.get("is_async"):
            text.append(" async", style="dim")
    return text


def _diag_label(diag: Diagnostic) -> Text:
    severity = diag.severity
    where = f"{diag.file}:{diag.line}"
    text = Text()
    text.append(
        present.SEVERITY_ICONS.get(severity, "•") + " ",
        style=style_of(severity, SEVERITY_STYLES),
    )
    text.append(where + " ", style="bold")
    text.append(diag.message)
    return text


def error_specs(reason: str) -> list[_Spec]:
    """The tree when the project could not be scanned at all: what went wrong, not a hint."""
    item = TreeItem("error", ("error",), payload={"message": reason})
    label = Text("✖ Cannot scan the project", style="bold red")
    # The reason on its own lines (the tree does not wrap); the detail pane shows it whole.
    children = [
        _Spec(TreeItem("error", ("error", str(i)), payload={"message": reason}), Text(line))
        for i, line in enumerate(reason.splitlines() or [reason])
    ]
    return [_Spec(item, label, children)]


def loading_specs(text: str) -> list[_Spec]:
    """The tree before the first scan: what is happening, not an empty project's hint."""
    return [_Spec(TreeItem("hint", ("hint", "loading")), Text(text, style="dim italic"))]


def build_specs(manifest: Mapping[str, Any], diagnostics: Sequence[Diagnostic]) -> list[_Spec]:
    """The desired tree for a manifest dict and the scan's diagnostics."""
    specs: list[_Spec] = []
    resources: Mapping[str, Any] = manifest.get("resources") or {}
    for name in sorted(resources):
        res = resources[name]
        is_lb = bool(res.get("is_load_balanced"))
        label = Text(name, style="bold")
        label.append(f"  {present.resource_badges(res)}", style="dim")
        if res.get("unresolved"):
            label.append("  ?", style="yellow")
        children = []
        functions = sorted(
            res.get("functions") or [],
            key=lambda f: (f.get("http_path") or "", f.get("http_method") or "", f.get("name")),
        )
        for fn in functions:
            item = TreeItem("function", ("function", name, str(fn.get("name"))), name, fn)
            children.append(_Spec(item, _function_label(fn, is_lb)))
        item = TreeItem("endpoint", ("endpoint", name), name, res)
        specs.append(_Spec(item, label, children))
    if diagnostics:
        children = [
            _Spec(
                TreeItem("diagnostic", ("diagnostic", str(i)), None, diagnostic=d),
                _diag_label(d),
            )
            for i, d in enumerate(diagnostics)
        ]
        errors = sum(1 for d in diagnostics if d.severity == "error")
        style = "bold red" if errors else "yellow"
        noun = "diagnostic" if len(diagnostics) == 1 else "diagnostics"
        label = Text(f"⚠ {len(diagnostics)} {noun}", style=style)
        specs.append(_Spec(TreeItem("diagnostics", ("diagnostics",)), label, children))
    if not resources:
        # Several short leaves rather than one long line: the tree does not wrap.
        for i, (text, style) in enumerate(
            [
                ("No Flash endpoints found here.", "bold"),
                ("Decorate a function with", "dim"),
                ("  @remote(config)  or", "cyan"),
                ("  @Endpoint(...)", "cyan"),
                ("and save: this tree updates live.", "dim"),
            ]
        ):
            specs.append(_Spec(TreeItem("hint", ("hint", str(i))), Text(text, style=style)))
    return specs


def _fingerprint(item: TreeItem) -> str:
    # repr, not json.dumps: the manifest's dicts are built in a deterministic order, and this
    # runs for every node on every rescan.
    return repr((item.payload, item.diagnostic))


def _no_match_specs(text: str) -> list[_Spec]:
    label = Text(f"Nothing matches /{text}", style="yellow")
    hint = Text("escape clears the filter", style="dim")
    return [
        _Spec(TreeItem("hint", ("hint", "filter")), label),
        _Spec(TreeItem("hint", ("hint", "filter-clear")), hint),
    ]


class ManifestTree(Tree[TreeItem]):
    """Tree of the scanned manifest; `show()` reconciles nodes so expansion and cursor stay.

    `apply_filter()` keeps only what a `/` filter matches (flash_tui/filtering.py), also across
    rescans, until it is cleared.
    """

    BINDINGS = vim_keys("cursor_down", "cursor_up", "cursor_first", "cursor_last")

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("manifest", id=id, classes=classes)
        self.show_root = False
        self.guide_depth = 2
        self._mt_prints: dict[tuple[str, ...], str] = {}
        self._mt_labels: dict[tuple[str, ...], Text] = {}
        self._by_key: dict[tuple[str, ...], TreeNode[TreeItem]] = {}
        self._mt_flashing: set[tuple[str, ...]] = set()
        self._mt_loaded = False
        self._shown_scan: tuple[Mapping[str, Any], Sequence[Diagnostic]] | None = None
        self._filter = ""
        self._filter_statuses: Mapping[str, str] = {}

    def action_cursor_first(self) -> None:
        """Cursor to the first node."""
        self.cursor_line = 0

    def action_cursor_last(self) -> None:
        """Cursor to the last visible node."""
        self.cursor_line = self.last_line

    @property
    def filter_text(self) -> str:
        """The `/` filter in force ("" when none)."""
        return self._filter

    @property
    def flashing(self) -> set[tuple[str, ...]]:
        """Keys of nodes currently highlighted as changed."""
        return set(self._mt_flashing)

    def shown_keys(self) -> set[tuple[str, ...]]:
        """Keys of every node in the tree now (walked, collapsed branches included)."""
        keys = set()
        stack = list(self.root.children)
        while stack:
            node = stack.pop()
            if node.data is not None:
                keys.add(node.data.key)
            stack.extend(node.children)
        return keys

    def node_for(self, key: tuple[str, ...]) -> TreeNode[TreeItem] | None:
        """The node for an item key, if shown."""
        return self._by_key.get(key)

    def move_to(self, key: tuple[str, ...]) -> TreeNode[TreeItem] | None:
        """Put the cursor on the node for `key` (if shown) and return that node."""
        node = self._by_key.get(key)
        if node is not None:
            # Lines are indexed lazily, on the next render: a node added since has no line yet.
            self._tree_lines  # noqa: B018 - rebuilds the line index so node._line is current
            if self.cursor_line != node._line:
                self.move_cursor(node)
        return node

    def show(
        self, manifest: Mapping[str, Any], diagnostics: Sequence[Diagnostic]
    ) -> set[tuple[str, ...]]:
        """Show a new scan result; returns the keys of nodes that changed (and flash them)."""
        self._shown_scan = (manifest, diagnostics)
        return self._show(self._filtered_specs())

    def apply_filter(self, text: str, statuses: Mapping[str, str]) -> None:
        """Keep only what `text` matches (name, type, `statuses`); "" shows everything."""
        if (text, statuses) == (self._filter, self._filter_statuses):
            return
        self._filter, self._filter_statuses = text, statuses
        if self._shown_scan is not None:
            self._show(self._filtered_specs(), flash=False)

    def _filtered_specs(self) -> list[_Spec]:
        assert self._shown_scan is not None
        manifest, diagnostics = self._shown_scan
        if not self._filter.strip():
            return build_specs(manifest, diagnostics)
        from flash_tui.filtering import filter_manifest

        kept, shown = filter_manifest(manifest, diagnostics, self._filter, self._filter_statuses)
        if not kept["resources"] and not shown:
            return _no_match_specs(self._filter)
        return build_specs(kept, shown)

    def show_loading(self, text: str) -> None:
        """Say the tree is on its way (before the first scan); the scan's nodes replace it."""
        self._show(loading_specs(text), flash=False)
        self._mt_loaded = False  # the first scan's nodes are not "changed" ones to flash

    def show_error(self, reason: str) -> None:
        """Show why the project could not be scanned (instead of any endpoints)."""
        self._shown_scan = None
        self._show(error_specs(reason))

    def _show(self, specs: list[_Spec], flash: bool = True) -> set[tuple[str, ...]]:
        changed: set[tuple[str, ...]] = set()
        cursor = self.cursor_node
        cursor_key = cursor.data.key if cursor is not None and cursor.data is not None else None
        self._sync(self.root, specs, changed)
        # The cursor is a line number: nodes added above it would shift the selection.
        if cursor_key is not None:
            self.move_to(cursor_key)
        if self._mt_loaded and changed and flash:
            self._flash(changed)
        self._mt_loaded = True
        return changed

    def _sync(
        self, parent: TreeNode[TreeItem], specs: Iterable[_Spec], changed: set[tuple[str, ...]]
    ) -> None:
        specs = list(specs)
        wanted = {spec.item.key for spec in specs}
        for node in list(parent.children):
            if node.data is None or node.data.key not in wanted:
                self._forget(node)
                node.remove()
        for index, spec in enumerate(specs):
            key = spec.item.key
            node = self._by_key.get(key)
            fingerprint = _fingerprint(spec.item)
            if node is None or node.parent is not parent:
                position = index if index < len(parent.children) else None
                if spec.children is None:
                    node = parent.add_leaf(spec.label, spec.item, before=position)
                else:
                    node = parent.add(spec.label, spec.item, before=position, expand=spec.expand)
                self._by_key[key] = node
                changed.add(key)
            elif self._mt_prints.get(key) != fingerprint:
                node.data = spec.item
                node.set_label(spec.label)
                changed.add(key)
            elif self._mt_labels.get(key) != spec.label:
                node.set_label(spec.label)
            self._mt_prints[key] = fingerprint
            self._mt_labels[key] = spec.label
            if spec.children is not None:
                self._sync(node, spec.children, changed)

    def _forget(self, node: TreeNode[TreeItem]) -> None:
        for child in node.children:
            self._forget(child)
        if node.data is not None:
            self._by_key.pop(node.data.key, None)
            self._mt_prints.pop(node.data.key, None)
            self._mt_labels.pop(node.data.key, None)
            self._mt_flashing.discard(node.data.key)

    def _flash(self, keys: set[tuple[str, ...]]) -> None:
        # Only rows a person can see are worth flashing; diagnostics are renumbered each scan.
        keys = {k for k in keys if k[0] in {"endpoint", "function"}}
        for key in keys:
            node = self._by_key.get(key)
            if node is not None:
                highlighted = self._mt_labels[key].copy()
                highlighted.stylize(_FLASH_STYLE)
                node.set_label(highlighted)
        self._mt_flashing |= keys
        self.set_timer(FLASH_SECONDS, lambda: self._unflash(keys))

    def _unflash(self, keys: set[tuple[str, ...]]) -> None:
        for key in keys & self._mt_flashing:
            node = self._by_key.get(key)
            if node is not None:
                node.set_label(self._mt_labels[key])
        self._mt_flashing -= keys
