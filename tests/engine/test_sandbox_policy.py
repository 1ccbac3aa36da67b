"""The sandbox policy the engine hands a worker: what it grants, and what it never grants."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine.home import Home
from engine.localcloud.sandboxing import worker_policy, worker_state_dir


def _policy(home: Home, user_home: Path | None) -> tuple[list[str], list[str]]:
    build = home.builds_dir("app") / "b1"
    build.mkdir()
    worker_state_dir(home, "app", "ep").mkdir(parents=True)
    policy = worker_policy(home, "app", "ep", build, user_home)
    return list(policy.read), list(policy.write)


def test_policy_grants_the_workers_own_paths_only(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    read, write = _policy(home, tmp_path / "user")
    assert str(home.builds_dir("app") / "b1") in write
    assert str(worker_state_dir(home, "app", "ep")) in write
    assert str(home.endpoints_file("app").parent) in read
    assert sys.base_prefix in read
    inside = [p for p in read + write if Path(p).is_relative_to(home.root)]
    assert sorted(inside) == sorted(
        [
            str(home.builds_dir("app") / "b1"),
            str(worker_state_dir(home, "app", "ep")),
            str(home.endpoints_file("app").parent),
        ]
    )


def test_policy_never_grants_a_directory_holding_the_home(tmp_path: Path) -> None:
    # The test home is under /tmp (pytest's basetemp): /tmp would open all of it.
    home = Home(tmp_path / "home")
    _, write = _policy(home, None)
    if not home.root.resolve().is_relative_to(Path("/tmp").resolve()):
        pytest.skip("the test home is not under /tmp here")
    assert "/tmp" not in write


def test_policy_never_grants_a_directory_holding_the_users_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An import path entry that is the user's home itself would expose its dotfiles.
    user_home = tmp_path / "user"
    user_home.mkdir()
    monkeypatch.syspath_prepend(str(user_home))
    monkeypatch.syspath_prepend(str(tmp_path))
    read, write = _policy(Home(tmp_path / "home"), user_home)
    assert str(user_home) not in read + write
    assert str(tmp_path) not in read + write


def test_policy_drops_import_path_entries_inside_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(tmp_path / "home")
    monkeypatch.syspath_prepend(str(home.root / "localcloud"))
    read, _ = _policy(home, None)
    assert str(home.root / "localcloud") not in read


def test_a_copy_sharing_bundled_packages_may_read_them_but_not_write_them(
    tmp_path: Path,
) -> None:
    home = Home(tmp_path / "home")
    shared = tmp_path / "home" / "apps" / "app" / "runtimes" / ("f" * 64)
    (shared / "runtime").mkdir(parents=True)
    build = home.builds_dir("app") / "b1"
    build.mkdir()
    (build / "_flash_packages").symlink_to(Path("..", "..", "runtimes", "f" * 64))
    policy = worker_policy(home, "app", "ep", build, None)
    assert str(shared) in policy.read
    assert not any(Path(p).resolve() == shared for p in policy.write)
    inside = [p for p in policy.read if Path(p).is_relative_to(home.root)]
    assert sorted(inside) == sorted([str(shared), str(home.endpoints_file("app").parent)])
