"""Bounded texts: what user programs print can be any size; what the service stores and
returns (errors, events, log lines) is cut to a sane size, keeping the head and the tail (the
tail usually says what went wrong) around a "… N bytes cut …" marker."""

from __future__ import annotations

__all__ = ["bound_text"]


def bound_text(text: str, limit: int) -> str:
    """`text` cut to about `limit` UTF-8 bytes: its head and tail around "… N bytes cut …"."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text
    head = limit // 4
    tail = limit - head
    cut = len(data) - head - tail
    return (
        data[:head].decode("utf-8", errors="ignore")
        + f" … {cut} bytes cut … "
        + data[-tail:].decode("utf-8", errors="ignore")
    )
