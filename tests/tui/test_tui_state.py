"""DashboardState: the dashboard's rules as pure functions of the engine's own values."""

from __future__ import annotations

from engine.status import EndpointStatus
from flash_tui.screens.dashboard_state import HEALTH_HISTORY, DashboardState


def running(name: str, url: str, pid: int, status: str = "healthy") -> EndpointStatus:
    """An endpoint the target reports as running on the worker (url, pid)."""
    return EndpointStatus(
        name=name,
        resource_type="LiveServerless",
        status=status,
        drift="in_sync",
        url=url,
        pid=pid,
        in_code=True,
        deployed=True,
    )


def test_a_new_worker_incarnation_starts_a_fresh_sparkline() -> None:
    state = DashboardState(project="p").with_statuses([running("web", "http://a", 1)])
    for latency in (1.0, 2.0):
        new = state.with_sample("web", True, latency, "http://a")
        assert new is not None
        state = new
    assert state.samples["web"] == (1.0, 2.0)
    assert state.with_statuses([running("web", "http://a", 1)]).samples["web"] == (1.0, 2.0)
    restarted = state.with_statuses([running("web", "http://b", 2)])
    assert "web" not in restarted.samples
    # A probe of the old worker that lands late is not the new one's health.
    assert restarted.with_sample("web", True, 9.0, "http://a") is None


def test_retired_endpoints_probes_are_ignored_until_deployed_again() -> None:
    state = DashboardState(project="p").with_statuses([running("web", "http://a", 1)])
    state = state.with_retired(["web"])
    assert state.with_sample("web", False, None, "http://a") is None
    gone = EndpointStatus(name="web", resource_type=None, status="not_deployed", drift="new")
    assert "web" in state.with_statuses([gone]).retired
    # Deployed again (and no undeploy running): its health is news again.
    assert "web" not in state.with_statuses([running("web", "http://a", 2)]).retired
    busy = DashboardState(project="p", busy="undeploy", retired=frozenset({"web"}))
    assert "web" in busy.with_statuses([running("web", "http://a", 1)]).retired


def test_history_is_bounded_and_failures_are_gaps() -> None:
    state = DashboardState(project="p").with_statuses([running("web", "http://a", 1)])
    for i in range(HEALTH_HISTORY + 5):
        new = state.with_sample("web", i % 2 == 0, float(i), "http://a")
        assert new is not None
        state = new
    samples = state.samples["web"]
    assert len(samples) == HEALTH_HISTORY
    assert samples[-1] == float(HEALTH_HISTORY + 4) and samples[-2] is None
    (row,) = state.rows(now=0.0)
    assert row.samples == list(samples)


def test_header_counts_and_compact_target() -> None:
    drifted = EndpointStatus(name="api", resource_type=None, status="healthy", drift="drifted")
    state = DashboardState(
        project="demo",
        manifest={"resources": {"api": {}, "worker": {}}},
        statuses={"api": drifted},
        busy="deploy",
        target="local (127.0.0.1:40123)",
    )
    summary, compact = state.header()
    assert summary == "demo · target: local (127.0.0.1:40123) · 2 endpoints · 1 drifted · deploy…"
    assert compact == "demo · local · 2 endpoints · 1 drifted · deploy…"


def test_the_table_keeps_the_endpoints_the_tree_keeps() -> None:
    from flash_tui.filtering import filter_manifest, filter_rows
    from flash_tui.widgets.dashboard.endpoints_table import EndpointRow

    manifest = {
        "resources": {
            "gpu": {"resource_type": "LiveServerless", "functions": [{"name": "infer"}]},
            "api": {
                "resource_type": "LiveLoadBalancer",
                "is_load_balanced": True,
                "functions": [{"name": "hello", "http_path": "/hello"}],
            },
        }
    }
    rows = [EndpointRow("api", type="LB"), EndpointRow("gpu", type="GPU"), EndpointRow("old")]
    for text in ("liveserverless", "infer", "/hello", "old"):
        tree, _ = filter_manifest(manifest, (), text, {})
        table = [r.name for r in filter_rows(rows, text, manifest)]
        assert table == [r.name for r in rows if r.name in tree["resources"] or r.name == text]
    assert [r.name for r in filter_rows(rows, "liveserverless", manifest)] == ["gpu"]


def test_a_sample_is_shown_stale_exactly_when_the_engine_says() -> None:
    """The dashboard only renders the engine's rule: stale once past the sample's
    `fresh_until`, with its age from when it was taken."""
    state = DashboardState(project="p").with_statuses([running("web", "http://a", 1)])
    sampled = state.with_sample("web", True, 1.0, "http://a", at=100.0, fresh_until=107.0)
    assert sampled is not None
    assert sampled.stale(107.0) == {}
    assert sampled.stale(110.0) == {"web": 10.0}
    (row,) = sampled.rows(110.0)
    assert row.stale_s == 10.0
    assert sampled.rows(106.0)[0].stale_s is None
