"""App identity: a project is its canonical path, never just its folder name.

Unit tests of the slug, then end to end on a real local cloud (CLI subprocesses, real workers):
two projects whose folders have the same name, in different parent directories, never see or
touch each other's endpoints.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from headless import cli_env, cli_for, json_of, run_cli
from waiting import wait_for

from engine.identity import app_slug, canonical_path, readable_name
from engine.localcloud.service import NAME_PATTERN
from engine.operations import Engine

FOLDER = "same"

ENDPOINT = '''"""A small CPU queue endpoint."""

from tetra_rp import CpuLiveServerless, remote

{var} = CpuLiveServerless(name="{name}")


@remote({var})
def {func}(x: int) -> int:
    return x + {offset}
'''


# -- the slug ---------------------------------------------------------------------------------


def test_same_folder_name_in_two_places_gives_two_keys(tmp_path: Path) -> None:
    one, two = tmp_path / "a" / "quickstart", tmp_path / "b" / "quickstart"
    assert app_slug(one) != app_slug(two)
    assert app_slug(one).startswith("quickstart-")
    assert app_slug(one) == app_slug(one)  # stable


@pytest.mark.parametrize(
    ("folder", "readable"),
    [
        ("проект", "proekt"),
        ("Café au lait", "Cafe-au-lait"),
        ("数据", "ShuJu"),
        ("my_app", "my_app"),
    ],
)
def test_non_ascii_folders_stay_readable(tmp_path: Path, folder: str, readable: str) -> None:
    assert readable_name(folder) == readable
    slug = app_slug(tmp_path / folder)
    assert slug.startswith(readable + "-")
    assert NAME_PATTERN.match(slug), slug


def test_two_non_ascii_folders_never_collapse_to_one_key(tmp_path: Path) -> None:
    keys = {app_slug(tmp_path / name) for name in ("проект", "数据", "データ", "🚀", "---")}
    assert len(keys) == 5
    assert all(NAME_PATTERN.match(k) for k in keys), keys
    assert not any(k.startswith("app-") for k in keys)


def test_engine_keys_the_app_by_canonical_path(tmp_path: Path) -> None:
    real = tmp_path / "real" / "proj"
    real.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert Engine(link).app == Engine(real / ".." / "proj").app == app_slug(canonical_path(real))


# -- end to end -------------------------------------------------------------------------------


def _write_project(root: Path, endpoints: dict[str, int]) -> Path:
    (root / "workers").mkdir(parents=True)
    (root / "workers" / "__init__.py").write_text("")
    for index, (name, offset) in enumerate(sorted(endpoints.items())):
        (root / "workers" / f"{name}.py").write_text(
            ENDPOINT.format(var=f"config_{index}", name=name, func=f"f_{name}", offset=offset)
        )
    return root


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("identity")
    first = _write_project(base / "one" / FOLDER, {"common": 1, "alpha": 2})
    second = _write_project(base / "two" / FOLDER, {"common": 10})
    return first, second


@pytest.fixture(scope="module")
def run(localcloud_home: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = cli_env(localcloud_home)

    def call(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(args, env, project=project)

    return call


def _status(run: Callable[..., Any], project: Path) -> dict[str, dict[str, Any]]:
    proc = run(project, "status", "--json", "--no-probe")
    assert proc.returncode == 0, proc.stderr
    return {e["name"]: e for e in json_of(proc)["endpoints"]}


def _deployed(run: Callable[..., Any], project: Path) -> dict[str, Any]:
    """`deploy --yes --json` of `project`, which must succeed: its report."""
    proc = run(project, "deploy", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    return json_of(proc)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_two_projects_with_the_same_folder_name_are_two_apps(
    run: Callable[..., Any], projects: tuple[Path, Path]
) -> None:
    first, second = projects
    assert _deployed(run, first)["app"] == app_slug(first.resolve())
    mine = _status(run, first)
    assert {n: e["drift"] for n, e in mine.items()} == {"alpha": "in_sync", "common": "in_sync"}

    # The second project sees only its own endpoint: nothing of the first is `orphaned`.
    theirs = _status(run, second)
    assert {n: (e["drift"], e["deployed"]) for n, e in theirs.items()} == {"common": ("new", False)}
    plan = json_of(run(second, "plan", "--json"))
    assert {i["name"]: i["action"] for i in plan["items"]} == {"common": "create"}
    assert plan["app"] != json_of(run(first, "plan", "--json"))["app"]


def test_deploying_and_undeploying_one_never_touches_the_other(
    run: Callable[..., Any], projects: tuple[Path, Path]
) -> None:
    first, second = projects
    assert run(first, "deploy", "--yes").returncode == 0  # a no-op after the test before
    before = _status(run, first)
    pids = {n: e["pid"] for n, e in before.items()}
    assert all(_alive(p) for p in pids.values()), before

    report = _deployed(run, second)
    assert [(r["name"], r["action"]) for r in report["results"]] == [("common", "create")]
    theirs = _status(run, second)
    assert set(theirs) == {"common"}
    assert theirs["common"]["pid"] not in pids.values()

    proc = run(second, "undeploy", "--all", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [i["name"] for i in json_of(proc)["plan"]["items"]] == ["common"]
    wait_for(lambda: not _alive(theirs["common"]["pid"]), 30, "their worker gone", interval=0.1)

    after = _status(run, first)
    assert {n: e["pid"] for n, e in after.items()} == pids
    assert all(_alive(p) for p in pids.values())
    assert {n: e["drift"] for n, e in after.items()} == {"alpha": "in_sync", "common": "in_sync"}
    assert set(_status(run, second)) == {"common"}  # in code, not deployed

    proc = run(first, "undeploy", "--all", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: not any(_alive(p) for p in pids.values()), 30, "workers gone", interval=0.1)


# -- one drift for plan and status: code changes, sources that do not parse -------------------


def test_code_change_is_drift_in_plan_and_status_alike(
    run: Callable[..., Any], projects: tuple[Path, Path]
) -> None:
    _, second = projects
    _deployed(run, second)
    source = second / "workers" / "common.py"
    source.write_text(source.read_text().replace("return x + 10", "return x + 11"))

    items = {i["name"]: i for i in json_of(run(second, "plan", "--json"))["items"]}
    assert (items["common"]["action"], items["common"]["reasons"]) == ("update", ["code changed"])
    assert items["common"]["drift"] == "drifted"
    status = _status(run, second)["common"]
    assert status["drift"] == "drifted"
    assert [f["field"] for f in status["drift_fields"]] == ["code"]
    assert items["common"]["changes"] == status["drift_fields"]
    text = run(second, "status", "--no-probe").stdout
    assert "drifted" in text and "code" in text


def test_a_source_that_does_not_parse_is_not_orphaned(
    run: Callable[..., Any], projects: tuple[Path, Path]
) -> None:
    _, second = projects
    assert run(second, "deploy", "--yes").returncode == 0
    before = _status(run, second)["common"]
    assert _alive(before["pid"])
    source = second / "workers" / "common.py"
    source.write_text(source.read_text() + "\ndef broken(:\n")
    line = source.read_text().splitlines().index("def broken(:") + 1

    status = _status(run, second)["common"]
    assert status["drift"] == "unparsable", status
    assert status["drift_reason"] == f"source does not parse: workers/common.py:{line}"
    text = run(second, "status", "--no-probe").stdout
    assert "unparsable" in text and f"workers/common.py:{line}" in text

    proc = run(second, "deploy", "--yes", "--json")
    assert proc.returncode == 1 and "syntax error" in proc.stdout + proc.stderr
    after = _status(run, second)["common"]
    assert after["deployed"] and after["pid"] == before["pid"] and _alive(after["pid"])

    proc = run(second, "undeploy", "--all", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: not _alive(before["pid"]), 30, "the worker gone", interval=0.1)


def test_the_dashboard_says_why_an_endpoint_is_unparsable() -> None:
    from hosts import endpoint_status
    from rich.console import Console

    from flash_tui.widgets.dashboard.detail_pane import endpoint_detail
    from flash_tui.widgets.dashboard.endpoints_table import EndpointRow, cells

    status = endpoint_status(
        "common",
        resource_type="CpuLiveServerless",
        drift="unparsable",
        drift_reason="source does not parse: workers/common.py:9",
        deployed=True,
    )
    console = Console(width=120, record=True)
    console.print(endpoint_detail("common", None, status))
    text = console.export_text()
    assert "unparsable" in text and "workers/common.py:9" in text and "orphaned" not in text
    assert str(cells(EndpointRow(name="common", drift="unparsable"))["drift"]) == "no parse"


# -- existing stores: apps keyed by folder name are re-keyed by project when known for sure ----


def _legacy_app(store: Any, home: Path, name: str, project: str | None, endpoint: str) -> Path:
    """An app as older versions recorded it: keyed by folder name, its files under that key."""
    app_dir = home / "apps" / name
    build = app_dir / "builds" / "b1"
    build.mkdir(parents=True)
    (app_dir / "logs").mkdir()
    (app_dir / "logs" / f"{endpoint}.log").write_text("served 12 requests\n")
    store.upsert_app(name, project)
    source = f"{project}/.flash/archive.tar.gz" if project else None
    store.record_build(name, "b1", source, str(build), {"resources": {}})
    store.upsert_endpoint(name, endpoint, resource_type="CpuLiveServerless", build_id="b1")
    store.upsert_endpoint(name, endpoint, build_path=str(build), status="healthy")
    store.set_endpoint_key(name, endpoint, "k-" + endpoint)
    store.put_manifest(name, "local", {"resources": {endpoint: {}}})
    store.add_event("deployed", "ok", app=name, endpoint=endpoint)
    return app_dir


def test_an_existing_store_is_re_keyed_where_the_project_is_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.localcloud import store as store_module
    from engine.localcloud.store import MIGRATIONS, Store

    home = tmp_path / "home"
    home.mkdir()
    known = str(tmp_path / "code" / "quickstart")
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:1])  # the version-1 schema
    old = Store(home / "cloud.db")
    _legacy_app(old, home, "quickstart", known, "api")
    _legacy_app(old, home, "mystery", None, "job")  # no recorded project
    # Two projects named `shared` deployed into one app: whose endpoint is whose is known,
    # but they cannot both be attached to one project.
    mixed = _legacy_app(old, home, "shared", str(tmp_path / "a" / "shared"), "one")
    build = mixed / "builds" / "b2"
    build.mkdir()
    old.record_build("shared", "b2", str(tmp_path / "b" / "shared/.flash/archive.tar.gz"), "", {})
    old.upsert_endpoint("shared", "two", resource_type="CpuLiveServerless", build_id="b2")
    old.upsert_endpoint("shared", "two", build_path=str(build), status="healthy")
    old.close()
    monkeypatch.undo()

    store = Store(home / "cloud.db")
    try:
        new = app_slug(known)
        apps = {a["name"]: a for a in store.list_apps()}
        assert set(apps) == {new, "mystery", "shared"}
        assert apps[new]["project_path"] == known and apps[new]["endpoints"] == 1
        record = store.get_endpoint(new, "api")
        assert record is not None and record["status"] == "healthy"
        assert record["build_path"] == str(home / "apps" / new / "builds" / "b1")
        assert Path(record["build_path"]).is_dir() and not (home / "apps" / "quickstart").exists()
        assert (home / "apps" / new / "logs" / "api.log").read_text() == "served 12 requests\n"
        assert store.endpoint_key(new, "api") == "k-api"
        assert store.get_manifest(new, "local") == {"resources": {"api": {}}}
        assert store.list_builds(new)[0]["path"] == record["build_path"]
        kinds = [e["kind"] for e in store.events(new)]
        assert kinds == ["deployed", "app_rekeyed"]

        # Not known for sure: kept as they were, running, and the event log says why.
        for name, endpoints in (("mystery", {"job"}), ("shared", {"one", "two"})):
            assert {e["name"] for e in store.list_endpoints(name)} == endpoints
            assert all(e["status"] == "healthy" for e in store.list_endpoints(name))
            assert (home / "apps" / name / "builds" / "b1").is_dir()
            kept = [e["message"] for e in store.events(name) if e["kind"] == "app_kept"]
            assert len(kept) == 1, store.events(name)
        assert "unknown" in store.events("mystery")[-1]["message"]
        assert "several projects" in store.events("shared")[-1]["message"]
    finally:
        store.close()


def _as_legacy(db: Path, apps_root: Path, key: str, legacy: str, *, provable: bool) -> None:
    """Rewrite a stopped cloud's store as older versions kept it: the app under `legacy`.

    Not `provable`: no project path recorded and the builds forgotten (what the store then
    knows of an app deployed by two same-named projects is no better).
    """
    old_dir, new_dir = apps_root / key, apps_root / legacy
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("UPDATE apps SET name = ? WHERE name = ?", (legacy, key))
            for table in ("endpoint_keys", "manifests", "events", "endpoints", "builds"):
                conn.execute(f"UPDATE {table} SET app = ? WHERE app = ?", (legacy, key))
            for column, table in (("build_path", "endpoints"), ("path", "builds")):
                conn.execute(
                    f"UPDATE {table} SET {column} = replace({column}, ?, ?)",
                    (str(old_dir) + os.sep, str(new_dir) + os.sep),
                )
            if not provable:
                conn.execute("UPDATE apps SET project_path = NULL WHERE name = ?", (legacy,))
                conn.execute("DELETE FROM builds WHERE app = ?", (legacy,))
        conn.execute("PRAGMA user_version = 1")
    finally:
        conn.close()
    old_dir.rename(new_dir)


def _legacy_record(home: Path, name: str) -> dict[str, Any] | None:
    from engine.localcloud.store import Store

    store = Store(home / "localcloud" / "cloud.db")
    try:
        return store.get_endpoint("legacy", name)
    finally:
        store.close()


@pytest.mark.parametrize("provable", [True, False], ids=["project-known", "project-unknown"])
def test_deployed_endpoints_survive_the_upgrade_of_an_older_store(
    tmp_path: Path, provable: bool
) -> None:
    from engine.home import Home
    from engine.localcloud.discovery import kill_home_workers, read_state, stop_cloud

    home = Home(tmp_path / "home")
    project = _write_project(tmp_path / "code" / "legacy", {"kept": 5})
    env = cli_env(home.root)

    cli = cli_for(env, project, timeout=180.0)

    def status() -> dict[str, Any]:
        proc = cli("status", "--json", "--no-probe")
        assert proc.returncode == 0, proc.stderr
        return json_of(proc)

    try:
        proc = cli("deploy", "--yes", "--json")
        assert proc.returncode == 0, proc.stderr
        key = json_of(proc)["app"]
        before = {e["name"]: e for e in status()["endpoints"]}["kept"]
        # The cloud dies (workers keep running), and its store is what older versions wrote.
        info = read_state(home)
        assert info is not None
        os.kill(info.pid, signal.SIGKILL)
        wait_for(lambda: not _alive(info.pid), 30, "the cloud gone", interval=0.1)
        _as_legacy(home.db_path, home.root / "apps", key, "legacy", provable=provable)

        if provable:  # attached to its project: same build, same key, serving
            wait_for(
                lambda: {e["name"]: e for e in status()["endpoints"]}["kept"]["deployed"],
                30,
                "kept deployed",
                interval=0.1,
            )
            wait_for(
                lambda: status()["endpoints"][0]["status"] == "healthy",
                30,
                "kept healthy",
                interval=0.1,
            )
            after = status()
            assert after["app"] == key and after["kept_apps"] == []
            kept = after["endpoints"][0]
            assert kept["drift"] == "in_sync" and kept["build_id"] == before["build_id"], kept
            proc = cli("invoke", "f_kept", "--data", '{"x": 1}', "--json")
            assert proc.returncode == 0 and "6" in proc.stdout, proc.stdout + proc.stderr
            assert {a["name"] for a in json_of(cli("cloud", "status", "--json"))["apps"]} == {key}
            return
        # Not known for sure: kept under its old key, still running, and pointed out.
        after = status()
        assert after["kept_apps"] == [{"name": "legacy", "project_path": None, "endpoints": 1}]
        assert {e["name"]: e["drift"] for e in after["endpoints"]} == {"kept": "new"}
        assert "legacy (1 endpoint(s))" in " ".join(cli("status", "--no-probe").stdout.split())
        record = wait_for(
            lambda: (r := _legacy_record(home.root, "kept")) and r["status"] == "healthy" and r,
            30,
            "the legacy record healthy",
            interval=0.1,
        )
        assert _alive(record["pid"]) and record["build_id"] == before["build_id"]
        apps = {
            a["name"]: a["endpoints"] for a in json_of(cli("cloud", "status", "--json"))["apps"]
        }
        assert apps == {"legacy": 1}
    finally:
        stop_cloud(home, timeout=10.0)
        kill_home_workers(home)
