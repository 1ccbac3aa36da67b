"""Drift, reconcile and plan: pure functions, no processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.drift import FieldDiff, compute_drift, diff_configs, drift_of
from engine.plan import code_hash, local_resources, make_plan
from runtime.reconcile import reconcile
from runtime.resources import config_hash


def entry(rtype: str, config: dict, **extra: object) -> dict:
    """A manifest-like resource entry with its real config hash."""
    return {
        "resource_type": rtype,
        "config": config,
        "config_hash": config_hash(rtype, config),
        "unresolved": [],
        **extra,
    }


GPU = {"name": "gpu", "gpus": ["ADA_24"], "workersMax": 1, "env": {"MODEL": "a", "X": "1"}}
CPU = {"name": "cpu", "instanceIds": ["CPU3C_1_2"]}


# -- reconcile --------------------------------------------------------------------------------


def test_reconcile_classifies_every_name() -> None:
    local = {"a": {"config_hash": "1"}, "b": {"config_hash": "2"}, "c": {"config_hash": "3"}}
    deployed = {"b": {"config_hash": "2"}, "c": {"config_hash": "x"}, "d": {"config_hash": "4"}}
    diff = reconcile(local, deployed)
    assert diff.new == ["a"]
    assert diff.unchanged == ["b"]
    assert diff.changed == ["c"]
    assert diff.removed == ["d"]
    assert diff.has_changes


def test_reconcile_missing_hash_counts_as_changed_like_upstream() -> None:
    diff = reconcile({"a": {"config_hash": "1"}}, {"a": {}})
    assert diff.changed == ["a"] and not diff.unchanged


def test_reconcile_custom_hash_and_no_changes() -> None:
    diff = reconcile({"a": {"h": 1}}, {"a": {"h": 1}}, hash_of=lambda e: e.get("h"))
    assert diff.unchanged == ["a"] and not diff.has_changes
    assert diff.to_dict() == {"new": [], "changed": [], "removed": [], "unchanged": ["a"]}


# -- drift ------------------------------------------------------------------------------------


def test_diff_configs_reports_env_keys_and_ignores_explicit_defaults() -> None:
    changed = {**GPU, "workersMax": 3, "idleTimeout": 5, "env": {"MODEL": "b", "NEW": "y"}}
    diffs = diff_configs(GPU, changed, deployed_type="LiveServerless", local_type="LiveServerless")
    assert diffs == [
        FieldDiff("env.MODEL", "a", "b"),
        FieldDiff("env.NEW", None, "y"),
        FieldDiff("env.X", "1", None),
        FieldDiff("workersMax", 1, 3),
    ]  # idleTimeout=5 is the default: not a change


def test_drift_states() -> None:
    local = {
        "same": entry("LiveServerless", GPU),
        "changed": entry("LiveServerless", {**GPU, "workersMax": 5}),
        "fresh": entry("CpuLiveServerless", CPU),
        "vague": {
            "resource_type": "LiveServerless",
            "config": {"name": "vague", "workersMax": {"$unresolved": "compute()"}},
            "config_hash": None,
            "unresolved": ["workersMax"],
        },
    }
    deployed = {
        "same": entry("LiveServerless", GPU),
        "changed": entry("LiveServerless", GPU),
        "vague": entry("LiveServerless", {"name": "vague"}),
        "gone": entry("CpuLiveServerless", CPU),
    }
    drift = compute_drift(local, deployed)
    assert list(drift) == ["changed", "fresh", "gone", "same", "vague"]
    assert drift["same"].state == "in_sync"
    assert drift["fresh"].state == "new"
    assert drift["gone"].state == "orphaned"
    assert drift["vague"].state == "unknown" and drift["vague"].unresolved == ("workersMax",)
    assert drift["changed"].state == "drifted"
    assert [f.to_dict() for f in drift["changed"].fields] == [
        {"field": "workersMax", "deployed": 1, "local": 5}
    ]


def test_drift_reports_a_type_change() -> None:
    drift = drift_of(
        "x",
        entry("CpuLiveServerless", {"name": "x"}),
        entry("LiveServerless", {"name": "x"}),
    )
    assert drift.state == "drifted"
    assert drift.fields[0] == FieldDiff("resource_type", "LiveServerless", "CpuLiveServerless")


def test_drift_needs_one_side() -> None:
    with pytest.raises(ValueError):
        drift_of("x", None, None)


# -- plan -------------------------------------------------------------------------------------


def test_plan_actions_reasons_and_filters() -> None:
    local = {
        "same": entry("LiveServerless", GPU, code_hash="c1"),
        "code": entry("CpuLiveServerless", CPU, code_hash="new"),
        "cfg": entry("LiveServerless", {**GPU, "workersMax": 2}, code_hash="c1"),
        "fresh": entry("CpuLiveServerless", CPU),
        "stopped": entry("CpuLiveServerless", CPU),
    }
    deployed = {
        "same": {**entry("LiveServerless", GPU, code_hash="c1"), "status": "healthy"},
        "code": {**entry("CpuLiveServerless", CPU, code_hash="old"), "status": "healthy"},
        "cfg": {**entry("LiveServerless", GPU, code_hash="c1"), "status": "healthy"},
        "stopped": {**entry("CpuLiveServerless", CPU), "status": "failed"},
        "gone": {**entry("CpuLiveServerless", CPU), "status": "healthy"},
    }
    plan = make_plan(local, deployed)
    actions = {i.name: i.action for i in plan.items}
    assert actions == {
        "cfg": "update",
        "code": "update",
        "fresh": "create",
        "gone": "delete",
        "same": "unchanged",
        "stopped": "update",
    }
    assert plan.item("code").reasons == ("code changed",)
    assert plan.item("stopped").reasons == ("not running (failed)",)
    assert [c.field for c in plan.item("cfg").changes] == ["workersMax"]
    assert plan.counts() == {"create": 1, "update": 3, "delete": 1, "unchanged": 1}
    assert plan.to_dict()["items"][0]["changes"][0]["field"] == "workersMax"

    only = make_plan(local, deployed, names=["same"])
    assert [(i.name, i.action) for i in only.items] == [("same", "unchanged")]
    assert not only.has_changes
    forced = make_plan(local, deployed, names=["same"], force=True)
    assert forced.items[0].action == "update" and forced.items[0].reasons == ("forced",)
    keep = make_plan(local, deployed, prune=False)
    assert "gone" not in {i.name for i in keep.items}


def test_code_hash_follows_the_defining_files(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 1\n")
    manifest = {
        "resources": {
            "r": {"file": "a.py", "functions": [{"name": "f", "file": "b.py"}]},
            "s": {"functions": []},
        }
    }
    before = local_resources(manifest, tmp_path)
    assert before["s"]["code_hash"] is None
    (tmp_path / "b.py").write_text("y = 2\n")
    after = local_resources(manifest, tmp_path)
    assert before["r"]["code_hash"] != after["r"]["code_hash"]
    assert code_hash(tmp_path, manifest["resources"]["r"]) == after["r"]["code_hash"]


# -- code drift and unparsable sources (one drift computation for plan and status) ------------


def test_a_code_change_is_drift_with_a_code_row() -> None:
    deployed = {**entry("CpuLiveServerless", CPU, code_hash="a" * 64), "status": "healthy"}
    local = entry("CpuLiveServerless", CPU, code_hash="b" * 64)
    drift = drift_of("cpu", local, deployed)
    assert drift.state == "drifted"
    assert [f.to_dict() for f in drift.fields] == [
        {"field": "code", "deployed": "a" * 12, "local": "b" * 12}
    ]
    assert drift.code_changed and not drift.config_changed
    # The plan says the same thing, from the same drift.
    item = make_plan({"cpu": local}, {"cpu": deployed}).item("cpu")
    assert item is not None
    assert (item.action, item.drift, item.reasons) == ("update", drift, ("code changed",))


def test_a_config_change_is_not_also_reported_as_a_code_change() -> None:
    # The config lives in the file the code fingerprint covers: editing it changes both.
    deployed = entry("LiveServerless", GPU, code_hash="old")
    local = entry("LiveServerless", {**GPU, "workersMax": 2}, code_hash="new")
    drift = drift_of("gpu", local, deployed)
    assert drift.state == "drifted"
    assert [f.field for f in drift.fields] == ["workersMax"]
    item = make_plan({"gpu": local}, {"gpu": {**deployed, "status": "healthy"}}).item("gpu")
    assert item is not None and item.reasons == ("config changed",)


def test_an_unknown_code_fingerprint_is_not_drift() -> None:
    deployed = entry("CpuLiveServerless", CPU)  # deployed before code hashes existed
    local = entry("CpuLiveServerless", CPU, code_hash="x")
    assert drift_of("cpu", local, deployed).state == "in_sync"


def test_a_deployed_endpoint_whose_source_does_not_parse_is_not_orphaned() -> None:
    deployed = {
        "broken": {**entry("CpuLiveServerless", CPU), "status": "healthy"},
        "gone": {**entry("CpuLiveServerless", CPU), "status": "healthy"},
    }
    errors = {"workers/broken.py": 7}
    files = {"broken": "workers/broken.py", "gone": "workers/gone.py"}
    drift = compute_drift({}, deployed, parse_errors=errors, deployed_files=files)
    assert drift["broken"].state == "unparsable"
    assert drift["broken"].reason == "source does not parse: workers/broken.py:7"
    # A missing endpoint may have moved into the file that does not parse: say so, keep it.
    assert drift["gone"].state == "unparsable"
    assert "workers/broken.py:7" in drift["gone"].reason
    assert compute_drift({}, deployed, deployed_files=files)["gone"].state == "orphaned"

    plan = make_plan({}, deployed, parse_errors=errors, deployed_files=files)
    assert plan.counts()["delete"] == 0
    broken = plan.item("broken")
    assert broken is not None and broken.action == "unchanged"
    assert broken.reasons == ("source does not parse: workers/broken.py:7",)
    assert broken.to_dict()["drift"] == "unparsable"


# -- endpoint tables --------------------------------------------------------------------------


def test_a_stale_endpoint_table_is_drift_by_name_only() -> None:
    here = entry("LiveServerless", GPU)
    stale = {**here, "stale_table": ["cpu", "lb"]}
    drift = drift_of("gpu", here, stale)
    assert drift.state == "drifted"
    assert drift.fields == (FieldDiff("endpoint_table", "out of date: cpu, lb", "up to date"),)
    assert drift.table_stale == "out of date: cpu, lb"
    assert not drift.config_changed and not drift.code_changed
    plan = make_plan({"gpu": here}, {"gpu": stale})
    assert plan.names("update") == ["gpu"]
    assert plan.item("gpu").reasons == ("endpoint table out of date: cpu, lb",)
    assert drift_of("gpu", here, {**here, "stale_table": []}).state == "in_sync"
    # with a config change too, both are shown
    moved = {**stale, "config": {**GPU, "workersMax": 3}, "config_hash": "other"}
    fields = [f.field for f in drift_of("gpu", here, moved).fields]
    assert fields == ["workersMax", "endpoint_table"]


def test_stale_entries_name_the_endpoints_that_differ_never_their_values() -> None:
    from runtime.runpod_endpoints import endpoint_table, expected_tables, stale_entries

    peers = {"a": ("http://a", "ka"), "b": ("http://b", "kb"), "c": ("http://c", None)}
    tables = expected_tables(peers, callers=["a"])
    assert tables["b"] is None and tables["c"] is None
    want = tables["a"]
    assert want == endpoint_table("a", peers)
    assert stale_entries(want, want) == ()
    assert stale_entries(None, want) == ("b", "c")
    older = endpoint_table("a", {**peers, "b": ("http://b", "old"), "d": ("http://d", "kd")})
    assert stale_entries(older, want) == ("b", "d")
    assert stale_entries(want, None) == ("b", "c")  # a table where none belongs
    assert stale_entries("{not json", want) == ("b", "c")
    assert stale_entries("{not json", None) == ("FLASH_ENDPOINTS",)
