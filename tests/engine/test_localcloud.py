"""The local cloud without workers: home permissions, store, log files, service, discovery."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from waiting import wait_for

from engine.home import Home, write_private
from engine.localcloud import logfiles
from engine.localcloud import store as store_module
from engine.localcloud.client import CloudClient
from engine.localcloud.discovery import (
    CloudError,
    ensure_cloud,
    read_state,
    stop_cloud,
)
from engine.localcloud.provider import LocalCloudProvider
from engine.localcloud.store import MIGRATIONS, SCHEMA_VERSION, Store
from engine.localcloud.wire import (
    AppRecord,
    DeployEvent,
    DeployRequest,
    EndpointKey,
    PersistedManifest,
    ServiceHealth,
)
from engine.provider import AppSummary, Provider, ProviderError, get_provider
from runtime.logline import parse_line


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- home and store ---------------------------------------------------------------------------


def test_home_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASH_TUI_HOME", str(tmp_path / "h"))
    home = Home()
    assert home.root == (tmp_path / "h").resolve()
    assert mode(home.root) == 0o700 and mode(home.cloud_dir) == 0o700
    write_private(home.token_file, "secret")
    assert mode(home.token_file) == 0o600
    write_private(home.token_file, "other")  # atomic replace keeps the mode
    assert home.token_file.read_text() == "other" and mode(home.token_file) == 0o600
    assert mode(home.logs_dir("app")) == 0o700


def test_store_schema_keys_manifests_events(tmp_path: Path) -> None:
    store = Store(tmp_path / "cloud.db")
    assert store.schema_version == SCHEMA_VERSION
    assert mode(tmp_path / "cloud.db") == 0o600
    journal = store._query("PRAGMA journal_mode")[0][0]
    assert journal == "wal"

    store.upsert_app("app", "/p")
    record = store.upsert_endpoint(
        "app", "ep", resource_type="LiveServerless", config={"env": {"A": "1"}}, port=1234
    )
    assert record["status"] == "deploying" and record["config"] == {"env": {"A": "1"}}
    store.set_endpoint_key("app", "ep", "k-secret")
    assert store.endpoint_key("app", "ep") == "k-secret"
    listing = json.dumps(store.list_endpoints("app")) + json.dumps(store.get_endpoint("app", "ep"))
    assert "k-secret" not in listing
    assert store.list_apps()[0]["endpoints"] == 1

    store.put_manifest("app", "local", {"resources": {"a": {"x": 1}}})
    store.patch_manifest_resource("app", "local", "a", {"y": 2})
    store.patch_manifest_resource("app", "local", "b", {"z": 3})
    store.patch_manifest_resource("app", "local", "b", None)
    assert store.get_manifest("app", "local") == {"resources": {"a": {"x": 1, "y": 2}}}

    first = store.add_event("deployed", "ok", app="app", endpoint="ep")
    store.add_event("crashed", "boom", app="app", endpoint="ep", data={"exit_code": 1})
    events = store.events("app", since_id=first)
    assert [e["kind"] for e in events] == ["crashed"] and events[0]["data"] == {"exit_code": 1}

    store.delete_endpoint("app", "ep")
    assert store.get_endpoint("app", "ep") is None and store.endpoint_key("app", "ep") is None
    store.close()
    # Reopening migrates nothing and keeps the data.
    again = Store(tmp_path / "cloud.db")
    assert again.schema_version == SCHEMA_VERSION and again.get_manifest("app", "local")
    again.close()


def test_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "cloud.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        Store(path)


# A future migration with what a naive split on ";" gets wrong: a literal and a trigger body.
MIGRATION_V2 = """
    ALTER TABLE apps ADD COLUMN note TEXT NOT NULL DEFAULT 'a;b';
    CREATE TABLE app_audit (app TEXT NOT NULL, note TEXT NOT NULL);
    -- every new app is audited; the trigger body has its own semicolons
    CREATE TRIGGER apps_audit AFTER INSERT ON apps BEGIN
        INSERT INTO app_audit (app, note) VALUES (NEW.name, 'created; audited');
    END;
"""


def test_store_migrates_a_v1_database_keeping_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cloud.db"
    v1 = Store(path)
    v1.upsert_app("old", "/p")
    v1.add_event("deployed", "kept", app="old")
    v1.close()

    monkeypatch.setattr(store_module, "MIGRATIONS", (*MIGRATIONS, MIGRATION_V2))
    v2 = Store(path)
    try:
        assert v2.schema_version == len(MIGRATIONS) + 1
        assert v2._query("SELECT name, note FROM apps")[0][:] == ("old", "a;b")
        assert [e["message"] for e in v2.events("old")] == ["kept"]
        v2.upsert_app("new", "/q")  # the trigger fires
        assert v2._query("SELECT app, note FROM app_audit")[0][:] == ("new", "created; audited")
    finally:
        v2.close()


def test_a_failing_migration_leaves_the_database_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cloud.db"
    Store(path).close()
    broken = "CREATE TABLE half_done (x INTEGER); CREATE TABLE oops (;"
    monkeypatch.setattr(store_module, "MIGRATIONS", (*MIGRATIONS, broken))
    with pytest.raises(sqlite3.OperationalError):
        Store(path)
    monkeypatch.undo()
    again = Store(path)
    try:
        assert again.schema_version == len(MIGRATIONS)
        tables = {row[0] for row in again._query("SELECT name FROM sqlite_master")}
        assert "half_done" not in tables
    finally:
        again.close()


def test_log_files_rotate_tail_and_follow(tmp_path: Path) -> None:
    path = logfiles.log_path(tmp_path, "ep")
    fd = logfiles.open_for_worker(path)
    os.write(fd, b"".join(f"line {i}\n".encode() for i in range(100)))
    assert mode(path) == 0o600
    assert logfiles.tail_lines(path, 3) == ["line 97", "line 98", "line 99"]
    lines, offset = logfiles.read_new(path, 0)
    assert len(lines) == 100
    os.write(fd, b"partial")
    assert logfiles.read_new(path, offset) == ([], offset)
    os.write(fd, b" done\n")
    assert logfiles.read_new(path, offset)[0] == ["partial done"]
    assert logfiles.rotate_if_needed(path, max_bytes=100, keep=2)
    # The worker's O_APPEND descriptor keeps writing at the start of the truncated file.
    os.write(fd, b"after rotation\n")
    os.close(fd)
    assert path.read_text() == "after rotation\n"
    assert logfiles.tail_lines(path, 2) == ["partial done", "after rotation"]
    assert logfiles.read_new(path, 10_000)[0] == ["after rotation"]  # truncation detected
    logfiles.append_marker(path, "hello")
    assert parse_line(logfiles.tail_lines(path, 1)[0])[1:] == ("flash", "hello")
    logfiles.remove_logs(path)
    assert not list(tmp_path.glob("ep.log*"))


# -- the service ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloud(localcloud_home: Path):  # noqa: ANN201
    home = Home(localcloud_home)
    info = ensure_cloud(home)
    yield home, info
    stop_cloud(home)


def test_service_is_discovered_and_private(cloud) -> None:  # noqa: ANN001
    home, info = cloud
    assert info.host == "127.0.0.1"
    again = ensure_cloud(home)
    assert again.pid == info.pid  # found, not started twice
    for path in (home.token_file, home.state_file, home.db_path, home.service_log):
        assert mode(path) == 0o600, path
    state = json.loads(home.state_file.read_text())
    assert set(state) >= {"pid", "port", "token_file", "started_at"}
    assert info.token not in home.state_file.read_text()
    assert info.token not in repr(info)


def test_api_requires_the_token(cloud) -> None:  # noqa: ANN001
    _, info = cloud
    routes = [
        ("GET", "/v1/health"),
        ("GET", "/v1/apps"),
        ("GET", "/v1/apps/x/endpoints"),
        ("GET", "/v1/apps/x/endpoints/y/key"),
        ("POST", "/v1/apps/x/deploy"),
        ("POST", "/v1/shutdown"),
        ("GET", "/v1/apps/x/environments/local/manifest"),
        ("GET", "/nonexistent"),
    ]
    with httpx.Client(base_url=info.url, trust_env=False) as client:
        for method, path in routes:
            assert client.request(method, path).status_code == 401, path
            bad = client.request(method, path, headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401, path
            assert info.token not in bad.text
        ok = client.get("/v1/health", headers=info.headers())
        assert ok.status_code == 200 and ok.json()["pid"] == info.pid


def test_state_manager_api(cloud) -> None:  # noqa: ANN001
    _, info = cloud
    base = "/v1/apps/sm/environments/prod/manifest"
    with httpx.Client(base_url=info.url, headers=info.headers(), trust_env=False) as client:
        assert client.get(base).status_code == 404
        manifest = {"version": "1.0", "resources": {"a": {"resource_type": "LiveServerless"}}}
        assert client.put(base, json=manifest).status_code == 200
        patched = client.patch(f"{base}/resources/a", json={"config_hash": "h", "status": "ok"})
        assert patched.json()["resources"]["a"] == {
            "resource_type": "LiveServerless",
            "config_hash": "h",
            "status": "ok",
        }
        client.patch(f"{base}/resources/b", json={"endpoint_url": "http://x"})
        client.delete(f"{base}/resources/a")
        assert set(client.get(base).json()["resources"]) == {"b"}
        assert client.put(base, content=b"not json").status_code == 422
        assert client.get("/v1/apps/..%2F..%2Fetc/endpoints").status_code in (404, 422)


def test_deploy_stream_speaks_the_wire_models(cloud) -> None:  # noqa: ANN001
    """Each NDJSON line carries only the fields its event sets, and parses as a DeployEvent."""
    _, info = cloud
    with httpx.Client(base_url=info.url, headers=info.headers(), trust_env=False) as client:
        body = DeployRequest().model_dump(mode="json")
        response = client.post("/v1/apps/wiretest/deploy", json=body)
        lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        assert lines[0] == {"type": "locked", "app": "wiretest"}
        assert set(lines[-1]) == {"type", "app", "ok", "results", "build_id", "elapsed_ms"}
        result = DeployEvent.model_validate(lines[-1])
        assert result.type == "result" and result.ok and result.results == []
        bad = client.post("/v1/apps/wiretest/deploy", json={"endpoints": [{"config": {}}]})
        assert bad.status_code == 422 and "name" in bad.json()["detail"]
        bad = client.post("/v1/apps/wiretest/undeploy", json={"names": 3})
        assert bad.status_code == 422 and "names" in bad.json()["detail"]


def test_the_client_reads_each_answer_into_its_wire_model(cloud) -> None:  # noqa: ANN001
    """health, apps, endpoints, events, builds and the persisted manifest come back as the
    wire models the service built them from; the manifest keeps exactly the keys sent."""
    home, info = cloud
    sent = {"version": "1.0", "project_name": "typed", "resources": {"api": {"x": 1}}}

    async def main() -> None:
        async with CloudClient(info) as client:
            health = await client.health()
            assert isinstance(health, ServiceHealth) and health.pid == info.pid
            await client.put_manifest("typed", "local", PersistedManifest.model_validate(sent))
            manifest = await client.get_manifest("typed", "local")
            assert manifest.resources == {"api": {"x": 1}}
            assert manifest.model_dump(exclude_unset=True) == sent
            apps = {a.name: a for a in await client.apps()}
            assert isinstance(apps["typed"], AppRecord) and apps["typed"].endpoints == 0
            assert await client.endpoints("typed") == []
            assert await client.events("typed") == []
            assert await client.builds("typed") == []
        provider = LocalCloudProvider(home, start=False)
        try:
            summaries = {a.name: a for a in await provider.apps()}
            assert summaries["typed"] == AppSummary("typed", None, 0)
        finally:
            await provider.close()

    asyncio.run(main())
    assert "k3y" not in repr(EndpointKey(key="k3y"))


def test_a_malformed_body_gets_422_naming_the_field(cloud) -> None:  # noqa: ANN001
    """Every body is parsed by its wire model: a bad one is refused before anything changes,
    with a one-line detail naming the field (and never echoing the value sent)."""
    _, info = cloud
    manifest = "/v1/apps/badbody/environments/local/manifest"
    cases = [
        ("POST", "/v1/apps/badbody/deploy", {"endpoints": [{"config": {}}]}, "endpoints.0.name"),
        ("POST", "/v1/apps/badbody/deploy", {"force": "sEcReT-vAlUe"}, "force"),
        ("POST", "/v1/apps/badbody/deploy", {"build": {"manifest": []}}, "build.manifest"),
        ("POST", "/v1/apps/badbody/undeploy", {"names": ["api", 7]}, "names.1"),
        ("PUT", manifest, {"resources": {"api": "sEcReT-vAlUe"}}, "resources.api"),
        ("PATCH", f"{manifest}/resources/api", ["sEcReT-vAlUe"], "body"),
        ("POST", "/v1/shutdown", {"stop_workers": "sEcReT-vAlUe"}, "stop_workers"),
    ]
    with httpx.Client(base_url=info.url, headers=info.headers(), trust_env=False) as client:
        for method, path, body, field in cases:
            answer = client.request(method, path, json=body)
            assert answer.status_code == 422, (path, body, answer.text)
            detail = answer.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail, detail
            assert f": {field}: " in detail, (field, detail)
            assert "sEcReT-vAlUe" not in detail
        # Not JSON at all, or no body where one is needed: the body itself is named.
        for method, path in [("POST", "/v1/apps/badbody/deploy"), ("PUT", manifest)]:
            answer = client.request(method, path, content=b"{not json")
            assert answer.status_code == 422 and ": body: " in answer.json()["detail"]
        answer = client.post("/v1/apps/badbody/undeploy", content=b"")
        assert answer.status_code == 422 and ": body: " in answer.json()["detail"]
        # Nothing was done: the service still runs, nothing was stored or deployed.
        health = client.get("/v1/health")
        assert health.status_code == 200 and health.json()["pid"] == info.pid
        assert client.get(manifest).status_code == 404
        assert client.get("/v1/apps/badbody/endpoints").json() == {"endpoints": []}


def test_second_service_for_the_same_home_exits(cloud) -> None:  # noqa: ANN001
    home, _ = cloud
    proc = subprocess.run(
        [sys.executable, "-m", "engine.localcloud", "--home", str(home.root)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 3 and "already running" in proc.stderr


def test_stale_state_after_sigkill_is_replaced(cloud) -> None:  # noqa: ANN001
    home, info = cloud
    os.kill(info.pid, signal.SIGKILL)
    wait_for(lambda: read_state(home) is None, 10, "stale state removed")  # dead pid: stale
    fresh = ensure_cloud(home)
    assert fresh.pid != info.pid
    assert fresh.token == info.token  # the token survives restarts
    result = stop_cloud(home)
    assert result.was_running and not result.forced
    assert read_state(home) is None and not home.state_file.exists()
    assert stop_cloud(home).was_running is False
    with pytest.raises(CloudError, match="not running"):
        ensure_cloud(home, start=False)


def test_get_provider_finds_providers_by_target_name(tmp_path: Path) -> None:
    provider = get_provider("local", home=Home(tmp_path / "home"))
    assert isinstance(provider, LocalCloudProvider) and provider.describe() is None
    runpod = get_provider("runpod", home=Home(tmp_path / "home"), env="staging")
    assert isinstance(runpod, Provider) and runpod.name == "runpod"
    assert runpod.describe() is None  # not connected: no I/O, no key needed yet
    with pytest.raises(
        ProviderError, match=r"unknown target 'nowhere' \(available: local, runpod\)"
    ):
        get_provider("nowhere")


async def test_the_local_cloud_prices_nothing(tmp_path: Path) -> None:
    """Costs are part of every provider's interface; the local cloud's are none."""
    provider = get_provider("local", home=Home(tmp_path / "home"))
    assert isinstance(provider, Provider)
    assert await provider.costs({"gpu": {"resource_type": "LiveServerless"}}) == {}


@pytest.mark.parametrize("server", ["local cloud", "dev server"])
def test_our_servers_answer_kept_alive_connections_without_nagle(server: str) -> None:
    # Without TCP_NODELAY on its connections a uvicorn server handed a socket waits for the
    # client's delayed ACK between a response's headers and its body: ~40 ms per request.
    import socket

    from engine.cli.dev import _bind
    from engine.localcloud.ports import listening_socket

    listening = listening_socket(0) if server == "local cloud" else _bind(0)
    with listening, socket.create_connection(listening.getsockname()):
        accepted, _ = listening.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
