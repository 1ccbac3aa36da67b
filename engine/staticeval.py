"""Static evaluation of config expressions, in two steps, without importing user code.

1. `partial(node, src)` turns an AST expression of ONE file into a plain value tree: literals,
   lists / tuples / dicts of values, and symbolic parts that need the rest of the project —
   `Ref` (a name or dotted name such as `GpuGroup.ADA_24` or `c.gpu_config`), `CallExpr` (a call
   of a dotted name, e.g. `NetworkVolume(name="v")`) and `OpExpr` (unary minus/plus, arithmetic
   on numbers and strings). Anything else becomes `Unresolved(<source text>)`. This step is
   cached per file, so the scanner keeps no AST.
2. `evaluate(value, resolve_ref, resolve_call)` substitutes the symbolic parts through callbacks
   supplied by the project-level resolver (imports, module constants, enum members). What cannot
   be resolved stays `Unresolved` carrying the source text: never guessed.

`to_json` writes the result for the manifest: tuples as lists, `Unresolved` as
`{"$unresolved": "<source text>"}`.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CallExpr",
    "OpExpr",
    "Ref",
    "SourceText",
    "Unresolved",
    "contains_unresolved",
    "evaluate",
    "partial",
    "to_json",
    "unresolved_fields",
]


@dataclass(frozen=True)
class Unresolved:
    """A value that cannot be known without running code; `source` is the expression's text."""

    source: str

    def to_json(self) -> dict[str, str]:
        """The manifest form: `{"$unresolved": "<source text>"}`."""
        return {"$unresolved": self.source}


@dataclass(frozen=True)
class Ref:
    """A name or dotted name (`x`, `GpuGroup.ADA_24`, `rf.remote`) to resolve project-wide."""

    parts: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class CallExpr:
    """A call of a dotted name with evaluated arguments. `star` when `*a`/`**kw` was used."""

    func: Ref
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]
    source: str
    line: int
    star: bool = False

    def kwarg_dict(self) -> dict[str, Any]:
        """The keyword arguments as a dict (the last one wins, as Python would refuse twice)."""
        return dict(self.kwargs)


@dataclass(frozen=True)
class OpExpr:
    """A unary or binary operation whose operands need resolving first."""

    op: str
    operands: tuple[Any, ...]
    source: str


class SourceText:
    """Slices the source text of AST nodes fast (AST columns are UTF-8 byte offsets)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        starts = [0]
        find = data.find
        pos = find(b"\n")
        while pos != -1:
            starts.append(pos + 1)
            pos = find(b"\n", pos + 1)
        self._starts = starts

    def segment(self, node: ast.AST, limit: int = 200) -> str:
        """The source text of `node` (shortened to `limit` characters)."""
        try:
            start = self._starts[node.lineno - 1] + node.col_offset  # type: ignore[attr-defined]
            end_line = node.end_lineno or node.lineno  # type: ignore[attr-defined]
            end = self._starts[end_line - 1] + (node.end_col_offset or 0)  # type: ignore[attr-defined]
            text = self.data[start:end].decode("utf-8", errors="replace")
        except (AttributeError, IndexError, TypeError):
            text = ast.unparse(node) if isinstance(node, ast.expr) else "?"
        text = " ".join(text.split()) if "\n" in text else text
        return text if len(text) <= limit else text[: limit - 1] + "…"


_UNARY = {ast.USub: "neg", ast.UAdd: "pos", ast.Not: "not"}
_BINARY = {
    ast.Add: "add",
    ast.Sub: "sub",
    ast.Mult: "mul",
    ast.FloorDiv: "floordiv",
    ast.Div: "truediv",
    ast.Mod: "mod",
}
_OPS: dict[str, Callable[..., Any]] = {
    "neg": operator.neg,
    "pos": operator.pos,
    "not": operator.not_,
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "floordiv": operator.floordiv,
    "truediv": operator.truediv,
    "mod": operator.mod,
}


def dotted(node: ast.expr) -> tuple[str, ...] | None:
    """`a.b.c` as ("a", "b", "c"); None when the expression is not a plain dotted name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    parts.reverse()
    return tuple(parts)


def partial(node: ast.expr, src: SourceText) -> Any:
    """The file-local value of an expression (see the module docstring)."""
    if isinstance(node, ast.Constant):
        value = node.value
        if value is Ellipsis or isinstance(value, (bytes, complex)):
            return Unresolved(src.segment(node))
        return value
    if isinstance(node, (ast.Name, ast.Attribute)):
        parts = dotted(node)
        if parts is None:
            return Unresolved(src.segment(node))
        return Ref(parts, src.segment(node))
    if isinstance(node, ast.List):
        if any(isinstance(e, ast.Starred) for e in node.elts):
            return Unresolved(src.segment(node))
        return [partial(e, src) for e in node.elts]
    if isinstance(node, ast.Tuple):
        if any(isinstance(e, ast.Starred) for e in node.elts):
            return Unresolved(src.segment(node))
        return tuple(partial(e, src) for e in node.elts)
    if isinstance(node, ast.Dict):
        out: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None or not isinstance(key, ast.Constant):
                return Unresolved(src.segment(node))  # `**spread` or a computed key
            if not isinstance(key.value, (str, int, float, bool)) and key.value is not None:
                return Unresolved(src.segment(node))
            out[key.value] = partial(value, src)
        return out
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return OpExpr(_UNARY[type(node.op)], (partial(node.operand, src),), src.segment(node))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return OpExpr(
            _BINARY[type(node.op)],
            (partial(node.left, src), partial(node.right, src)),
            src.segment(node),
        )
    if isinstance(node, ast.Call):
        parts = dotted(node.func)
        if parts is None:
            return Unresolved(src.segment(node))
        star = any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        )
        return CallExpr(
            func=Ref(parts, src.segment(node.func)),
            args=tuple(partial(a, src) for a in node.args if not isinstance(a, ast.Starred)),
            kwargs=tuple(
                (k.arg, partial(k.value, src)) for k in node.keywords if k.arg is not None
            ),
            source=src.segment(node),
            line=node.lineno,
            star=star,
        )
    return Unresolved(src.segment(node))


def evaluate(
    value: Any,
    resolve_ref: Callable[[Ref], Any],
    resolve_call: Callable[[CallExpr], Any],
) -> Any:
    """Substitute `Ref`/`CallExpr`/`OpExpr` parts of a `partial` value through the callbacks.

    The callbacks return a plain value or `Unresolved`; they may call `evaluate` again (e.g. for
    a constant defined in another module).
    """
    if value is None or isinstance(value, (str, int, float, bool, Unresolved)):
        return value
    if isinstance(value, Ref):
        return resolve_ref(value)
    if isinstance(value, list):
        return [evaluate(v, resolve_ref, resolve_call) for v in value]
    if isinstance(value, tuple):
        return tuple(evaluate(v, resolve_ref, resolve_call) for v in value)
    if isinstance(value, dict):
        return {k: evaluate(v, resolve_ref, resolve_call) for k, v in value.items()}
    if isinstance(value, CallExpr):
        return resolve_call(value)
    if isinstance(value, OpExpr):
        operands = [evaluate(v, resolve_ref, resolve_call) for v in value.operands]
        if any(contains_unresolved(o) for o in operands):
            return Unresolved(value.source)
        try:
            result = _OPS[value.op](*operands)
        except Exception:  # e.g. "a" - 1, 1 / 0: not a value we can know
            return Unresolved(value.source)
        if not isinstance(result, (str, int, float, bool)) or (
            isinstance(result, str) and len(result) > 10_000
        ):
            return Unresolved(value.source)
        return result
    return Unresolved(repr(value))


def contains_unresolved(value: Any) -> bool:
    """True when an `Unresolved` marker appears anywhere in the value."""
    if isinstance(value, Unresolved):
        return True
    if isinstance(value, (list, tuple)):
        return any(contains_unresolved(v) for v in value)
    if isinstance(value, dict):
        return any(contains_unresolved(v) for v in value.values())
    return False


def unresolved_fields(config: dict[str, Any]) -> list[str]:
    """The sorted top-level keys of `config` whose value is (or contains) `Unresolved`."""
    return sorted(str(k) for k, v in config.items() if contains_unresolved(v))


def to_json(value: Any) -> Any:
    """A JSON-ready copy: tuples as lists, `Unresolved` as `{"$unresolved": text}`."""
    if isinstance(value, Unresolved):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (Ref, CallExpr, OpExpr)):
        return {"$unresolved": value.source}
    return value
