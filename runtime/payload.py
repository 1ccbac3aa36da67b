"""Request bodies a worker accepts: size caps (read incrementally), JSON it can handle, and
the one-line summary of a body that does not fit a function's parameters.

Valid JSON can still be poison for a worker: a lone surrogate (`"\\ud800"`) parses but cannot
be encoded back to UTF-8, so the answer (or a job's stored output) would fail later with a 500;
JSON nested deeper than the interpreter's recursion limit raises RecursionError. Both are
refused up front as a 400 (`BodyError`), before any job exists.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["DEFAULT_MAX_DEPTH", "BodyError", "parse_json", "read_body", "validation_summary"]

DEFAULT_MAX_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def validation_summary(detail: list[dict[str, Any]]) -> str:
    """A 422's `detail` list (pydantic's shape) as one line: `missing field 'numbers'; ...`."""
    parts = []
    for item in detail:
        where = [str(p) for p in item.get("loc") or [] if p not in ("body", "query", "path")]
        name = ".".join(where) or "body"
        kind = item.get("type")
        if kind == "missing":
            parts.append(f"missing field {name!r}")
        elif kind == "extra_forbidden":
            parts.append(f"unexpected field {name!r}")
        else:
            parts.append(f"field {name!r}: {item.get('msg')}")
    return "; ".join(parts)


class BodyError(Exception):
    """A request body the worker refuses; `status` is the HTTP status to answer with.

    `invalid`: the body is not JSON at all (callers with their own error shape for that use it).
    """

    def __init__(self, status: int, message: str, *, invalid: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.invalid = invalid


async def read_body(receive: Any, limit: int) -> bytes:
    """The whole ASGI request body; BodyError(413) as soon as it grows past `limit` bytes.

    Reading stops at the cap, so an oversized upload never sits in memory.
    """
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message.get("type") == "http.disconnect":
            raise BodyError(400, "the client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyError(413, f"request body too large (limit {limit} bytes)")
        chunks.append(chunk)
        more = bool(message.get("more_body"))
    return b"".join(chunks)


def parse_json(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse a JSON body; BodyError(400) when it is invalid, too deep or not UTF-8 encodable."""
    # Nesting can only exceed max_depth if there are that many brackets: one C-speed count
    # skips the walk for ordinary bodies.
    brackets = body.count(b"[") + body.count(b"{")
    if brackets > max_depth and _bracket_depth(body) > max_depth:
        raise BodyError(400, f"JSON body nested deeper than {max_depth} levels")
    try:
        value = json.loads(body)
    except RecursionError as exc:
        raise BodyError(400, f"JSON body nested deeper than {max_depth} levels") from exc
    except ValueError as exc:
        raise BodyError(400, f"invalid JSON body: {exc}", invalid=True) from exc
    # Surrogates arrive as \ud800-style escapes or as raw bytes (json.loads passes them).
    if b"\\u" in body or b"\xed" in body:
        _check_strings(value)
    return value


def _bracket_depth(body: bytes) -> int:
    """The deepest bracket nesting outside strings (strings removed, then brackets counted)."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _check_strings(value: Any) -> None:
    """BodyError(400) if any string (key or value) holds a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BodyError(
            400, f"JSON body holds a lone surrogate (\\u{ord(text[exc.start]):04x}): not valid text"
        ) from exc
