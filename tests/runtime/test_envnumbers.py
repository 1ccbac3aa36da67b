"""`runtime.envnumbers`: the one parser of numbers a worker, a mothership and its plane read."""

from __future__ import annotations

import pytest

from runtime.envnumbers import env_int, env_number
from runtime.mothership import DEFAULT_MANIFEST_TTL


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
