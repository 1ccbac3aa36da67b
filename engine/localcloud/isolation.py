"""What isolation the local cloud's workers really run with, and the line that says it.

The service's environment only tells what a worker started now would try (`FLASH_SANDBOX`,
the kernel's Landlock ABI); each worker applies its sandbox itself and says what it got in the
`x-flash-isolation` header of its `/ping` (runtime.sandbox). Status asks every running worker
and reports that, naming the workers that run with less than the others.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

import httpx

from engine.localcloud.wire import WorkerIsolation, WorkerIsolationList
from runtime.sandbox import ISOLATION_HEADER

if TYPE_CHECKING:  # the CLI's line needs no process machinery
    from engine.localcloud.workers import Worker

__all__ = ["UNKNOWN", "describe_isolation", "probe_isolation"]

UNKNOWN = "unknown"  # the worker's /ping did not say (no answer, or an older worker)
_PROBE_TIMEOUT = 2.0
_NAMED = 5  # workers named in the line before "and N more"


async def _ask(worker: Worker, http: httpx.AsyncClient) -> WorkerIsolation:
    try:
        response = await http.get(f"http://127.0.0.1:{worker.port}/ping", timeout=_PROBE_TIMEOUT)
        said = response.headers.get(ISOLATION_HEADER) or UNKNOWN
    except httpx.HTTPError:
        said = UNKNOWN
    return WorkerIsolation(app=worker.app, name=worker.name, pid=worker.pid, isolation=said)


async def probe_isolation(
    workers: Iterable[Worker], http: httpx.AsyncClient
) -> list[WorkerIsolation]:
    """Each live worker's own word on its isolation, ordered by app and name."""
    live = [w for w in workers if w.alive()]
    answers = await asyncio.gather(*(_ask(w, http) for w in live))
    return sorted(answers, key=lambda a: (a.app, a.name))


def describe_isolation(report: WorkerIsolationList) -> str:
    """One line: `landlock-v7 (6/6 workers)`; when they differ, the most common first and the
    others with their workers named (`none: app/cpu_worker`); with no worker running, what a
    new one would get."""
    workers = report.workers
    if not workers:
        return f"{report.default} (no workers running)"
    counts = Counter(w.isolation for w in workers)
    # The strongest isolation seen leads; ties and rarer levels follow with their workers.
    order = sorted(counts, key=lambda level: (level in ("none", UNKNOWN), -counts[level], level))
    head = order[0]
    line = f"{head} ({counts[head]}/{len(workers)} workers)"
    others = []
    for level in order[1:]:
        names = [f"{w.app}/{w.name}" for w in workers if w.isolation == level]
        shown = ", ".join(names[:_NAMED])
        if len(names) > _NAMED:
            shown += f" and {len(names) - _NAMED} more"
        others.append(f"{level}: {shown}")
    return line if not others else f"{line}; {'; '.join(others)}"
