"""The detail pane in mothership mode: an endpoint's role, a child's provisioning and error."""

from __future__ import annotations

from engine.status import EndpointStatus
from flash_tui.widgets.dashboard.detail_pane import DetailPane, endpoint_detail


def _text(status: EndpointStatus) -> str:
    pane = DetailPane()
    pane.shown = endpoint_detail(status.name, None, status)
    return pane.plain_text(100)


def test_a_child_shows_its_provisioning_and_its_error() -> None:
    status = EndpointStatus(
        name="worker",
        resource_type="CpuLiveServerless",
        status="unhealthy",
        drift="in_sync",
        role="child",
        provisioning="failed",
        provisioning_error="not ready within 30s",
    )
    text = _text(status)
    assert "role: child · provisioning: failed" in text
    assert "not ready within 30s" in text


def test_the_mothership_says_what_it_is_not_orphaned() -> None:
    status = EndpointStatus(
        name="mothership",
        resource_type="CpuLoadBalancerSlsResource",
        status="healthy",
        drift="orphaned",
        role="mothership",
    )
    text = _text(status)
    assert "role: mothership" in text and "provisions the other endpoints" in text
    assert "no longer in the code" not in text


def test_direct_mode_shows_no_role() -> None:
    status = EndpointStatus(name="api", resource_type=None, status="healthy", drift="in_sync")
    assert "role" not in _text(status)
