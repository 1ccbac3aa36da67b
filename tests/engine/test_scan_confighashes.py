"""The on-disk memo of config hashes (engine.scan.confighashes): an unchanged project's scan
works out no hash with the SDK's models; a changed config, a new runtime, a corrupt or foreign
memo all fall back to computing, with the same result as a scan without any memo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from projectfiles import copy_example

from engine.scan import Scanner
from engine.scan.confighashes import ConfigHashes, config_hash_store, runtime_stamp


def _hashes(manifest: dict[str, Any]) -> dict[str, str | None]:
    return {name: r.get("config_hash") for name, r in manifest["resources"].items()}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_example("quickstart", tmp_path / "quickstart")


def _scan(project: Path) -> tuple[dict[str, str | None], int]:
    """Config hashes of a fresh scanner's scan, and how many it computed with the models."""
    scanner = Scanner(project, hash_store=config_hash_store(project))
    result = scanner.scan()
    return _hashes(result.manifest), scanner.hashes.computed


def _fresh(project: Path) -> dict[str, str | None]:
    return _hashes(Scanner(project).scan().manifest)


def test_unchanged_project_scans_from_the_memo(project: Path) -> None:
    first, computed = _scan(project)
    assert computed == len(first) == 4
    assert config_hash_store(project).is_file()
    second, computed = _scan(project)
    assert computed == 0
    assert second == first == _fresh(project)


def test_a_changed_config_is_the_only_one_worked_out_again(project: Path) -> None:
    before, _ = _scan(project)
    main = project / "main.py"
    main.write_text(main.read_text().replace("workersMax=2", "workersMax=3"))
    after, computed = _scan(project)
    assert computed == 1
    assert after == _fresh(project)
    assert after["gateway"] != before["gateway"]
    assert {k: v for k, v in after.items() if k != "gateway"} == {
        k: v for k, v in before.items() if k != "gateway"
    }


def test_another_runtime_stamp_invalidates(tmp_path: Path) -> None:
    store = tmp_path / "memo.json"
    config = {"name": "w", "workersMax": 2}
    old = ConfigHashes(store, stamp="a" * 64)
    expected = old.get("CpuLiveServerless", config)
    old.save()
    assert old.computed == 1
    same = ConfigHashes(store, stamp="a" * 64)
    assert same.get("CpuLiveServerless", config) == expected and same.computed == 0
    new = ConfigHashes(store, stamp="b" * 64)
    assert new.get("CpuLiveServerless", config) == expected and new.computed == 1
    new.save()
    assert json.loads(store.read_text())["stamp"] == "b" * 64


def test_the_stamp_is_the_hashing_code(project: Path) -> None:
    """The default stamp digests the runtime's hashing modules: stable within an install."""
    assert runtime_stamp() == runtime_stamp()
    _scan(project)
    assert json.loads(config_hash_store(project).read_text())["stamp"] == runtime_stamp()


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xffnot json",
        b'{"format": 1, "stamp": "x", "hashes": []}',
        b"[1, 2, 3]",
        b'{"format": 99, "hashes": {}}',
        None,  # the right stamp, every entry a wrong (non-hex) hash
    ],
    ids=["garbage", "foreign-stamp", "not-an-object", "other-format", "bad-entries"],
)
def test_a_corrupt_or_foreign_memo_is_ignored(project: Path, content: bytes | None) -> None:
    expected, _ = _scan(project)
    store = config_hash_store(project)
    if content is None:
        memo = json.loads(store.read_text())
        memo["hashes"] = {key: "poisoned!" for key in memo["hashes"]}
        content = json.dumps(memo).encode()
    store.write_bytes(content)
    got, computed = _scan(project)
    assert got == expected == _fresh(project)
    assert computed == 4
    # and rewritten sound: the next scan computes nothing
    assert _scan(project) == (expected, 0)


def test_the_memo_holds_no_config_value(tmp_path: Path) -> None:
    store = tmp_path / "memo.json"
    hashes = ConfigHashes(store)
    secret = "sk-live-do-not-write-me"
    value, error = hashes.get("CpuLiveServerless", {"name": "w", "env": {"API_KEY": secret}})
    assert value and error is None
    hashes.save()
    assert secret not in store.read_text()


def test_errors_are_not_memoised(tmp_path: Path) -> None:
    store = tmp_path / "memo.json"
    bad = {"name": "w", "workersMax": "many"}
    first = ConfigHashes(store)
    value, error = first.get("CpuLiveServerless", bad)
    assert value is None and error and "workersMax" in error
    first.save()
    again = ConfigHashes(store)
    assert again.get("CpuLiveServerless", bad) == (value, error)
    assert again.computed == 1


def test_an_unwritable_store_is_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    hashes = ConfigHashes(blocker / "sub" / "memo.json")  # a file where a directory should be
    value, error = hashes.get("CpuLiveServerless", {"name": "w"})
    assert value and error is None
    hashes.save()
