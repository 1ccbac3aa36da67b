"""`RunPodControlPlane`'s failures against the RunPod contract fake (control plane only): what
may pass is `PlaneUnavailable` (the mothership retries it), a refusal is `PlaneError`, and no
message holds the key."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fakes.runpod import FakeRunPod

from runtime.control_plane import PlaneError, PlaneUnavailable
from runtime.mothership import own_registry_env
from runtime.runpod_health import HEALTH_WAIT_ENV, UNHEALTHY_GRACE_ENV
from runtime.runpod_plane import RunPodControlPlane


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeRunPod]:
    with FakeRunPod(tmp_path_factory.mktemp("fake-plane"), data_plane=False) as server:
        yield server


def _plane(fake: FakeRunPod, key: str | None = None) -> RunPodControlPlane:
    env = fake.env()
    return RunPodControlPlane.from_env(
        {
            **env,
            "RUNPOD_API_KEY": key or env["RUNPOD_API_KEY"],
            "RUNPOD_ENDPOINT_ID": "ep-mothership",
            "FLASH_APP": "shipapp",
            "FLASH_ENV": "staging",
            "FLASH_ENVIRONMENT_ID": "env-missing",
            "FLASH_RUNPOD_BUILD_ID": "build-1",
            "FLASH_RESOURCE_NAME": "mothership",
        }
    )


def _read(plane: RunPodControlPlane) -> Exception:
    async def attempt() -> Exception:
        try:
            await plane.read_state()
        except PlaneError as exc:
            return exc
        finally:
            await plane.aclose()
        raise AssertionError("read_state succeeded")

    return asyncio.run(attempt())


def test_a_rejected_key_is_a_refusal_naming_the_variable_not_the_key(fake: FakeRunPod) -> None:
    wrong = "rpa_" + "x" * 40
    error = _read(_plane(fake, wrong))
    assert not isinstance(error, PlaneUnavailable)
    assert "RUNPOD_API_KEY" in str(error) and wrong not in str(error)


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_and_5xx_are_worth_retrying(fake: FakeRunPod, status: int) -> None:
    fake.fail_next("flashAppByName", status=status, retry_after=0)
    error = _read(_plane(fake))
    assert isinstance(error, PlaneUnavailable) and f"HTTP {status}" in str(error)
    assert fake.pending_faults() == []


def test_a_graphql_error_is_a_refusal_and_redacts_the_key(fake: FakeRunPod) -> None:
    fake.fail_next("flashAppByName", graphql_error=f"bad input near {fake.api_key}")
    error = _read(_plane(fake))
    assert not isinstance(error, PlaneUnavailable)
    assert fake.api_key not in str(error) and "<redacted>" in str(error)


def test_an_environment_that_is_not_this_builds_is_left_alone(fake: FakeRunPod) -> None:
    """No app, or another active build: the mothership waits (retries), never writes."""
    error = _read(_plane(fake))
    assert isinstance(error, PlaneUnavailable)
    assert "not the environment's active build" in str(error)


def test_a_missing_variable_is_named(fake: FakeRunPod) -> None:
    with pytest.raises(ValueError, match="RUNPOD_ENDPOINT_ID is not set"):
        RunPodControlPlane.from_env({"RUNPOD_API_KEY": "k" * 8})


# What a mothership's template sets, without the optional URLs (their defaults apply).
_MOTHERSHIP_ENV = {
    "RUNPOD_API_KEY": "rpa_" + "k" * 40,
    "RUNPOD_ENDPOINT_ID": "ep-mothership",
    "FLASH_APP": "shipapp",
    "FLASH_ENV": "staging",
    "FLASH_ENVIRONMENT_ID": "env-1",
    "FLASH_RUNPOD_BUILD_ID": "build-1",
    "FLASH_RESOURCE_NAME": "mothership",
}


def test_a_mothership_without_an_lb_template_reads_its_manifest_at_the_default_host() -> None:
    env = _MOTHERSHIP_ENV
    plane = RunPodControlPlane.from_env(env)
    try:
        own = plane.url_of("ep-mothership", True)
    finally:
        asyncio.run(plane.aclose())
    registry = own_registry_env(env)
    assert own == "https://ep-mothership.api.runpod.ai"
    assert registry == {
        "FLASH_ENDPOINTS_URL": f"{own}/manifest",
        "FLASH_ENDPOINTS_TOKEN": env["RUNPOD_API_KEY"],
    }


def test_the_plane_reads_its_health_wait_with_the_runtimes_env_number_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plane = RunPodControlPlane.from_env({**_MOTHERSHIP_ENV, HEALTH_WAIT_ENV: "later"})
    asyncio.run(plane.aclose())
    assert f"warning: ignoring {HEALTH_WAIT_ENV}='later' (not a number)" in capsys.readouterr().err


def test_the_plane_reads_how_long_a_child_may_answer_unhealthy() -> None:
    graces = []
    for value in ("", "2.5", "0", "-1"):
        plane = RunPodControlPlane.from_env({**_MOTHERSHIP_ENV, UNHEALTHY_GRACE_ENV: value})
        asyncio.run(plane.aclose())
        graces.append(plane.site.unhealthy_grace)
    # One unhealthy answer is not enough to fail a child: a second at least.
    assert graces == [15.0, 2.5, 1.0, 1.0]
