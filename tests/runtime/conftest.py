"""Fixtures of the runtime tests that start worker processes by hand."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_harness import Worker


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path (a socket path must stay under ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="frt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def started() -> Iterator[list[Worker]]:
    """Workers a test starts; all stopped after it."""
    workers: list[Worker] = []
    yield workers
    for worker in workers:
        worker.stop()
