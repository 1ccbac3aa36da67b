"""The headless CLI answers bad input, timeouts, refusals and interruptions with a message and an
exit status, never a traceback. Commands run as real subprocesses against a real local cloud."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from headless import CLI, run_cli

from engine.cli import main
from engine.home import Home
from engine.localcloud.client import CloudClient
from engine.localcloud.discovery import CloudError, CloudInfo, ensure_cloud

REPO = Path(__file__).resolve().parents[2]

APP_CODE = """
import asyncio

from tetra_rp import CpuLiveLoadBalancer, CpuLiveServerless, remote

api_config = CpuLiveLoadBalancer(name="msgapi")
queue_config = CpuLiveServerless(name="msgqueue")


@remote(api_config, method="POST", path="/sum")
async def total(numbers: list[int]) -> int:
    return sum(numbers)


@remote(api_config, method="POST", path="/nap")
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@remote(queue_config)
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.start = start

    def add(self, n: int) -> int:
        return self.start + n
"""

Run = Callable[..., subprocess.CompletedProcess[str]]


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


# -- argument values (no cloud needed) ------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "0", "-1", "inf", "soon"])
def test_timeout_must_be_a_positive_number(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["invoke", "POST /x", "--timeout", value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"--timeout: must be a positive number of seconds, got {value!r}" in err


def test_scan_errors_go_to_stderr(tmp_path: Path) -> None:
    wide = {**os.environ, "COLUMNS": "200"}
    missing = subprocess.run(
        [*CLI, "scan", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60, env=wide
    )
    assert missing.returncode == 1
    assert missing.stdout == "" and "is not a directory" in missing.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "main.py").write_text("from tetra_rp import remote\n\n@remote(\ndef f(:\n")
    proc = subprocess.run(
        [*CLI, "scan", str(broken)], capture_output=True, text=True, timeout=60, env=wide
    )
    assert proc.returncode == 1
    assert "scan-syntax-error" in proc.stderr and "scan-syntax-error" not in proc.stdout


def test_counts_are_singular_for_one(tmp_path: Path) -> None:
    root = tmp_path / "one"
    root.mkdir()
    (root / "main.py").write_text(
        "from tetra_rp import CpuLiveServerless, remote\n\n"
        'cfg = CpuLiveServerless(name="solo")\n\n'
        "@remote(cfg)\ndef f() -> int:\n    return 1\n"
    )
    (root / "bad.py").write_text("from tetra_rp import remote\n\n@remote(\n")
    proc = subprocess.run(
        [*CLI, "scan", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    out = proc.stdout + proc.stderr
    assert "1 endpoint," in out and "1 function" in out and "1 error," in out, out
    assert "(s)" not in out


def test_build_without_flash_code_says_so_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    (root / "main.py").write_text("print('no flash here')\n")
    for extra in ([], ["--json"]):
        proc = subprocess.run(
            [*CLI, "build", str(root), *extra], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 1
        assert "no Flash code" in proc.stdout + proc.stderr
        _no_traceback(proc)
        assert not (root / ".flash").exists()
        assert sorted(p.name for p in root.iterdir()) == ["main.py"]


def test_an_os_error_is_a_message(tmp_path: Path) -> None:
    root = tmp_path / "app"
    shutil.copytree(REPO / "examples" / "quickstart", root)
    (root / ".flash").write_text("a file where the build directory goes\n")
    for extra in ([], ["--json"]):
        proc = subprocess.run(
            [*CLI, "build", str(root), *extra], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 1
        _no_traceback(proc)
        assert "File exists" in proc.stdout + proc.stderr and ".flash" in proc.stdout + proc.stderr


# -- against a local cloud ------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("climsg") / "climsgapp"
    root.mkdir()
    (root / "main.py").write_text(APP_CODE)
    return root


@pytest.fixture(scope="module")
def cli_env(localcloud_home: Path) -> dict[str, str]:
    return {**os.environ, "FLASH_TUI_HOME": str(localcloud_home), "COLUMNS": "200"}


@pytest.fixture(scope="module")
def cli(cli_env: dict[str, str], project: Path) -> Iterator[Run]:
    def run(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return run_cli(args, cli_env, project=project, timeout=timeout)

    yield run
    run("undeploy", "--all", "--yes")


@pytest.fixture(scope="module")
def deployed(cli: Run) -> Run:
    proc = cli("deploy", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cli


def test_a_422_lists_the_fields(deployed: Run) -> None:
    proc = deployed("invoke", "POST /sum", "--data", '{"numbers": "x", "extra": 1}')
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "HTTP 422" in out
    assert "unexpected field 'extra'" in out and "field 'numbers'" in out, out
    assert "'loc'" not in out and "{'type'" not in out
    missing = deployed("invoke", "POST /sum", "--data", "{}")
    assert "missing field 'numbers'" in missing.stdout + missing.stderr


def test_init_must_be_an_object(deployed: Run) -> None:
    proc = deployed("invoke", "msgqueue:Counter.add", "--data", '{"init": 5, "n": 1}')
    assert proc.returncode == 1
    _no_traceback(proc)
    assert '"init" must be a JSON object of constructor arguments, got 5' in proc.stderr
    ok = deployed("invoke", "msgqueue:Counter.add", "--data", '{"init": {"start": 5}, "n": 1}')
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_a_timeout_says_timed_out_after(deployed: Run) -> None:
    proc = deployed("invoke", "POST /nap", "--data", '{"seconds": 5}', "--timeout", "0.5")
    assert proc.returncode == 1
    _no_traceback(proc)
    assert "timed out after 0.5 s" in proc.stdout + proc.stderr


# -- the confirmation prompt on a terminal ---------------------------------------------------


class Prompt:
    """`undeploy --all` running on a pseudo-terminal, waiting at its confirmation prompt."""

    def __init__(self, env: dict[str, str], project: Path) -> None:
        self._master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [*CLI, "undeploy", "--all", "--project", str(project)],
            env=env,
            # Everything on the terminal, which the test keeps reading: a full pipe or pty
            # buffer nobody drains would block the command and look like a hang.
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        self.screen = ""

    def _read(self, wait: float) -> bool:
        """Append what the terminal has within `wait` seconds; False when nothing came."""
        ready, _, _ = select.select([self._master], [], [], wait)
        if not ready:
            return False
        try:
            chunk = os.read(self._master, 4096)
        except OSError:  # the child closed the terminal
            return False
        self.screen += chunk.decode(errors="replace")
        return bool(chunk)

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} not shown; screen:\n{self.screen}"
            if not self._read(remaining) and self.proc.poll() is not None:
                assert text in self.screen, f"{text!r} not shown; screen:\n{self.screen}"

    def type(self, data: bytes) -> None:
        os.write(self._master, data)

    def finish(self, timeout: float = 30.0) -> int:
        """The exit status, reading the terminal while the command ends."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"still running after {timeout} s; screen:\n{self.screen}"
            self._read(min(remaining, 0.1))
        while self._read(0.05):
            pass
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self._master)


@pytest.fixture
def prompt(deployed: Run, cli_env: dict[str, str], project: Path) -> Iterator[Prompt]:
    session = Prompt(cli_env, project)
    try:
        session.wait_for("[y/N]")
        yield session
    finally:
        session.close()


def _still_deployed(cli: Run) -> None:
    proc = cli("status", "--no-probe")
    assert proc.returncode == 0, proc.stderr
    assert "not deployed" not in proc.stdout and "msgapi" in proc.stdout, proc.stdout


def test_ctrl_c_at_the_prompt_exits_130(prompt: Prompt, deployed: Run) -> None:
    prompt.proc.send_signal(signal.SIGINT)
    assert prompt.finish() == 130
    assert "nothing changed" in prompt.screen.lower()
    assert "Traceback" not in prompt.screen
    _still_deployed(deployed)


def test_ctrl_d_at_the_prompt_is_no_answer(prompt: Prompt, deployed: Run) -> None:
    prompt.type(b"\x04")  # Ctrl+D: end of input on a terminal
    assert prompt.finish() == 1
    assert "no answer, nothing changed" in prompt.screen
    assert "stdin is not a terminal" not in prompt.screen
    _still_deployed(deployed)


# -- the control plane's token --------------------------------------------------------------


def test_a_wrong_token_fails_at_once_with_a_clear_message(
    deployed: Run, localcloud_home: Path
) -> None:
    home = Home(localcloud_home)
    ensure_cloud(home)
    token = home.token_file.read_text()
    try:
        home.token_file.write_text("not-the-token\n")
        with pytest.raises(CloudError, match="rejected the token") as raised:
            ensure_cloud(home)
        assert "not-the-token" not in str(raised.value)
        proc = deployed("status", timeout=30)
        assert proc.returncode == 1
        assert "rejected the token" in proc.stderr
        assert "not-the-token" not in proc.stdout + proc.stderr
        _no_traceback(proc)
    finally:
        home.token_file.write_text(token)


async def test_a_control_plane_timeout_says_timed_out_after() -> None:
    # A listening socket that never answers: the connection is made, the reply never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        info = CloudInfo(os.getpid(), "127.0.0.1", port, 0.0, 0.0, token="secret-token")
        async with CloudClient(info, timeout=0.3) as client:
            with pytest.raises(CloudError, match="timed out after 0.3 s") as raised:
                await client.health()
    assert "secret-token" not in str(raised.value)
