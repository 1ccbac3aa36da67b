"""`runtime.envnumbers`: the one parser of numbers a worker, a mothership and its plane read."""

from __future__ import annotations

import asyncio

import pytest

from runtime.envnumbers import env_int, env_number
from runtime.mothership import DEFAULT_MANIFEST_TTL
from runtime.runpod_health import HEALTH_WAIT_ENV
from runtime.runpod_plane import RunPodControlPlane


def test_unset_is_the_default_and_below_the_minimum_is_the_minimum() -> None:
    assert env_number("FLASH_X", 7.5, environ={}) == 7.5
    assert env_number("FLASH_X", 7.5, environ={"FLASH_X": " 2 "}) == 2.0
    assert env_number("FLASH_X", 7.5, minimum=3, environ={"FLASH_X": "-1"}) == 3.0
    assert env_int("FLASH_X", 4, environ={"FLASH_X": "9.7"}) == 9


def test_a_bad_value_is_the_default_and_the_warning_names_variable_and_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        env_number(
            "FLASH_MANIFEST_TTL", DEFAULT_MANIFEST_TTL, environ={"FLASH_MANIFEST_TTL": "soon"}
        )
        == DEFAULT_MANIFEST_TTL
    )
    assert "FLASH_MANIFEST_TTL='soon' (not a number)" in capsys.readouterr().err


def test_the_plane_reads_its_health_wait_through_the_same_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {
        "RUNPOD_API_KEY": "rpa_" + "k" * 40,
        "RUNPOD_ENDPOINT_ID": "ep-1",
        "FLASH_APP": "a",
        "FLASH_ENV": "dev",
        "FLASH_ENVIRONMENT_ID": "env-1",
        "FLASH_RUNPOD_BUILD_ID": "build-1",
        "FLASH_RESOURCE_NAME": "mothership",
        HEALTH_WAIT_ENV: "later",
    }
    plane = RunPodControlPlane.from_env(env)
    asyncio.run(plane.aclose())
    assert f"{HEALTH_WAIT_ENV}='later' (not a number)" in capsys.readouterr().err
