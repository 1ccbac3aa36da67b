"""Endpoint status: one word list, and how a probe turns a stored status into what is reported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.drift import Drift, FieldDiff
from engine.health import HealthSample
from engine.provider import DeployedEndpoint
from engine.status import DEPLOYED, RUNNING, Status, endpoint_status

ROOT = Path(__file__).resolve().parents[2]


def deployed(status: str, url: str = "http://127.0.0.1:40001") -> DeployedEndpoint:
    return DeployedEndpoint(
        name="api",
        resource_type="CpuLiveLoadBalancer",
        is_load_balanced=True,
        status=status,
        url=url,
        pid=4242,
        restarts=2,
        started_at=1_700_000_000.0,
    )


def sample(ok: bool) -> HealthSample:
    return HealthSample(
        "api", ok, 2.0 if ok else None, 1_700_000_100.0, url="http://127.0.0.1:40001"
    )


DRIFT = Drift("api", "in_sync", "CpuLiveLoadBalancer")


def test_every_status_the_local_cloud_writes_is_a_status_word() -> None:
    # The supervisor and the store keep plain strings in SQLite; each must be one of the words.
    written: set[str] = set()
    for path in (ROOT / "engine" / "localcloud").rglob("*.py"):
        written |= set(re.findall(r"""status=["'](\w+)["']""", path.read_text(encoding="utf-8")))
    assert written, "no status written by the local cloud was found"
    assert written <= {s.value for s in Status}, written - {s.value for s in Status}


def test_running_and_deployed_sets() -> None:
    assert RUNNING == {"deploying", "healthy", "unhealthy"}
    assert DEPLOYED == {s.value for s in Status} - {"not_deployed"}
    assert RUNNING < DEPLOYED


@pytest.mark.parametrize(
    ("stored", "ok", "reported"),
    [
        ("healthy", True, "healthy"),
        ("healthy", False, "unhealthy"),
        ("unhealthy", True, "healthy"),
        ("deploying", True, "healthy"),
        ("deploying", False, "deploying"),  # still starting: a failed probe is not news yet
        ("stopped", True, "stopped"),  # not running: a probe does not decide
        ("failed", False, "failed"),
    ],
)
def test_a_probe_decides_the_status_of_a_running_endpoint(
    stored: str, ok: bool, reported: str
) -> None:
    status = endpoint_status("api", {"is_load_balanced": True}, deployed(stored), DRIFT, sample(ok))
    assert status.status == reported
    assert type(status.status) is str  # plain words in `status --json`
    if stored in RUNNING:
        assert status.health is not None and status.health.ok is ok
    else:  # no worker runs: an older probe is not its health now (no stale latency)
        assert status.health is None


def test_an_endpoint_only_in_code_is_not_deployed() -> None:
    drift = Drift("api", "new", "CpuLiveLoadBalancer")
    status = endpoint_status("api", {"is_load_balanced": True}, None, drift, None)
    assert status.status == Status.NOT_DEPLOYED
    assert (status.in_code, status.deployed, status.is_load_balanced) == (True, False, True)
    assert status.url is None and status.pid is None and status.restarts == 0


def test_field_diffs_stay_typed_and_serialise_as_before() -> None:
    diff = FieldDiff("workersMax", 1, 3)
    drift = Drift("api", "drifted", "CpuLiveLoadBalancer", (diff,))
    status = endpoint_status("api", {}, deployed("healthy"), drift, None)
    assert status.drift_fields == (diff,)
    data = status.to_dict()
    assert data["drift_fields"] == [{"field": "workersMax", "deployed": 1, "local": 3}]
    assert data["status"] == "healthy" and data["pid"] == 4242 and data["restarts"] == 2
