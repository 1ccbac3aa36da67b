"""Log lines carry the time the worker wrote them, in order across endpoints.

A real local cloud runs two real workers (`alpha`, `beta`) of a small project; their routes print
what they are sent (stdout or stderr, or straight to the file descriptor like a C extension).
The `logs` CLI runs in subprocesses, the TUI through Pilot. The module fixtures stop the cloud
and every worker whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from headless import CLI, run_cli
from waiting import until, wait_for

from engine.home import Home
from engine.identity import app_slug, canonical_path
from engine.localcloud import logfiles
from engine.localcloud.discovery import read_state
from runtime.logline import StampedWriter, format_line, parse_line

FOLDER = "logtime"

SOURCE = '''"""Two endpoints whose routes write what they are sent to their log."""

import os
import sys

from runpod_flash import CpuInstanceType, Endpoint

alpha = Endpoint(name="alpha", cpu=CpuInstanceType.CPU3C_2_4)
beta = Endpoint(name="beta", cpu=CpuInstanceType.CPU3C_2_4)


def _write(text: str, stream: str) -> None:
    if stream == "fd":  # bypasses sys.stdout, as a C extension or a child process does
        os.write(1, (text + "\\n").encode())
    elif stream == "partial":  # a line written in pieces, flushed in the middle
        sys.stdout.write(text[:3])
        sys.stdout.flush()
        sys.stdout.write(text[3:] + "\\n")
    else:
        print(text, file=sys.stderr if stream == "stderr" else sys.stdout)


@alpha.post("/say")
def alpha_say(text: str, stream: str = "stdout") -> dict:
    """Write `text` on `stream`."""
    _write(text, stream)
    return {"said": text}


@alpha.get("/health")
def alpha_health() -> dict:
    """A user route on a load-balanced endpoint: its requests are not health probes."""
    return {"ok": True}


@beta.post("/say")
def beta_say(text: str, stream: str = "stdout") -> dict:
    """Write `text` on `stream`."""
    _write(text, stream)
    return {"said": text}
'''


@pytest.fixture(scope="module")
def env(localcloud_home: Path) -> dict[str, str]:
    out = dict(os.environ)
    out.update({"FLASH_TUI_HOME": str(localcloud_home), "COLUMNS": "200"})
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("logs") / FOLDER
    root.mkdir()
    (root / "main.py").write_text(SOURCE)
    return root


@pytest.fixture(scope="module")
def cli(env: dict[str, str], project: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(args, env, project=project)

    return run


@pytest.fixture(scope="module")
def workers(
    cli: Callable[..., subprocess.CompletedProcess[str]], localcloud_home: Path, project: Path
) -> Iterator[dict[str, httpx.Client]]:
    """Both endpoints deployed; an HTTP client (base URL and key set) per endpoint."""
    proc = cli("deploy", "--yes", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    app = app_slug(canonical_path(project))
    info = read_state(Home(localcloud_home))
    assert info is not None
    clients: dict[str, httpx.Client] = {}
    with httpx.Client(base_url=info.url, headers=info.headers(), trust_env=False) as api:
        for name in ("alpha", "beta"):
            record = api.get(f"/v1/apps/{app}/endpoints/{name}").json()
            key = api.get(f"/v1/apps/{app}/endpoints/{name}/key").json()["key"]
            clients[name] = httpx.Client(
                base_url=record["url"],
                headers={"Authorization": f"Bearer {key}"},
                trust_env=False,
                timeout=30,
            )
    try:
        yield clients
    finally:
        for client in clients.values():
            client.close()


def say(workers: dict[str, httpx.Client], endpoint: str, text: str, stream: str = "stdout") -> None:
    """Make `endpoint`'s worker write `text` (the response comes after the write)."""
    response = workers[endpoint].post("/say", json={"text": text, "stream": stream})
    assert response.status_code == 200, response.text


def logs_json(cli: Callable[..., Any], *args: str) -> list[dict[str, Any]]:
    proc = cli("logs", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout)["lines"])


def test_lines_of_two_endpoints_merge_in_write_order_with_the_workers_times(
    cli: Callable[..., Any], workers: dict[str, httpx.Client]
) -> None:
    before = time.time()
    written = [
        ("alpha", "w0", "stdout"),
        ("beta", "w1", "stdout"),
        ("alpha", "w2", "stderr"),
        ("beta", "w3", "stderr"),
        ("alpha", "w4", "stdout"),
        ("beta", "w5", "stdout"),
    ]
    for endpoint, text, stream in written:
        say(workers, endpoint, text, stream)
    after = time.time()

    lines = logs_json(cli, "--lines", "100")
    mine = [line for line in lines if line["text"] in {t for _, t, _ in written}]
    assert [(ln["endpoint"], ln["text"], ln.get("stream")) for ln in mine] == written, lines
    for line in mine:
        assert before <= line["at"] <= after, line
        # The ISO time is the same instant as the epoch seconds.
        assert abs(datetime.fromisoformat(line["time"]).timestamp() - line["at"]) < 1e-5
    stamps = [line["at"] for line in lines if line["at"] is not None]
    assert stamps == sorted(stamps), "lines are not in the order they were written"
    # The worker's own request lines carry their time too.
    requests = [ln for ln in lines if ln["text"].startswith("POST /say 200")]
    assert len(requests) >= len(written) and all(ln["at"] for ln in requests)
    # The text view shows each line's time (to the millisecond) before it.
    proc = cli("logs", "--lines", "100")
    first = mine[0]
    clock = datetime.fromtimestamp(first["at"]).strftime("%H:%M:%S.%f")[:-3]
    assert any(row.startswith(clock) and row.endswith("w0") for row in proc.stdout.splitlines()), (
        proc.stdout
    )


def test_unstamped_output_still_reads_in_its_place(
    cli: Callable[..., Any], workers: dict[str, httpx.Client]
) -> None:
    say(workers, "alpha", "u0")
    say(workers, "alpha", "u1-raw", "fd")
    say(workers, "alpha", "u2")
    lines = logs_json(cli, "alpha", "--lines", "6")
    texts = [line["text"] for line in lines]
    assert [t for t in texts if t.startswith("u")] == ["u0", "u1-raw", "u2"], texts
    raw = next(line for line in lines if line["text"] == "u1-raw")
    assert raw["at"] is None and raw["time"] is None  # no time rather than a wrong one


def test_partial_and_very_long_lines_are_one_stamped_line_each(
    cli: Callable[..., Any], workers: dict[str, httpx.Client]
) -> None:
    long = "L" * 300_000
    say(workers, "beta", "pieces-of-a-line", "partial")
    say(workers, "beta", long)
    lines = logs_json(cli, "beta", "--lines", "4")
    texts = [line["text"] for line in lines]
    # One line each; a line this long is handed out with its middle cut (bounded for screens).
    longs = [t for t in texts if t.startswith("LLLL")]
    assert "pieces-of-a-line" in texts and len(longs) == 1, [t[:40] for t in texts]
    assert "bytes cut" in longs[0] and longs[0].endswith("L" * 1000)
    assert all(line["at"] is not None for line in lines)


def test_the_writer_stamps_pieces_long_lines_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        out = StampedWriter(fd, "out", threading.RLock())
        out.write("one\ntwo")
        out.write(" halves\n")
        out.write("flushed ")
        out.flush()
        out.write("then ended\n")
        out.write("L" * 100_000)  # beyond the pending limit: written unfinished, then ended
        out.write("\n")
        out.buffer.write("é bytes\n".encode()[:1])  # a character split across writes
        out.buffer.write("é bytes\n".encode()[1:])
        out.write("pending")
        out.write_line("GET /x 200 1.0ms")  # the worker's own line does not join "pending"
        out.write(" rest\n")
    finally:
        os.close(fd)
    parsed = [parse_line(raw) for raw in path.read_text().split("\n")[:-1]]
    assert [(stream, text) for _, stream, text in parsed] == [
        ("out", "one"),
        ("out", "two halves"),
        ("out", "flushed then ended"),
        ("out", "L" * 100_000),
        ("out", "é bytes"),
        ("out", "GET /x 200 1.0ms"),
        ("out", "pending rest"),
    ]
    times = [at for at, _, _ in parsed]
    assert all(times) and times == sorted(times)


def test_log_files_from_before_the_stamp_still_read_in_order(tmp_path: Path) -> None:
    from engine.logs import merge_lines, parse_log_line

    old = ["[flash 10:00:00] starting worker on port 1", "listening on http://127.0.0.1:1"]
    new = [format_line("after", "out", 2e9).rstrip("\n")]
    alpha = [parse_log_line("alpha", raw) for raw in [*old, *new]]
    beta = [parse_log_line("beta", format_line("between", "err", 1e9).rstrip("\n"))]
    assert [(ln.source, ln.at) for ln in alpha[:2]] == [("flash", None), ("worker", None)]
    merged = merge_lines([alpha, beta])
    assert [ln.text for ln in merged] == [
        "[flash 10:00:00] starting worker on port 1",
        "listening on http://127.0.0.1:1",
        "between",
        "after",
    ]


def test_record_tails_read_without_stamps(tmp_path: Path) -> None:
    path = logfiles.log_path(tmp_path, "ep")
    logfiles.append_marker(path, "starting worker")
    fd = logfiles.open_for_worker(path)
    try:
        out = StampedWriter(fd, "err", threading.RLock())
        out.write("Traceback (most recent call last):\nRuntimeError: boom\n")
        os.write(fd, b"raw\n")
    finally:
        os.close(fd)
    assert logfiles.plain_lines(logfiles.tail_lines(path, 10)) == [
        "[flash] starting worker",
        "Traceback (most recent call last):",
        "RuntimeError: boom",
        "raw",
    ]


def test_lines_n_counts_only_the_lines_shown(
    cli: Callable[..., Any], workers: dict[str, httpx.Client]
) -> None:
    for text in ("n0", "n1", "n2"):
        say(workers, "alpha", text)
    # More probe lines than any fixed over-read would skip.
    for _ in range(120):
        assert workers["alpha"].get("/ping").status_code == 200

    texts = [line["text"] for line in logs_json(cli, "alpha", "-n", "3")]
    assert len(texts) == 3, texts
    assert texts[1] == "n2" and all(t.startswith("POST /say 200") for t in texts[::2]), texts
    proc = cli("logs", "alpha", "-n", "3")
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 3, proc.stdout
    assert proc.stdout.splitlines()[1].endswith("n2")
    with_probes = [line["text"] for line in logs_json(cli, "alpha", "-n", "3", "--probes")]
    assert len(with_probes) == 3 and all(t.startswith("GET /ping 200") for t in with_probes)


@pytest.fixture
def follow(env: dict[str, str], project: Path) -> Iterator[Callable[..., queue.Queue[str]]]:
    """Starts `flash-tui logs ... --follow`; its stdout lines arrive in the returned queue."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> queue.Queue[str]:
        proc = subprocess.Popen(
            [*CLI, "logs", *args, "--follow", "--project", str(project)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line.rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()
        return lines

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(10)


def next_line(lines: queue.Queue[str], timeout: float = 30.0) -> str:
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no output line within {timeout}s") from None


def test_follow_prints_the_last_lines_shown_then_new_ones(
    cli: Callable[..., Any],
    workers: dict[str, httpx.Client],
    follow: Callable[..., queue.Queue[str]],
) -> None:
    say(workers, "beta", "f0")
    say(workers, "alpha", "f1")
    for _ in range(120):  # hidden probe lines must not take the history's place
        assert workers["beta"].get("/ping").status_code == 200
    expected = logs_json(cli, "-n", "3")
    assert [line["text"] for line in expected][1] == "f1"

    lines = follow("-n", "3", "--json")
    history = [json.loads(next_line(lines)) for _ in range(3)]
    assert history == expected
    say(workers, "beta", "f2-live", "stderr")
    while True:
        line = json.loads(next_line(lines))
        if line["text"] == "f2-live":
            break
    assert line["endpoint"] == "beta" and line["stream"] == "stderr"
    assert line["at"] is not None and line["at"] > history[-1]["at"]


async def test_followed_lines_of_two_endpoints_come_in_write_order(
    project: Path, workers: dict[str, httpx.Client]
) -> None:
    from engine.localcloud.provider import LocalCloudProvider
    from engine.operations import Engine

    written = [(("alpha", "beta")[i % 2], f"o{i}") for i in range(12)]
    async with Engine(project, LocalCloudProvider(start=False)) as engine:
        stream = engine.follow(None, 1)
        await asyncio.wait_for(anext(stream), 30)  # the history: both streams are open
        for endpoint, text in written:
            await asyncio.to_thread(say, workers, endpoint, text)
        seen: list[Any] = []
        while len(seen) < len(written):
            line = await asyncio.wait_for(anext(stream), 30)
            if line.text.startswith("o"):
                seen.append(line)
        await stream.aclose()
    assert [(ln.endpoint, ln.text) for ln in seen] == written
    assert [ln.at for ln in seen] == sorted(ln.at for ln in seen)


def test_follow_in_text_prints_history_then_follows(
    workers: dict[str, httpx.Client], follow: Callable[..., queue.Queue[str]]
) -> None:
    say(workers, "alpha", "t0")
    lines = follow("alpha", "-n", "3")
    history = [next_line(lines) for _ in range(3)]
    assert history[1].endswith("t0") and history[2].split()[1] == "POST", history
    say(workers, "alpha", "t1-live")
    assert wait_for(lambda: next_line(lines).endswith("t1-live"), 30, "the live line")


async def test_tui_log_pane_shows_the_workers_time(
    project: Path, workers: dict[str, httpx.Client]
) -> None:
    from flash_tui.app import FlashApp
    from flash_tui.widgets.logs.log_view import LogView

    say(workers, "beta", "tui-mark")
    say(workers, "beta", "tui-raw", "fd")
    assert workers["alpha"].get("/health").status_code == 200  # a user route, not a probe
    # Probes: hidden in the pane, so they do not take the places of its first lines either.
    for _ in range(60):
        assert workers["alpha"].get("/ping").status_code == 200
    lines = await read_lines(project)
    written = next(line for line in lines if line.text == "tui-mark")
    assert written.at is not None
    # The app starts in a later second than the line was written: an arrival time would show.
    wait_for(lambda: time.time() >= int(written.at) + 1.2, 5, "the next second")
    app = FlashApp(project, "local", watch=False)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: app.scan_count >= 1 and app.connected, 60, "scan and cloud")
        pane = app.dashboard.query_one("#log-pane", LogView)

        def shown(text: str = "tui-mark") -> Any:
            return next((r for r in pane.rows if r.text == text), None)

        await until(pilot, lambda: shown() and shown("tui-raw"), 60, "both lines shown")
        assert shown().time == datetime.fromtimestamp(written.at).strftime("%H:%M:%S")
        assert shown("tui-raw").time.strip() == ""  # unstamped: no time rather than a wrong one
        # The pane hides what `logs` hides, and only that.
        await until(
            pilot,
            lambda: any(r.text.startswith("GET /health 200") for r in pane.rows),
            30,
            "a probe line",
        )
        assert not any(r.text.startswith("GET /ping") for r in pane.rows)


async def read_lines(project: Path) -> list[Any]:
    """The engine's typed lines (the TUI's model), read back in this process."""
    from engine.localcloud.provider import LocalCloudProvider
    from engine.operations import Engine

    async with Engine(project, LocalCloudProvider(start=False)) as engine:
        return await engine.logs(None, 50)
