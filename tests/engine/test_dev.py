"""`flash-tui dev` on `examples/flash_dev`: upstream `flash run`'s routes answered by real workers
of a real local cloud, redeploys on save, Ctrl+C and --down. One dev process for the module."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from devprocess import DevProcess, copy_example
from projectfiles import without_torch
from waiting import wait_for

from engine.dev.routes import dev_routes
from engine.scan import scan_project


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return without_torch(copy_example("flash_dev", tmp_path_factory.mktemp("dev") / "flash_dev"))


@pytest.fixture(scope="module")
def dev(project: Path, localcloud_home: Path) -> Iterator[DevProcess]:
    with DevProcess.serving(project, localcloud_home) as process:
        yield process


def test_routes_follow_upstream_rule() -> None:
    manifest = scan_project(Path(__file__).resolve().parents[2] / "examples" / "flash_dev").manifest
    routes = {(r.method, r.path): r.call for r in dev_routes(manifest)}
    assert set(routes) == {
        ("POST", "/gpu_worker/runsync"),
        ("POST", "/cpu_worker/cpu_hello/runsync"),
        ("POST", "/cpu_worker/count_words/runsync"),
        ("POST", "/lb_worker/process"),
        ("GET", "/lb_worker/health"),
    }
    assert routes[("POST", "/cpu_worker/count_words/runsync")].endpoint == "word_counter"
    assert routes[("POST", "/lb_worker/process")].path == "/process"


def test_plan_summary_and_routes_are_printed(dev: DevProcess) -> None:
    assert dev.wait_line("plan: ") == "plan: 4 create, 0 update, 0 delete, 0 unchanged"
    assert "/cpu_worker/count_words/runsync" in "\n".join(dev.lines)


def test_queue_route_takes_input_or_the_bare_body(dev: DevProcess) -> None:
    wrapped = dev.post("/gpu_worker/runsync", {"input": {"input_data": {"message": "hi"}}})
    assert wrapped.status_code == 200, wrapped.text
    body = wrapped.json()
    assert body["status"] == "COMPLETED" and body["id"]
    assert body["output"]["message"] == "hi"
    bare = dev.post("/gpu_worker/runsync", {"input_data": {"message": "bare"}})
    assert bare.status_code == 200, bare.text
    assert bare.json()["output"]["message"] == "bare"


def test_each_function_of_a_multi_function_file_has_its_route(dev: DevProcess) -> None:
    hello = dev.post("/cpu_worker/cpu_hello/runsync", {"input": {"input_data": {}}})
    assert hello.json()["output"] == {"message": "Hello from CPU worker!"}
    counted = dev.post("/cpu_worker/count_words/runsync", {"input": {"text": "a b c d"}})
    assert counted.json()["output"] == {"words": 4}
    assert dev.post("/cpu_worker/runsync", {"input": {}}).status_code in (404, 405)


def test_lb_route_answers_under_its_prefix_and_calls_both_workers(dev: DevProcess) -> None:
    answer = dev.post("/lb_worker/process", {"text": "one two three"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["words"] == 3
    assert answer.json()["gpu"]["message"] == "3 words"
    assert dev.get("/lb_worker/health").json() == {"status": "healthy"}


def test_a_failing_job_answers_failed_with_the_reason(dev: DevProcess) -> None:
    answer = dev.post("/cpu_worker/count_words/runsync", {"input": {"text": 5}})
    assert answer.status_code == 500
    assert answer.json()["status"] == "FAILED" and "split" in answer.json()["error"]


def test_openapi_and_docs_list_every_route(dev: DevProcess) -> None:
    paths = dev.get("/openapi.json").json()["paths"]
    for path in (
        "/gpu_worker/runsync",
        "/cpu_worker/cpu_hello/runsync",
        "/cpu_worker/count_words/runsync",
        "/lb_worker/process",
        "/lb_worker/health",
    ):
        assert path in paths
    schema = paths["/cpu_worker/count_words/runsync"]["post"]["requestBody"]["content"]
    assert "text" in schema["application/json"]["schema"]["properties"]["input"]["properties"]
    assert dev.get("/docs").status_code == 200


def test_saving_one_worker_redeploys_exactly_that_endpoint(dev: DevProcess) -> None:
    before = {name: row["pid"] for name, row in dev.status().items()}
    assert all(before.values()), before
    worker = dev.project / "gpu_worker.py"
    line = dev.save(
        worker, worker.read_text().replace("Hello from GPU worker!", "Hello again"), "reloaded"
    )
    assert line.startswith("reloaded gpu_worker in ") and line.endswith(" s"), line
    answer = dev.post("/gpu_worker/runsync", {"input": {"input_data": {}}})
    assert answer.json()["output"]["message"] == "Hello again"
    after = {name: row["pid"] for name, row in dev.status().items()}
    assert after["gpu_worker"] != before["gpu_worker"]
    assert {n: p for n, p in after.items() if n != "gpu_worker"} == {
        n: p for n, p in before.items() if n != "gpu_worker"
    }


def test_a_route_called_in_a_loop_answers_throughout_a_reload(dev: DevProcess) -> None:
    """The new worker starts beside the old one and the server swaps once it is healthy."""
    worker = dev.project / "gpu_worker.py"
    text = worker.read_text(encoding="utf-8")
    default = re.compile(r'input_data\.get\("message", "([^"]*)"\)')
    match = default.search(text)
    assert match is not None, text
    old, new = match.group(1), f"{match.group(1)} (reloaded in a loop)"
    answers: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def call() -> None:
        with httpx.Client(base_url=dev.url, trust_env=False, timeout=60) as http:
            while not stop.is_set():
                response = http.post("/gpu_worker/runsync", json={"input": {"input_data": {}}})
                body = response.json() if response.status_code == 200 else {}
                answers.append((response.status_code, (body.get("output") or {}).get("message")))

    caller = threading.Thread(target=call)
    caller.start()
    try:
        wait_for(lambda: len(answers) >= 3, 30, "answers before the save")
        dev.save(worker, default.sub(f'input_data.get("message", "{new}")', text), "reloaded")
        wait_for(lambda: answers.count((200, new)) >= 3, 30, "answers of the new code")
    finally:
        stop.set()
        caller.join(60)
    assert {status for status, _ in answers} == {200}, answers
    messages = [message for _, message in answers]
    assert set(messages) == {old, new}, set(messages)
    # One swap: once the new code answered, the old one never did again.
    assert old not in messages[messages.index(new) :]


def test_bad_code_on_save_names_the_line_and_keeps_serving(dev: DevProcess) -> None:
    worker = dev.project / "cpu_worker.py"
    good = worker.read_text()
    saved_at = len(dev.lines)
    line = dev.save(worker, good + "\ndef broken(:\n", "not reloaded")
    tail = "\n".join(dev.lines[saved_at:])
    assert "cpu_worker.py" in line and "cpu_worker.py:17" in tail, tail
    counted = dev.post("/cpu_worker/count_words/runsync", {"input": {"text": "a b"}})
    assert counted.json()["output"] == {"words": 2}
    dev.save(worker, good, "no endpoint changed")


def test_ctrl_c_exits_0_without_traceback_and_workers_keep_running(dev: DevProcess) -> None:
    assert dev.interrupt() == 0
    output = "\n".join(dev.lines + dev.errors)
    assert "Traceback" not in output
    assert "keep running" in dev.lines[-1]
    rows = dev.status()
    assert all(row["status"] == "healthy" for row in rows.values()), rows


def test_down_undeploys_on_exit(project: Path, localcloud_home: Path) -> None:
    with DevProcess.serving(project, localcloud_home, "--down") as process:
        assert process.wait_line("plan: ").endswith("4 unchanged")
        assert process.interrupt() == 0
        assert "Traceback" not in "\n".join(process.lines + process.errors)
        assert process.lines[-1] == "stopped: 4 endpoints undeployed"
        wait_for(
            lambda: all(not row["deployed"] for row in process.status().values()),
            30,
            "every endpoint undeployed",
        )


def test_a_port_in_use_or_a_missing_project_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    from headless import run_cli

    env = {**os.environ, "FLASH_TUI_HOME": str(tmp_path / "home")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        done = run_cli(["dev", str(tmp_path), "--port", port], env, timeout=60)
    assert done.returncode == 1
    assert f"port {port} is in use: pick another with --port" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_cli(["dev", str(tmp_path / "nowhere"), "--port", "0"], env, timeout=60)
    assert done.returncode == 1 and "nowhere is not a directory" in done.stderr, done.stderr
