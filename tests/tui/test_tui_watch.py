"""engine.watch: debounced batches of changed sources, ignore rules applied, prompt stop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from engine.watch import watch_project


async def _next_batch(it, timeout: float = 5.0) -> list[Path]:
    return await asyncio.wait_for(it.__anext__(), timeout)


async def test_save_is_reported_within_the_debounce_and_ignored_paths_are_not(
    tmp_path: Path,
) -> None:
    (tmp_path / "main.py").write_text("x = 1\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / "build").mkdir()
    (tmp_path / ".gitignore").write_text("build/\n")
    stop = asyncio.Event()
    it = watch_project(tmp_path, stop_event=stop).__aiter__()
    first = asyncio.ensure_future(_next_batch(it))
    await asyncio.sleep(0.3)  # let the native watcher register before writing
    # Ignored first: if they were reported they would arrive in (or before) the batch below.
    (tmp_path / ".venv" / "lib.py").write_text("y = 1\n")
    (tmp_path / "build" / "gen.py").write_text("z = 1\n")
    (tmp_path / "notes.txt").write_text("not python\n")
    (tmp_path / "main.py").write_text("x = 2\n")
    batch = await asyncio.wait_for(first, 5)  # a deadline; bench/tui.py measures the latency
    assert [p.name for p in batch] == ["main.py"]
    stop.set()
    # The iterator ends shortly after stop is set (rust_timeout bounds the wait).
    rest = [b async for b in it]
    assert rest == [] or all(p.name == "main.py" for b in rest for p in b)


async def test_burst_of_writes_arrives_as_one_batch(tmp_path: Path) -> None:
    names = {f"m{i}.py" for i in range(5)}
    stop = asyncio.Event()
    it = watch_project(tmp_path, stop_event=stop).__aiter__()
    first = asyncio.ensure_future(_next_batch(it))
    await asyncio.sleep(0.3)  # let the native watcher register before writing
    # An editor's save of several files: write a temporary file, rename it over the source,
    # touch its mode; then save one file again.
    for name in sorted(names):
        temporary = tmp_path / f".{name}.tmp"
        temporary.write_text(f"v = {name!r}\n")
        os.replace(temporary, tmp_path / name)
        os.chmod(tmp_path / name, 0o644)
    (tmp_path / "m0.py").write_text("v = 'again'\n")
    batch = await first
    assert {p.name for p in batch} == names
    # The next batch is the next save alone: no straggler of the burst made a second batch
    # (a straggler before it would be its own batch or arrive merged into it).
    following = asyncio.ensure_future(_next_batch(it))
    (tmp_path / "later.py").write_text("w = 1\n")
    assert [p.name for p in await following] == ["later.py"]
    stop.set()
    assert [b async for b in it] == []
