"""The crash window rule: `crash_limit` crashes within `crash_window` seconds mark an endpoint
failed; older crashes don't count. No worker runs: the supervisor's crash handler records a
crash directly on a seeded record whose `crash_times` sit either side of the window."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from engine.home import Home
from engine.localcloud.settings import SupervisorSettings
from engine.localcloud.store import Store
from engine.localcloud.supervisor import Supervisor
from engine.localcloud.workers import Worker

APP, NAME = "app", "ep"
SETTINGS = SupervisorSettings(crash_limit=3, crash_window=60.0)


def _crash_with_history(tmp_path: Path, crash_times: list[float]) -> tuple[dict[str, Any], bool]:
    """Seed `crash_times`, report one more crash; returns the record and whether a restart
    was scheduled (the restart itself is cancelled: no worker is ever spawned)."""
    home = Home(tmp_path / "home")
    store = Store(home.db_path)
    try:
        store.upsert_app(APP, str(tmp_path))
        store.upsert_endpoint(APP, NAME, status="healthy", port=1, crash_times=crash_times)
        supervisor = Supervisor(home, store, SETTINGS)
        worker = Worker(app=APP, name=NAME, pid=999_999, create_time=0.0, port=1)

        async def crash() -> bool:
            # A crash schedules its restart on the running loop, so it needs one.
            supervisor.crashes.record(worker)
            scheduled = supervisor.restarts.pending(APP, NAME)
            supervisor.restarts.cancel(APP, NAME)
            return scheduled

        scheduled = asyncio.run(crash())
        record = store.get_endpoint(APP, NAME)
        assert record is not None
        return record, scheduled
    finally:
        store.close()


def test_crashes_older_than_the_window_are_not_counted(tmp_path: Path) -> None:
    now = time.time()
    # Many crashes, all just outside the window: this one is the first that counts.
    old = [now - 61.0 - i for i in range(10)]
    record, scheduled = _crash_with_history(tmp_path, old)
    assert record["status"] == "unhealthy" and scheduled
    assert len(record["crash_times"]) == 1
    assert record["crash_times"][0] == pytest.approx(time.time(), abs=30)


def test_crashes_inside_the_window_reach_the_limit(tmp_path: Path) -> None:
    now = time.time()
    # crash_limit - 1 recent crashes (plus old ones that don't count): this crash fails it.
    recent = [now - 30.0, now - 10.0]
    record, scheduled = _crash_with_history(tmp_path, [now - 120.0, *recent])
    assert record["status"] == "failed" and not scheduled
    assert record["crash_times"][:2] == recent and len(record["crash_times"]) == 3
