"""Shared pytest fixtures (each stream appends its own, with unique names)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from fakes.runpod import FakeRunPod

# --- localcloud stream ------------------------------------------------------------------------
# Every flash-tui home a test module used; the session fixture stops their local clouds and kills
# any worker left over, whatever happened in the tests.
_LOCALCLOUD_HOMES: list[Path] = []


def _localcloud_cleanup(root: Path) -> None:
    from engine.home import Home
    from engine.localcloud.discovery import kill_home_workers, stop_cloud

    home = Home(root)
    with contextlib.suppress(Exception):
        stop_cloud(home, timeout=10.0)
    with contextlib.suppress(Exception):
        kill_home_workers(home)


@pytest.fixture(scope="session", autouse=True)
def localcloud_session_cleanup() -> Iterator[None]:
    """At the end of the session: no local cloud and no worker of a test home survives."""
    yield
    for root in _LOCALCLOUD_HOMES:
        _localcloud_cleanup(root)


@pytest.fixture(scope="module")
def localcloud_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh FLASH_TUI_HOME for one test module (set in os.environ while the module runs);
    its cloud and workers are stopped afterwards."""
    root = tmp_path_factory.mktemp("flash-home")
    _LOCALCLOUD_HOMES.append(root)
    previous = os.environ.get("FLASH_TUI_HOME")
    os.environ["FLASH_TUI_HOME"] = str(root)
    try:
        yield root
    finally:
        _localcloud_cleanup(root)
        if previous is None:
            os.environ.pop("FLASH_TUI_HOME", None)
        else:
            os.environ["FLASH_TUI_HOME"] = previous


@pytest.fixture
def cloud_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh FLASH_TUI_HOME for one test (`tmp_path/home`, set in os.environ while it runs);
    its cloud and workers are stopped afterwards."""
    root = tmp_path / "home"
    monkeypatch.setenv("FLASH_TUI_HOME", str(root))
    yield root
    _localcloud_cleanup(root)


@pytest.fixture
def fake_runpod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRunPod]:
    """A fake RunPod account for one test, its environment (key, API URLs) set in this process
    while it runs."""
    from fakes.runpod import FakeRunPod

    with FakeRunPod(tmp_path / "fake") as running:
        for name, value in running.env().items():
            monkeypatch.setenv(name, value)
        yield running


@pytest.fixture
def gate() -> Iterator[socket.socket]:
    """A port bound but not listening, closed after the test: a worker of `gated_project`
    (tests/projectfiles.py) waits until the test opens it with `listen()`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


# --- measure stream: no secret the suite created leaks into a file or an output it wrote -----
# Every flash-tui home a test used is recorded (FLASH_TUI_HOME at each test's teardown, and
# every home under the session's basetemp at the end) with the token and endpoint keys it held;
# at the end of the session every file under basetemp, every repository file written during
# the session and every captured output is searched for them. A hit fails the session.
_SECRET_SCAN = pytest.StashKey["SecretScan"]()
_SESSION_START = pytest.StashKey[float]()
_WORKER_SCANS = pytest.StashKey[list[dict[str, Any]]]()


@pytest.hookimpl(wrapper=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> Generator[None, int, int]:
    """`-n auto` (the default): two workers per core xdist finds, at most `--maxprocesses` (4);
    `PYTEST_XDIST_AUTO_NUM_WORKERS` still decides when set.

    A test here spends most of its time waiting on the processes and sockets it starts (a
    cloud, workers, the CLI): with one worker per core, 2 cores were only about 60% busy.
    """
    found = yield
    return found if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") else 2 * found


def pytest_configure(config: pytest.Config) -> None:
    import time

    from secret_scan import SecretScan

    config.stash[_SECRET_SCAN] = SecretScan()
    config.stash[_SESSION_START] = time.time()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Record the test's home (still set: fixtures are torn down after this) and its secrets."""
    scan = item.config.stash.get(_SECRET_SCAN, None)
    if scan is None:
        return
    home = os.environ.get("FLASH_TUI_HOME")
    if home and Path(home).is_dir():
        scan.add_home(Path(home))
    scan.refresh()  # undeploy deletes keys: collect them while they exist


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keep each phase's captured output and failure text for the secret scan."""
    report = yield
    scan = item.config.stash.get(_SECRET_SCAN, None)
    if scan is not None:
        for name, text in report.sections:
            scan.add_output(f"{item.nodeid} ({name})", text)
        if report.failed:
            scan.add_output(f"{item.nodeid} (failure, {report.when})", report.longreprtext)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when a secret of the suite's homes is found where it must not be.

    With pytest-xdist each worker scans its own temporary directory, homes, captured outputs
    and the files written under the repository (keys are collected in the worker that saw them,
    before undeploy deletes them) and hands its figures and leaks to the controller. The
    controller adds them up, searches only what no worker searched (the temporary directory of
    a worker that died, and then the repository again) and fails the run.
    """
    from secret_scan import find_homes

    scan = session.config.stash.get(_SECRET_SCAN, None)
    factory = getattr(session.config, "_tmp_path_factory", None)
    if scan is None or factory is None or session.config.option.collectonly:
        return
    basetemp = factory.getbasetemp()
    repo = Path(__file__).resolve().parent.parent
    searched = {Path(f["root"]) for f in session.config.stash.get(_WORKER_SCANS, [])}
    temps = [p for p in basetemp.iterdir() if p not in searched] if searched else [basetemp]
    for temp in temps:  # the temporary directories hold the suite's homes
        for home in find_homes(temp):
            scan.add_home(home)
    # The repository too, unless every worker searched it (with its own secrets).
    since = session.config.stash[_SESSION_START]
    leaks = scan.search([*((t, None) for t in temps), (repo, since)] if temps else [])
    secrets, homes = len(scan.secrets), len(scan.homes)
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports
        # execnet carries plain values only
        workeroutput["secret_scan"] = {
            "root": str(basetemp),
            "secrets": secrets,
            "homes": homes,
            "leaks": [str(leak) for leak in leaks],
        }
        return
    for figures in session.config.stash.get(_WORKER_SCANS, []):
        secrets += figures["secrets"]
        homes += figures["homes"]
        leaks = [*leaks, *figures["leaks"]]
    terminal = session.config.pluginmanager.get_plugin("terminalreporter")
    summary = (
        f"secret scan: {secrets} secrets of {homes} homes searched in "
        f"{basetemp}, files written under {repo} and captured outputs: {len(leaks)} leaks"
    )
    if terminal is not None:
        terminal.write("\n")  # the progress line has no newline yet
        terminal.write_line(summary, red=bool(leaks), green=not leaks)
        for leak in leaks:
            terminal.write_line(f"  SECRET LEAK: {leak}", red=True)
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: keep a finished worker's secret-scan figures (see sessionfinish)."""
    figures = getattr(node, "workeroutput", {}).get("secret_scan")
    if figures is not None:
        node.config.stash.setdefault(_WORKER_SCANS, []).append(figures)
