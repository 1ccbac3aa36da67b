"""`process_started`: when a process started, read from /proc as psutil reads it, so that the
state file's start time and every check against it agree (finding the cloud imports no psutil)."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
from waiting import wait_for

from engine.localcloud.discovery import process_started


def test_the_start_time_is_psutils() -> None:
    for pid in (os.getpid(), os.getppid(), 1):
        assert process_started(pid) == psutil.Process(pid).create_time()


def test_a_zombie_or_a_gone_process_has_none() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        assert wait_for(
            lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE,
            timeout=30,
            what="the child to exit unreaped",
        )
        assert process_started(child.pid) is None
    finally:
        child.wait()
    assert process_started(child.pid) is None
