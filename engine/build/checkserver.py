"""A pre-imported interpreter that imports generated handlers in forked children.

A fresh interpreter per import check spends most of its time starting and importing what every
handler imports (our runtime, fastapi, pydantic, httpx): ~1 s each on a loaded 2-core machine.
A check server is started once per interpreter (the endpoints' environment), imports those
once, then forks one child per check: the child changes into the build dir, puts it first on
`sys.path` as `python -c` would, imports the handler and reports the files it loaded, with its
output in a file. The server writes nothing to the build dir (no bytecode).

What a fork cannot reproduce is a project module that shadows one the server pre-imported (a
top-level `pydantic.py` wins in a fresh interpreter, but the server already holds pydantic):
`shadowed()` names those, and the caller checks such a build in fresh interpreters instead.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from engine.handlergen import HandlerCheck, handler_module, import_check_env

__all__ = ["CheckServer", "CheckServerError"]

# What the server imports before forking: what a generated handler imports, and the packages
# behind it. A name the interpreter cannot import is skipped (a child then imports it anew,
# e.g. from the build's `_flash_packages/`).
_PRELOAD = (
    "runtime.shims",
    "runtime.registry",
    "runtime.serialization",
    "runtime.qb_handler",
    "runtime.lb_app",
    "runtime.remote",
    "runtime.endpoint",
    "runtime.resources",
    "cloudpickle",
    "httpx",
    "fastapi",
    "pydantic",
)

# The server: stdlib only, as it runs on the endpoints' interpreter. One JSON request a line on
# stdin ({"dir", "timeout", "checks": [{"module", "log", "out"}]}), one JSON answer a line on the
# original stdout ({"codes": [exit code, or null when it timed out]}); the preloads' own output
# goes to /dev/null so it cannot corrupt the answers.
_SERVER_CODE = """\
import importlib, json, os, signal, sys, time, traceback
reply = os.fdopen(os.dup(1), "w")
null = os.open(os.devnull, os.O_WRONLY)
os.dup2(null, 1)
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except BaseException:
        pass
top = sorted({name.split(".")[0] for name in sys.modules})
# The resolved paths of what is loaded now, once: a child resolves only what it loads itself
# (resolving the ~500 preloaded files took ~20 ms of every check).
resolved = {}
for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None)
    if isinstance(path, str):
        resolved[path] = os.path.realpath(path)
reply.write(json.dumps({"ready": top}) + "\\n")
reply.flush()


def child(folder, check):
    code = 1
    try:
        fd = os.open(check["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(folder)
        sys.path.insert(0, folder)
        importlib.invalidate_caches()
        importlib.import_module(check["module"])
        paths = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
        real = sorted(resolved.get(p) or os.path.realpath(p) for p in paths if isinstance(p, str))
        with open(check["out"], "w", encoding="utf-8") as handle:
            handle.write("\\n".join(real))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


for line in sys.stdin:
    request = json.loads(line)
    running = {}
    for index, check in enumerate(request["checks"]):
        pid = os.fork()
        if pid == 0:
            child(request["dir"], check)
        running[pid] = index
    codes = [None] * len(request["checks"])
    deadline = time.monotonic() + request["timeout"]
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)
        elif time.monotonic() > deadline:
            for pid in running:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            running = {}
        else:
            time.sleep(0.003)
    reply.write(json.dumps({"codes": codes}) + "\\n")
    reply.flush()
"""


class CheckServerError(Exception):
    """The check server could not start or stopped answering."""


class CheckServer:
    """One check server on `python` (see the module docstring); thread-safe."""

    def __init__(self, python: str) -> None:
        self.python = python
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._preloaded: frozenset[str] = frozenset()

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        try:
            proc = subprocess.Popen(
                [self.python, "-c", _SERVER_CODE, json.dumps(_PRELOAD)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=import_check_env(),
                text=True,
                start_new_session=True,  # a Ctrl+C in the terminal is the caller's to handle
            )
        except OSError as exc:
            raise CheckServerError(f"cannot run {self.python}: {exc.strerror or exc}") from exc
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        try:
            self._preloaded = frozenset(json.loads(ready)["ready"])
        except (ValueError, KeyError, TypeError):
            self._stop(proc)
            raise CheckServerError(f"the check server on {self.python} did not start") from None
        self._proc = proc
        return proc

    def shadowed(self, members: Iterable[str]) -> list[str]:
        """The build's top-level modules that the server pre-imported (starts it if needed)."""
        with self._lock:
            self._start()
            names = {_top_level(rel) for rel in members}
            return sorted(names & self._preloaded)

    def check(
        self,
        build_dir: Path,
        handlers: list[str],
        *,
        timeout: float,
        on_done: Callable[[HandlerCheck], None] | None = None,
    ) -> list[HandlerCheck]:
        """Import each handler in a child forked from the server; one result per handler."""
        if not handlers:
            return []
        with tempfile.TemporaryDirectory(prefix="flash-checks-") as scratch, self._lock:
            proc = self._start()
            checks = [
                {
                    "module": handler_module(name),
                    "log": str(Path(scratch, f"{index}.log")),
                    "out": str(Path(scratch, f"{index}.loaded")),
                }
                for index, name in enumerate(handlers)
            ]
            request = {"dir": str(Path(build_dir).resolve()), "timeout": timeout, "checks": checks}
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
                answer = json.loads(proc.stdout.readline())["codes"]
                if len(answer) != len(checks):
                    raise ValueError("one exit code per check")
            except (OSError, ValueError, KeyError, TypeError):
                self._stop(proc)
                raise CheckServerError(f"the check server on {self.python} stopped") from None
            results = []
            for name, check, code in zip(handlers, checks, answer, strict=True):
                output = _read(check["log"])
                if code is None:
                    result = HandlerCheck(
                        name, False, f"import did not finish within {timeout:g}s", output
                    )
                else:
                    result = HandlerCheck.from_exit(
                        name, code, output, _read(check["out"]).split("\n")
                    )
                results.append(result)
                if on_done is not None:
                    on_done(result)
            return results

    def close(self) -> None:
        """Stop the server (its children are gone: each check waits for its own)."""
        with self._lock:
            if self._proc is not None:
                self._stop(self._proc)
                self._proc = None

    @staticmethod
    def _stop(proc: subprocess.Popen[str]) -> None:
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()  # the server's loop ends at EOF
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _top_level(rel: str) -> str:
    # `pkg/mod.py` -> pkg, `mod.py` -> mod, `ext.cpython-311-x86_64-linux-gnu.so` -> ext
    first = rel.split("/", 1)[0]
    return first.split(".", 1)[0] if "/" not in rel else first


def _read(path: str) -> str:
    try:
        return Path(path).read_text("utf-8", errors="replace")
    except OSError:
        return ""
