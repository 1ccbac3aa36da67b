"""The shared waiting helpers: they return what held, and fail naming what was awaited."""

from __future__ import annotations

import threading

import pytest
from textual.app import App
from waiting import until, wait_for


def test_wait_for_returns_the_truthy_value_once_it_holds() -> None:
    done = threading.Event()
    timer = threading.Timer(0.1, done.set)
    timer.start()
    try:
        assert wait_for(lambda: done.is_set() and "ready", 10, "the timer") == "ready"
    finally:
        timer.cancel()


def test_wait_for_fails_at_the_deadline_naming_what_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"the answer: not met within 0.1s \(last: 0\)"):
        wait_for(lambda: 0, 0.1, "the answer", interval=0.01)


def test_wait_for_raises_a_predicate_error_at_once_unless_told_to_retry() -> None:
    def broken() -> bool:
        raise KeyError("gone")

    with pytest.raises(KeyError):
        wait_for(broken, 10, "a record")
    with pytest.raises(AssertionError, match=r"a record: not met within 0.1s \(last: KeyError"):
        wait_for(broken, 0.1, "a record", interval=0.01, retry_errors=True)


async def test_until_pauses_the_app_until_the_condition_holds_then_fails_naming_it() -> None:
    app: App[None] = App()
    async with app.run_test() as pilot:
        app.call_later(setattr, app, "sub_title", "set")
        assert await until(pilot, lambda: app.sub_title == "set", 5, "the sub-title") >= 0
        with pytest.raises(AssertionError, match="never: not met within 0.1s"):
            await until(pilot, lambda: False, 0.1, "never")
