"""Every status, drift, plan and severity word has one style, shared by the CLI and the TUI."""

from __future__ import annotations

from typing import get_args

from engine.diagnostics import Severity
from engine.drift import DriftState
from engine.plan import PLAN_MARKS, PlanAction
from engine.status import Status
from engine.styles import DRIFT_STYLES, PLAN_STYLES, SEVERITY_STYLES, STATUS_STYLES, style_of


def test_every_word_of_each_list_has_a_style() -> None:
    assert set(STATUS_STYLES) == set(Status)
    assert set(DRIFT_STYLES) == set(get_args(DriftState))
    assert set(PLAN_STYLES) == set(get_args(PlanAction)) == set(PLAN_MARKS)
    assert set(SEVERITY_STYLES) == set(get_args(Severity))


def test_an_unknown_or_missing_word_is_unstyled() -> None:
    assert style_of("healthy", STATUS_STYLES) == STATUS_STYLES[Status.HEALTHY]
    assert style_of("no-such-word", STATUS_STYLES) == ""
    assert style_of(None, DRIFT_STYLES) == ""
