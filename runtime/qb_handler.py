"""The generic queue-based (QB) handler: runs one job of the upstream Flash job contract.

`create_handler(registry)` returns an async `handler(job) -> dict` for a RunPod job
`{"id": ..., "input": {...}}` where the input carries:

- `function_name`: registry key (function or class name); `execution_type`: "function"
  (default) or "class";
- `args` / `kwargs`: base64 cloudpickle values (see `runtime.serialization`);
- class mode: `class_name` (defaults to `function_name`), `method_name` (default `__call__`).
  Two upstream dialects exist for the arguments and both are accepted: the generic handler's
  (`args`/`kwargs` = constructor, `method_args`/`method_kwargs` = method) and the stubs'
  FunctionRequest (`constructor_args`/`constructor_kwargs` = constructor, `args`/`kwargs` =
  method). `instance_id` with `create_new_instance: false` reuses a cached instance;
- optional `function_code` / `class_code`: source to run when the name is NOT in the registry
  (live endpoints ship code; a registered object always wins because it has its module's
  globals, which source text alone lacks).

The output is `{"success": true, "result": <b64>}` or
`{"success": false, "error": "...", "traceback": "..."}`; a failure in user code also carries
`error_type`, `message` and `location` (file:line of the deepest user-code frame) and is logged
with its traceback to stderr (the endpoint's log). Nothing a job sends can crash the
worker: unknown names, bad base64, exceptions and unpicklable results all become errors.

Async functions are awaited on the event loop; sync ones run in a thread pool (the loop's
default executor unless one is given) so a slow function never blocks other requests.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextvars
import functools
import hashlib
import inspect
import os
import sys
import sysconfig
import traceback
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from runtime.serialization import deserialize_args, deserialize_kwargs, serialize

__all__ = [
    "Handler",
    "create_handler",
    "error_response",
    "format_user_traceback",
    "unwrap",
    "user_location",
]

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

# Instances kept for `create_new_instance: false` calls; bounded so a client minting instance
# ids cannot grow the worker's memory without limit.
MAX_CACHED_INSTANCES = 256
_MAX_CODE_CACHE = 128
_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def unwrap(obj: Any) -> Any:
    """The user's original object behind a `@remote` wrapper (one level, like upstream).

    Only wrappers carrying `__remote_config__` are unwrapped, so a user's own decorators
    (which may also set `__wrapped__`) stay in effect.
    """
    if hasattr(obj, "__remote_config__") and hasattr(obj, "__wrapped__"):
        return obj.__wrapped__
    return obj


def error_response(error: str, tb: str = "") -> dict[str, Any]:
    """The structured failure output of the job contract."""
    return {"success": False, "error": error, "traceback": tb}


def _user_error_response(exc: BaseException) -> dict[str, Any]:
    out = error_response(_describe(exc), format_user_traceback(exc))
    out.update(error_type=type(exc).__name__, message=str(exc), location=user_location(exc))
    return out


# Frames from these directories are machinery (this package, the thread pool, asyncio, the ASGI
# stack); a traceback shown to a caller starts at the first frame after them: the user's code.
_MACHINERY = tuple(
    os.path.dirname(module.__file__ or "") + os.sep for module in (asyncio, concurrent.futures)
)


def format_user_traceback(exc: BaseException) -> str:
    """`exc`'s traceback without the leading runtime/asyncio/thread-pool frames."""
    tb = exc.__traceback__
    first = tb
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        machinery = filename.startswith((_RUNTIME_DIR, *_MACHINERY)) or any(
            part in filename for part in ("/starlette/", "/anyio/", "/fastapi/")
        )
        if not machinery:
            first = tb
            break
        tb = tb.tb_next
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_tb(first)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


# Library and interpreter code: the "user-code line" of an error is the deepest frame outside.
_LIBRARY = tuple(
    {
        os.path.realpath(path) + os.sep
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (path := sysconfig.get_paths().get(key))
    }
)


def _is_user_frame(filename: str) -> bool:
    if filename.startswith(("<frozen", _RUNTIME_DIR)):
        return False
    return not os.path.realpath(filename).startswith(_LIBRARY)


def user_location(exc: BaseException) -> str | None:
    """`file:line` of the deepest user-code frame of `exc`'s traceback (relative to the cwd)."""
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if _is_user_frame(frame.filename):
            found = frame
    if found is None:
        return None
    path = found.filename
    if os.path.isabs(path):
        relative = os.path.relpath(path)
        path = path if relative.startswith("..") else relative
    return f"{path}:{found.lineno}"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _JobError(Exception):
    """A problem with the job itself (not the user's code): reported without a traceback."""


class _CodeCache:
    """Objects defined by shipped source text, compiled once per distinct source."""

    def __init__(self) -> None:
        self._namespaces: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def lookup(self, code: str, name: str) -> Any:
        if not isinstance(code, str):
            raise _JobError("function_code/class_code must be a string")
        key = hashlib.sha256(code.encode()).hexdigest()
        namespace = self._namespaces.get(key)
        if namespace is None:
            namespace = {"__name__": "__flash_remote_code__", "__builtins__": builtins}
            try:
                exec(compile(code, "<remote code>", "exec"), namespace)  # noqa: S102
            except SyntaxError as exc:
                raise _JobError(f"shipped code does not compile: {_describe(exc)}") from exc
            self._namespaces[key] = namespace
            if len(self._namespaces) > _MAX_CODE_CACHE:
                self._namespaces.popitem(last=False)
        if name not in namespace:
            raise _JobError(f"shipped code does not define {name!r}")
        return namespace[name]


async def _call(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], executor: Executor | None
) -> Any:
    """Await an async callable; run a sync one in the thread pool (context preserved)."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    result = await loop.run_in_executor(executor, functools.partial(ctx.run, fn, *args, **kwargs))
    if inspect.isawaitable(result):
        # A sync def that returns a coroutine (e.g. a decorated async function) is awaited too.
        result = await result
    return result


def create_handler(
    function_registry: Mapping[str, Any], *, executor: Executor | None = None
) -> Handler:
    """Build the async job handler for a registry of name -> function or class.

    `executor` runs synchronous user code; None means the event loop's default executor
    (the worker sizes that one to its concurrency).
    """
    registry = {str(name): unwrap(obj) for name, obj in function_registry.items()}
    code_cache = _CodeCache()
    instances: OrderedDict[str, Any] = OrderedDict()

    def resolve(name: Any, code: Any) -> Any:
        if not isinstance(name, str) or not name:
            raise _JobError("the job input needs a 'function_name' (or 'class_name')")
        target = registry.get(name)
        if target is not None:
            return target
        if code:
            return code_cache.lookup(code, name)
        raise _JobError(f"Function '{name}' not found in registry. Available: {sorted(registry)}")

    async def run_function(payload: Mapping[str, Any]) -> dict[str, Any]:
        fn = resolve(payload.get("function_name"), payload.get("function_code"))
        if not callable(fn):
            raise _JobError(f"{payload.get('function_name')!r} is not callable")
        args = deserialize_args(payload.get("args"))
        kwargs = deserialize_kwargs(payload.get("kwargs"))
        result = await _call(fn, args, kwargs, executor)
        return {"success": True, "result": serialize(result)}

    async def run_class(payload: Mapping[str, Any]) -> dict[str, Any]:
        class_name = payload.get("class_name") or payload.get("function_name")
        cls = resolve(class_name, payload.get("class_code"))
        if not inspect.isclass(cls):
            raise _JobError(f"{class_name!r} is not a class")
        method_name = payload.get("method_name") or "__call__"
        if not isinstance(method_name, str) or (
            method_name.startswith("_") and method_name != "__call__"
        ):
            raise _JobError(f"method {method_name!r} cannot be called remotely")
        if "constructor_args" in payload or "constructor_kwargs" in payload:
            ctor_args = deserialize_args(payload.get("constructor_args"))
            ctor_kwargs = deserialize_kwargs(payload.get("constructor_kwargs"))
            method_args = deserialize_args(payload.get("args"))
            method_kwargs = deserialize_kwargs(payload.get("kwargs"))
        else:
            ctor_args = deserialize_args(payload.get("args"))
            ctor_kwargs = deserialize_kwargs(payload.get("kwargs"))
            method_args = deserialize_args(payload.get("method_args"))
            method_kwargs = deserialize_kwargs(payload.get("method_kwargs"))

        instance_id = payload.get("instance_id")
        reuse = isinstance(instance_id, str) and payload.get("create_new_instance") is False
        instance = instances.get(instance_id) if reuse else None
        if instance is None:
            instance = await _call(cls, ctor_args, ctor_kwargs, executor)
            if isinstance(instance_id, str):
                instances[instance_id] = instance
                instances.move_to_end(instance_id)
                while len(instances) > MAX_CACHED_INSTANCES:
                    instances.popitem(last=False)
        method = getattr(instance, method_name, None)
        if method is None or not callable(method):
            raise _JobError(f"{class_name} has no method {method_name!r}")
        result = await _call(method, method_args, method_kwargs, executor)
        out: dict[str, Any] = {"success": True, "result": serialize(result)}
        if isinstance(instance_id, str):
            out["instance_id"] = instance_id
        return out

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        """Run one job; always returns the structured output, never raises."""
        try:
            payload = job.get("input") if isinstance(job, Mapping) else None
            if not isinstance(payload, Mapping):
                raise _JobError("the job needs an 'input' object")
            execution_type = payload.get("execution_type") or "function"
            if execution_type == "function":
                return await run_function(payload)
            if execution_type == "class":
                return await run_class(payload)
            raise _JobError(
                f"unknown execution_type {execution_type!r} (expected 'function' or 'class')"
            )
        except _JobError as exc:
            return error_response(str(exc))
        except asyncio.CancelledError:
            raise
        except (Exception, SystemExit) as exc:  # user code or (de)serialization: keep serving
            out = _user_error_response(exc)
            job_id = job.get("id") if isinstance(job, Mapping) else None
            # The worker's stderr is the endpoint's log: a failing job must be findable there.
            sys.stderr.write(f"job {job_id} failed:\n{out['traceback']}")
            sys.stderr.flush()
            return out

    handler.registry = registry  # type: ignore[attr-defined]  # introspection (worker, tests)
    return handler
