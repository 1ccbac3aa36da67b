"""The generic QB handler and the serialization helpers (in-process: pure functions)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from runtime.errors import RemoteExecutionError, SerializationError
from runtime.qb_handler import create_handler, unwrap
from runtime.serialization import (
    deserialize,
    deserialize_args,
    deserialize_kwargs,
    serialize,
    serialize_args,
    serialize_kwargs,
)


def add(a: int, b: int = 0) -> int:
    return a + b


async def async_mul(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a * b


def boom(message: str) -> None:
    raise ValueError(message)


def unpicklable() -> object:
    return threading.Lock()


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start

    def bump(self, by: int = 1) -> int:
        self.value += by
        return self.value

    async def double(self) -> int:
        return self.value * 2

    def _secret(self) -> str:
        return "no"


def job(**payload: object) -> dict:
    return {"id": "j1", "input": payload}


@pytest.fixture
def handler():
    return create_handler(
        {
            "add": add,
            "async_mul": async_mul,
            "boom": boom,
            "unpicklable": unpicklable,
            "Counter": Counter,
        }
    )


def test_serialization_round_trip_of_values_args_and_kwargs() -> None:
    value = {"a": [1, 2.5, None], "b": (1, "x"), "f": lambda x: x + 1}
    decoded = deserialize(serialize(value))
    assert decoded["a"] == [1, 2.5, None] and decoded["f"](1) == 2
    assert deserialize_args(serialize_args([1, "two"])) == [1, "two"]
    assert deserialize_kwargs(serialize_kwargs({"k": [3]})) == {"k": [3]}
    assert deserialize_args(None) == [] and deserialize_kwargs(None) == {}


@pytest.mark.parametrize("bad", ["%%% not base64", serialize(1)[:-4] + "AAAA", 12])
def test_deserialize_rejects_bad_payloads(bad: object) -> None:
    with pytest.raises(SerializationError):
        deserialize(bad)  # type: ignore[arg-type]


def test_serialize_reports_unpicklable_values() -> None:
    with pytest.raises(SerializationError, match="lock"):
        serialize(threading.Lock())


async def test_function_with_args_and_kwargs(handler) -> None:
    out = await handler(
        job(function_name="add", args=serialize_args([2]), kwargs=serialize_kwargs({"b": 3}))
    )
    assert out["success"] is True and deserialize(out["result"]) == 5


async def test_async_function_is_awaited(handler) -> None:
    out = await handler(job(function_name="async_mul", args=serialize_args([6, 7])))
    assert out["success"] and deserialize(out["result"]) == 42


async def test_sync_function_runs_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def where() -> int:
        seen.append(threading.get_ident())
        return 1

    out = await create_handler({"where": where})(job(function_name="where"))
    assert out["success"] and seen and seen[0] != loop_thread


async def test_slow_sync_function_does_not_block_others() -> None:
    handler = create_handler({"slow": lambda: time.sleep(0.5), "fast": lambda: "done"})
    slow = asyncio.ensure_future(handler(job(function_name="slow")))
    fast = await handler(job(function_name="fast"))
    assert fast["success"] and not slow.done(), "the fast job finished while the slow one ran"
    assert (await slow)["success"]


async def test_unknown_function_is_an_error_not_a_crash(handler) -> None:
    out = await handler(job(function_name="nope"))
    assert out["success"] is False
    assert "Function 'nope' not found in registry" in out["error"] and "add" in out["error"]


async def test_exception_gives_error_and_user_traceback(handler) -> None:
    out = await handler(job(function_name="boom", args=serialize_args(["kaput"])))
    assert out["success"] is False and out["error"] == "ValueError: kaput"
    assert "in boom" in out["traceback"] and "raise ValueError" in out["traceback"]
    assert "qb_handler.py" not in out["traceback"]  # machinery frames are left out


async def test_bad_base64_and_unpicklable_result_are_errors(handler) -> None:
    out = await handler(job(function_name="add", args=["***"]))
    assert out["success"] is False and "base64" in out["error"]
    out = await handler(job(function_name="unpicklable"))
    assert out["success"] is False and "SerializationError" in out["error"]


@pytest.mark.parametrize("bad_job", [{}, {"input": None}, {"input": []}, "x"])
async def test_malformed_jobs_are_errors(handler, bad_job: object) -> None:
    out = await handler(bad_job)  # type: ignore[arg-type]
    assert out["success"] is False and out["error"]


async def test_unknown_execution_type(handler) -> None:
    out = await handler(job(function_name="add", execution_type="shell"))
    assert out["success"] is False and "execution_type" in out["error"]


async def test_class_generic_handler_dialect(handler) -> None:
    # args/kwargs = constructor, method_args/method_kwargs = method (upstream generic handler)
    out = await handler(
        job(
            function_name="Counter",
            execution_type="class",
            args=serialize_args([10]),
            method_name="bump",
            method_kwargs=serialize_kwargs({"by": 5}),
        )
    )
    assert out["success"] and deserialize(out["result"]) == 15


async def test_class_function_request_dialect_and_async_method(handler) -> None:
    # constructor_args/kwargs = constructor, args/kwargs = method (upstream FunctionRequest)
    out = await handler(
        job(
            class_name="Counter",
            execution_type="class",
            constructor_kwargs=serialize_kwargs({"start": 4}),
            method_name="double",
        )
    )
    assert out["success"] and deserialize(out["result"]) == 8


async def test_class_instances_are_reused_by_instance_id(handler) -> None:
    def call(create_new: bool) -> dict:
        return job(
            function_name="Counter",
            execution_type="class",
            method_name="bump",
            instance_id="Counter_1",
            create_new_instance=create_new,
        )

    first = await handler(call(True))
    second = await handler(call(False))
    assert deserialize(first["result"]) == 1 and deserialize(second["result"]) == 2
    assert second["instance_id"] == "Counter_1"


async def test_private_methods_and_non_classes_are_refused(handler) -> None:
    out = await handler(job(function_name="Counter", execution_type="class", method_name="_secret"))
    assert out["success"] is False and "_secret" in out["error"]
    out = await handler(job(function_name="add", execution_type="class", method_name="bump"))
    assert out["success"] is False and "not a class" in out["error"]


async def test_function_code_runs_when_the_name_is_not_registered(handler) -> None:
    code = "def triple(x):\n    return 3 * x\n"
    out = await handler(job(function_name="triple", function_code=code, args=serialize_args([4])))
    assert out["success"] and deserialize(out["result"]) == 12
    out = await handler(job(function_name="triple", function_code="def (:"))
    assert out["success"] is False and "compile" in out["error"]


async def test_registered_function_wins_over_shipped_code(handler) -> None:
    code = "def add(a, b=0):\n    return 'shipped'\n"
    out = await handler(job(function_name="add", function_code=code, args=serialize_args([1])))
    assert deserialize(out["result"]) == 1


def test_unwrap_only_unwraps_remote_wrappers() -> None:
    import functools

    def original() -> int:
        return 1

    @functools.wraps(original)
    def user_decorated() -> int:
        return original()

    assert unwrap(user_decorated) is user_decorated

    @functools.wraps(original)
    async def remote_wrapper() -> int:
        return 1

    remote_wrapper.__remote_config__ = {}  # type: ignore[attr-defined]
    assert unwrap(remote_wrapper) is original


def test_remote_execution_error_text_carries_the_remote_traceback() -> None:
    exc = RemoteExecutionError(
        "ValueError: x", remote_traceback="Traceback...\nValueError: x", endpoint="gpu"
    )
    assert "gpu" in str(exc) and "Remote traceback" in str(exc) and exc.remote_traceback
