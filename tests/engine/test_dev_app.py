"""`flash-tui dev` on `examples/tetra_app`: the project's own `main.py` FastAPI app runs in a
child process on our runtime, its `@remote` calls answered by the deployed endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from devprocess import DevProcess, copy_example
from projectfiles import without_torch

from engine.dev.app import find_app


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory, localcloud_home: Path) -> Iterator[DevProcess]:
    project = without_torch(
        copy_example("tetra_app", tmp_path_factory.mktemp("devapp") / "tetra_app")
    )
    with DevProcess.serving(project, localcloud_home) as process:
        yield process


def test_find_app_reads_main_py_statically(tmp_path: Path) -> None:
    assert find_app(tmp_path) is None
    (tmp_path / "main.py").write_text("import fastapi\napi = fastapi.FastAPI()\n")
    assert find_app(tmp_path) == ("main", "api")
    (tmp_path / "main.py").write_text("app = make()\n")
    assert find_app(tmp_path) is None


def test_main_app_route_chains_three_endpoints(dev: DevProcess) -> None:
    answer = dev.post("/classify", {"text": "Hello   World"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["text"] == "hello world"
    assert len(body["embedding"]) == 4 and body["label"] in ("positive", "negative")
    assert dev.post("/cpu/preprocess", {"text": "A  b"}).json() == {"text": "a b", "words": 2}


def test_main_app_and_endpoint_routes_are_both_listed(dev: DevProcess) -> None:
    paths = dev.get("/openapi.json").json()["paths"]
    for path in ("/classify", "/cpu/preprocess", "/gpu/embed", "/workers/gpu/endpoint/runsync"):
        assert path in paths
    answer = dev.post("/workers/gpu/endpoint/runsync", {"input": {"text": "x", "dims": 2}})
    assert answer.json()["status"] == "COMPLETED" and len(answer.json()["output"]) == 2


def test_saving_main_py_reloads_the_app(dev: DevProcess) -> None:
    main = dev.project / "main.py"
    line = dev.save(main, main.read_text().replace('"tetra_app"', '"tetra_app v2"'), "reloaded")
    assert line.startswith("reloaded main.py in "), line
    assert dev.get("/").json()["message"] == "tetra_app v2"


def test_a_main_py_that_fails_to_import_keeps_the_last_good_app(dev: DevProcess) -> None:
    main = dev.project / "main.py"
    good = main.read_text()
    line = dev.save(main, good + "\nundefined_name()\n", "main.py not reloaded")
    where = len(good.splitlines()) + 2
    assert f"main.py:{where}: NameError: name 'undefined_name'" in line, line
    assert dev.post("/classify", {"text": "still here"}).json()["text"] == "still here"
    dev.save(main, good, "reloaded main.py")


def test_ctrl_c_stops_the_app_too(dev: DevProcess) -> None:
    app_lines = [x for x in dev.lines if "main.py |" in x]
    assert dev.interrupt() == 0, dev.errors
    assert "Traceback" not in "\n".join(dev.errors), app_lines
