"""The secret scan that ends every test session (tests/conftest.py, tests/secret_scan.py) finds a
planted leak, names the file without printing the secret, and leaves the places where
secrets live by design alone."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from secret_scan import SecretScan, find_homes, home_secrets

from engine.home import Home, write_private
from engine.localcloud.store import Store

PLANT = "FLASH_TEST_PLANT_SECRET_LEAK"


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory outside the session's basetemp (its planted leaks must not fail the
    session's own scan), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="flash-secret-scan-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _make_home(root: Path) -> tuple[Home, str, str]:
    """A real home: a token file, a SQLite store with an endpoint key, an endpoints table."""
    home = Home(root)
    token, key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    write_private(home.token_file, token)
    store = Store(home.db_path)
    try:
        store.upsert_app("app", None)
        store.set_endpoint_key("app", "api", key)
        store.add_event("deployed", "api is up", app="app", endpoint="api")
    finally:
        store.close()
    table = {"endpoints": {"api": {"url": "http://127.0.0.1:1", "key": key}}}
    write_private(home.endpoints_file("app"), json.dumps(table))
    return home, token, key


def test_secrets_in_their_own_stores_are_not_leaks(scratch: Path) -> None:
    tmp_path = scratch
    home, token, key = _make_home(tmp_path / "home")
    (tmp_path / "home" / "apps" / "app" / "logs").mkdir(parents=True, exist_ok=True)
    (tmp_path / "home" / "apps" / "app" / "logs" / "api.log").write_text("GET /ping 200\n")
    assert find_homes(tmp_path) == {home.root.resolve()}
    assert home_secrets(home.root) == {token, key}
    scan = SecretScan()
    scan.add_home(home.root)
    assert scan.search([(tmp_path, None)]) == []


def test_planted_leaks_are_found_in_files_tables_and_outputs(scratch: Path) -> None:
    tmp_path = scratch
    home, token, key = _make_home(tmp_path / "home")
    log = tmp_path / "home" / "apps" / "app" / "logs" / "api.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"starting with key {key}\n")
    (tmp_path / "screen.svg").write_text(f"<svg><text>Bearer {token}</text></svg>")
    store = Store(home.db_path)
    try:
        store.add_event("oops", f"key was {key}", app="app")
    finally:
        store.close()
    scan = SecretScan()
    scan.add_home(home.root)
    scan.add_output("test_x (Captured stdout call)", f"curl -H 'Authorization: Bearer {key}'")
    leaks = {(leak.where, leak.secret) for leak in scan.search([(tmp_path, None)])}
    assert leaks == {
        (str(log), key),
        (str(tmp_path / "screen.svg"), token),
        (f"{home.db_path.resolve()} (a table other than endpoint_keys)", key),
        ("test_x (Captured stdout call)", key),
    }
    shown = "\n".join(str(leak) for leak in scan.search([(tmp_path, None)]))
    assert key not in shown and token not in shown and "api.log" in shown


def test_a_key_deleted_before_the_end_is_still_known(scratch: Path) -> None:
    tmp_path = scratch
    home, _, key = _make_home(tmp_path / "home")
    scan = SecretScan()
    scan.add_home(home.root)
    store = Store(home.db_path)
    try:
        store.delete_endpoint("app", "api")  # undeploy drops the key
    finally:
        store.close()
    home.endpoints_file("app").unlink()
    (tmp_path / "late.log").write_text(key)
    assert [leak.secret for leak in scan.search([(tmp_path, None)])] == [key]


@pytest.mark.skipif(not os.environ.get(PLANT), reason=f"runs only inside the test below ({PLANT})")
def test_planted_leak_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaks its home's token into a file and into captured output (run by the next test)."""
    home, token, _ = _make_home(tmp_path / "home")
    monkeypatch.setenv("FLASH_TUI_HOME", str(home.root))
    (tmp_path / "leaky-output.txt").write_text(f"token={token}\n")
    print(f"token={token}")


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_leak_fails_the_whole_pytest_session(tmp_path: Path, workers: str) -> None:
    """A real pytest run whose only test leaks exits non-zero and names the file, in one
    process and when an xdist worker found it."""
    basetemp = tmp_path / "inner"
    env = {k: v for k, v in os.environ.items() if k != "FLASH_TUI_HOME"}
    env[PLANT] = "1"
    tests_dir = Path(__file__).resolve().parent
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                f"{Path(__file__).resolve()}::test_planted_leak_case",
                "-p",
                "no:cacheprovider",
                f"--basetemp={basetemp}",
                "-n",
                workers,
            ],
            cwd=tests_dir.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        out = proc.stdout + proc.stderr
        assert "1 passed" in out, out[-2000:]
        assert proc.returncode == 1, out[-2000:]
        assert "SECRET LEAK" in out and "leaky-output.txt" in out, out[-2000:]
        assert "Captured stdout call" in out, out[-2000:]
        inner_token = next(basetemp.rglob("localcloud/token")).read_text().strip()
        assert inner_token not in out, "the leak report must not print the secret"
    finally:
        # The inner home's secrets must not trip this session's own scan.
        shutil.rmtree(basetemp, ignore_errors=True)
