"""runtime.devapp: a project's main.py app in its own process, on this runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import psutil
from waiting import wait_for

APP = """
from fastapi import FastAPI
import tetra_rp

app = FastAPI()


@app.get("/sdk")
def sdk() -> dict:
    return {"shim": getattr(tetra_rp, "__flash_tui_shim__", False)}
"""

# A parent that starts the app, says its pid and port, then waits to be killed.
_PARENT = """
import subprocess, sys
child = subprocess.Popen(
    [sys.executable, "-m", "runtime.devapp", "--project", sys.argv[1], "--port", "0"],
    stdout=subprocess.PIPE, text=True,
)
print(child.pid, child.stdout.readline().strip(), flush=True)
child.stdout.readline()  # ready
print("ready", flush=True)
sys.stdin.read()
"""


def test_app_runs_on_our_sdk_and_ends_with_its_parent(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(APP)
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pid_text, listening = parent.stdout.readline().split(" ", 1)
        assert parent.stdout.readline().strip() == "ready"
        port = int(listening.rsplit(":", 1)[1])
        answer = httpx.get(f"http://127.0.0.1:{port}/sdk", timeout=10, trust_env=False)
        assert answer.json() == {"shim": True}
        refused = httpx.get(
            f"http://127.0.0.1:{port}/sdk", headers={"Host": "evil.example"}, trust_env=False
        )
        assert refused.status_code == 400
        child = psutil.Process(int(pid_text))
        parent.kill()
        parent.wait(10)
        wait_for(lambda: not child.is_running() or child.status() == "zombie", 10, "app exits")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)


def test_an_app_that_fails_to_import_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("from fastapi import FastAPI\n\nboom()\napp = FastAPI()\n")
    done = subprocess.run(
        [sys.executable, "-m", "runtime.devapp", "--project", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: main.py:3: NameError: name 'boom' is not defined")
