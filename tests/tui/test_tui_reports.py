"""How an operation's outcome reads (`flash_tui.reports`), from the engine's own report types."""

from __future__ import annotations

from engine.drift import Drift
from engine.operation_results import DeployReport
from engine.plan import Plan, PlanItem
from engine.provider import DeployOutcome, EndpointResult
from flash_tui.reports import Confirmed, deployed


def _plan(*actions: tuple[str, str]) -> Plan:
    return Plan(
        tuple(
            PlanItem(name, action, "LiveServerless", Drift(name, "new", "LiveServerless"), ())
            for name, action in actions
        )
    )


def test_a_failed_endpoint_is_named_with_its_error() -> None:
    outcome = DeployOutcome(
        ok=False,
        results=(
            EndpointResult("api", "create", True, elapsed_ms=812.0, url="http://127.0.0.1:1"),
            EndpointResult("worker", "create", False, error="import failed: boom"),
            EndpointResult("other", "update", False),
        ),
    )
    report = DeployReport(_plan(("api", "create"), ("worker", "create")), outcome)
    finished = deployed("deploy", report, Confirmed())
    assert not finished.ok
    assert finished.error == "2 failed — worker: import failed: boom; other: failed"


def test_a_deploy_and_an_undeploy_say_what_they_did() -> None:
    created = EndpointResult("api", "create", True, elapsed_ms=5.0)
    report = DeployReport(
        _plan(("api", "create")), DeployOutcome(True, (created,)), elapsed_ms=1500
    )
    finished = deployed("deploy", report, Confirmed())
    assert finished.ok and finished.summary == "1 created, 0 updated, 0 deleted in 1.5s"
    removed = DeployOutcome(True, (EndpointResult("api", "delete", True),))
    finished = deployed("undeploy", DeployReport(_plan(("api", "delete")), removed), Confirmed())
    assert finished.ok and finished.summary == "1 endpoint(s) undeployed"
    assert deployed("deploy", DeployReport(_plan(), cancelled=True), Confirmed()).cancelled
