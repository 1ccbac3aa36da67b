"""engine.plan: the call-graph warnings of deploy and undeploy plans."""

from __future__ import annotations

from engine.callgraph import CallEdge, CallGraph
from engine.plan import deploy_warnings, make_plan, undeploy_warnings

GRAPH = CallGraph.of(
    [
        CallEdge("gateway", "cpu_worker", "run", "process", "main.py", 10),
        CallEdge("gateway", "gpu_worker", "run", "infer", "main.py", 11),
        CallEdge("gateway", "cpu_worker", "top", "Analyzer.top", "main.py", 20),
    ]
)


def test_deploying_a_caller_without_its_callees_warns_per_missing_callee() -> None:
    (warning,) = deploy_warnings(GRAPH, ["gateway"], deployed=["gpu_worker"])
    assert (warning.kind, warning.caller, warning.callee) == (
        "callee_missing",
        "gateway",
        "cpu_worker",
    )
    assert warning.functions == ("Analyzer.top", "process")
    assert warning.message.startswith("gateway calls cpu_worker (Analyzer.top, process)")
    assert deploy_warnings(GRAPH, ["gateway", "cpu_worker"], deployed=["gpu_worker"]) == ()
    assert deploy_warnings(GRAPH, ["cpu_worker"], deployed=[]) == ()  # callees call nothing


def test_undeploying_a_callee_warns_only_about_callers_that_stay() -> None:
    (warning,) = undeploy_warnings(GRAPH, ["cpu_worker"], deployed=["gateway", "cpu_worker"])
    assert (warning.kind, warning.caller, warning.callee) == (
        "caller_left",
        "gateway",
        "cpu_worker",
    )
    assert warning.functions == ("Analyzer.top", "process")
    assert undeploy_warnings(GRAPH, ["cpu_worker", "gateway"], ["gateway", "cpu_worker"]) == ()
    assert undeploy_warnings(GRAPH, ["cpu_worker"], deployed=["cpu_worker"]) == ()


def test_make_plan_of_a_subset_carries_the_warnings() -> None:
    local = {
        name: {"resource_type": "CpuLiveServerless", "config": {}, "config_hash": "h"}
        for name in ("gateway", "cpu_worker", "gpu_worker")
    }
    plan = make_plan(local, {}, names=["gateway"], calls=GRAPH)
    assert [(w.caller, w.callee) for w in plan.warnings] == [
        ("gateway", "cpu_worker"),
        ("gateway", "gpu_worker"),
    ]
    assert plan.to_dict()["warnings"][0]["kind"] == "callee_missing"
    assert make_plan(local, {}, calls=GRAPH).warnings == ()
    assert make_plan(local, {}, names=["gateway"]).warnings == ()  # no graph, no warning
