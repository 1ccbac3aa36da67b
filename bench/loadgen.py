"""The benchmarks' load generator: a minimal keep-alive HTTP/1.1 client on raw asyncio streams.

httpx's per-request overhead would cap the figures before the servers do; `run_requests_httpx`
measures with it on purpose (a typical Python client). Also the figures of a run (`Sample`) and
the body of a queue job (`qb_body`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle
import httpx


def _b64(value: Any) -> str:
    return base64.b64encode(cloudpickle.dumps(value)).decode()


def qb_body(function: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A `/run` or `/runsync` body calling `function` (the upstream job contract)."""
    return {
        "input": {
            "function_name": function,
            "execution_type": "function",
            "args": [_b64(a) for a in args],
            "kwargs": {k: _b64(v) for k, v in kwargs.items()},
        }
    }


def request_bytes(method: str, path: str, body: Any, headers: dict[str, str]) -> bytes:
    """One HTTP/1.1 keep-alive request."""
    data = json.dumps(body).encode() if body is not None else b""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(data)}"]
    if body is not None:
        lines.append("Content-Type: application/json")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


@dataclass
class Reply:
    """What one request got back."""

    index: int
    status: int  # 0: the connection broke
    body: bytes
    seconds: float


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    at = lower.find(b"content-length:")
    if at == -1:
        raise ConnectionError("response without content-length")
    length = int(lower[at + 15 : lower.find(b"\r\n", at)])
    body = await reader.readexactly(length)
    return int(head[9:12]), body, b"connection: close" in lower


async def run_requests(
    port: int,
    make: Callable[[int], bytes],
    count: int,
    concurrency: int,
    deadline_s: float = 600.0,
) -> tuple[list[Reply], float]:
    """Send `count` requests (`make(i)` builds the i-th) over `concurrency` connections."""
    next_index = [0]
    replies: list[Reply] = []
    stop_at = time.monotonic() + deadline_s

    async def connection() -> None:
        reader = writer = None
        try:
            while next_index[0] < count and time.monotonic() < stop_at:
                index = next_index[0]
                next_index[0] += 1
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                started = time.perf_counter()
                try:
                    writer.write(make(index))
                    status, body, close = await _read_reply(reader)  # type: ignore[arg-type]
                except (ConnectionError, asyncio.IncompleteReadError, OSError):
                    status, body, close = 0, b"", True
                replies.append(Reply(index, status, body, time.perf_counter() - started))
                if close:
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return replies, time.perf_counter() - started


@dataclass
class Sample:
    """Latency and throughput of one run."""

    p50: float
    p99: float
    rps: float
    errors: int


def sample_of(replies: list[Reply], elapsed: float) -> Sample:
    """p50/p99 (ms), requests/s and non-200 count of a run."""
    latencies = sorted(r.seconds for r in replies) or [0.0]
    return Sample(
        p50=latencies[len(latencies) // 2] * 1000,
        p99=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        rps=len(replies) / elapsed if elapsed else 0.0,
        errors=sum(1 for r in replies if r.status != 200),
    )


def median(samples: list[Sample]) -> Sample:
    """Median of each figure; errors are summed."""
    return Sample(
        p50=statistics.median(s.p50 for s in samples),
        p99=statistics.median(s.p99 for s in samples),
        rps=statistics.median(s.rps for s in samples),
        errors=sum(s.errors for s in samples),
    )


def fmt(sample: Sample) -> str:
    """One line of figures."""
    return (
        f"p50 {sample.p50:7.2f} ms  p99 {sample.p99:7.2f} ms  {sample.rps:7.0f} req/s  "
        f"{sample.errors} errors"
    )


async def run_requests_httpx(
    url: str, body: Any, headers: dict[str, str], count: int, concurrency: int
) -> tuple[list[Reply], float]:
    """Like `run_requests`, with an httpx.AsyncClient (a typical Python client) as generator."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    next_index = [0]
    replies: list[Reply] = []
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:

        async def loop() -> None:
            while next_index[0] < count:
                index = next_index[0]
                next_index[0] += 1
                started = time.perf_counter()
                try:
                    response = await client.post(url, json=body, headers=headers)
                    status, content = response.status_code, response.content
                except httpx.HTTPError:
                    status, content = 0, b""
                replies.append(Reply(index, status, content, time.perf_counter() - started))

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return replies, time.perf_counter() - started
