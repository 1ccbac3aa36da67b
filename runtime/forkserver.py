"""The worker fork server: one pre-imported interpreter that forks a worker per start.

    python -m runtime.forkserver --socket PATH

A worker's start is dominated by the interpreter's start and its imports (uvicorn, FastAPI,
pydantic, cloudpickle, httpx: ~1.5 s on 2 cores). This process imports all of that once, then
listens on a unix socket (SOCK_SEQPACKET, in a private directory). Only its parent, the
service, is served: a sandboxed worker runs as the same user and could find the socket, and a
start it asked for would run code outside its sandbox. Each connection is one start: a JSON
message `{"argv", "env", "cwd"}` with the log pipe's descriptor attached (SCM_RIGHTS). The
server forks; the child does only what is per-worker (a session of its own, stdout/stderr to
the log pipe, exactly the given environment and working directory, its command line and /proc
environ rewritten to its own so the supervisor identifies it as it identifies a spawned
worker) and runs `runtime.worker`'s main with `argv`'s arguments: the sandbox is applied there,
before user code loads, as in a spawned worker.

The server answers `{"pid": N}` on the connection, and `{"exit": CODE}` (negative: killed by
that signal, as `subprocess`) when it reaps the child; the connection may be closed earlier.
The request is decoded only in the child: the server never holds one worker's key as text, and
zeroes the raw message after the fork, so no later worker inherits another's secrets.

It exits when its stdin (a pipe held by the service) reaches end of file: it dies with its
service. The workers it forked live on (each is its own session); a new service adopts them
by pid, start time and command line.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import tempfile
from typing import Any

from runtime.worker_socket import bind_private

__all__ = ["MAX_REQUEST_BYTES", "PRELOAD", "main", "set_cmdline", "set_environ_block"]

# Imported once in the server, shared (copy-on-write) by every worker it forks.
PRELOAD = (
    "runtime.worker",
    "runtime.worker_app",
    "runtime.queue_server",
    "runtime.lb_app",
    "runtime.calls",
    "runtime.registry",
    "runtime.serialization",
    "runtime.remote",
    "runtime.remote_class",
    # the SDK's names, which the package itself imports only on first use (runtime/__init__)
    "runtime.endpoint",
    "runtime.resources",
    "runtime.shims",
    "cloudpickle",
    "httpx",
    "fastapi",
    "pydantic",
    "uvicorn",
    # uvicorn picks these at start-up; without them every child would import them anew
    "uvicorn.loops.auto",
    "uvicorn.loops.uvloop",
    "uvicorn.lifespan.on",
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.websockets.auto",
    "uvloop",
    "httptools",
)
MAX_REQUEST_BYTES = 1 << 20
_MAX_FDS = 4


def set_cmdline(argv: list[str]) -> bool:
    """Rewrite this process's /proc command line to `argv`; False when it does not fit.

    The kernel shows the memory the original argv occupied; a forked worker writes its own
    arguments there (NUL-padded) so `ps` and the supervisor see what a spawned one shows.
    """
    return _overwrite(45, b"\0".join(item.encode() for item in argv) + b"\0")


def set_environ_block(environ: dict[str, str]) -> bool:
    """Rewrite this process's /proc environ to `environ`; False when it does not fit.

    Only what other processes read (`/proc/<pid>/environ`, e.g. the local cloud's worker
    marker); call it after `os.environ` holds the new values (libc then no longer points into
    the original block).
    """
    return _overwrite(47, b"".join(f"{k}={v}".encode() + b"\0" for k, v in environ.items()))


def _overwrite(field: int, data: bytes) -> bool:
    """Write `data`, NUL-padded, over the memory area starting at /proc/self/stat's
    `field` (0-based after the state field: 45 arg_start, 47 env_start; the next is its end)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            stat = handle.read()
        # Fields after the command name (which may hold spaces).
        fields = stat[stat.rindex(")") + 2 :].split()
        start, end = int(fields[field]), int(fields[field + 1])
    except (OSError, ValueError, IndexError):
        return False
    room = end - start
    if room <= 0 or len(data) > room:
        return False
    ctypes.memmove(start, data + b"\0" * (room - len(data)), room)
    return True


def _preload() -> list[str]:
    """Import what every worker imports; the names that could not be imported."""
    missing = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # an optional accelerator (uvloop, httptools) may be absent
            missing.append(name)
    return missing


def _reply(conn: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.send(json.dumps(message).encode())


def _peer(conn: socket.socket) -> tuple[int, int]:
    """The pid and uid of the process that connected."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return int(pid), int(uid)


def _child(raw: bytearray, size: int, fds: list[int]) -> None:
    """In the forked child: become the worker the request describes (does not return)."""
    code = 1
    try:
        request = json.loads(bytes(raw[:size]))
        raw[:] = bytes(len(raw))
        argv = [str(item) for item in request["argv"]]
        # First: from here on the process reads as the worker it becomes (stray detection).
        set_cmdline(argv)
        os.setsid()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        log = fds[0]
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        # Nothing of the server's (its socket, other starts' connections, the lifeline) stays.
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(ValueError, OSError):
                if int(name) > 2:
                    os.close(int(name))
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request["env"].items()})
        tempfile.tempdir = None  # TMPDIR is this worker's own
        # Read at start-up by a spawned interpreter; the fork inherited the server's setting.
        sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
        cwd = str(request["cwd"])
        os.chdir(cwd)
        set_environ_block(dict(os.environ))
        # `python -m runtime.worker ...` as the spawned worker: its cwd first on the path.
        sys.path[0] = cwd
        from runtime import worker

        sys.argv = [str(worker.__file__), *argv[3:]]
        worker.run(argv[3:])
    except BaseException as exc:  # whatever happens, the child never returns into the server
        with contextlib.suppress(Exception):
            os.write(2, f"error: the forked worker failed to start: {exc!r}\n".encode())
    finally:
        os._exit(code if isinstance(code, int) else 1)


class _Server:
    """The accept / fork / reap loop."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, socket.socket | None] = {}
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)

    def run(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w.fileno())
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "lifeline")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "reap")
        while True:
            for key, _ in self.selector.select():
                if key.data == "lifeline":
                    if not os.read(sys.stdin.fileno(), 4096):
                        return
                elif key.data == "reap":
                    with contextlib.suppress(OSError):
                        self.wake_r.recv(4096)
                    self._reap()
                elif key.data == "accept":
                    self._accept()
                else:
                    self._closed(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            # Only the service that started this server: a worker runs as the same user and
            # could find the socket, but a start it asked for would escape its sandbox.
            if _peer(conn) != (os.getppid(), os.getuid()):
                print("forkserver: refused a start from another process", file=sys.stderr)
                conn.close()
                return
            conn.settimeout(5.0)
            self._start(conn)
        except OSError as exc:
            print(f"forkserver: a start failed: {exc}", file=sys.stderr, flush=True)
            conn.close()

    def _start(self, conn: socket.socket) -> None:
        raw = bytearray(MAX_REQUEST_BYTES)
        size, ancdata, _flags, _ = conn.recvmsg_into(
            [raw], socket.CMSG_SPACE(_MAX_FDS * struct.calcsize("i"))
        )
        fds: list[int] = []
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(data) - len(data) % struct.calcsize("i")
                fds.extend(struct.unpack(f"{usable // 4}i", data[:usable]))
        try:
            if size <= 0 or not fds:
                _reply(conn, {"error": "a start needs a request and the log descriptor"})
                conn.close()
                return
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(raw, size, fds)
            raw[:] = bytes(len(raw))
        finally:
            for fd in fds:
                os.close(fd)
        self.children[pid] = conn
        conn.setblocking(False)
        self.selector.register(conn, selectors.EVENT_READ, pid)
        _reply(conn, {"pid": pid})
        self._reap()  # a child that failed at once

    def _closed(self, conn: socket.socket) -> None:
        """The service hung up on a start: the worker runs on; its exit is not reported."""
        with contextlib.suppress(OSError):
            if conn.recv(4096):
                return
        self.selector.unregister(conn)
        conn.close()
        for pid, held in self.children.items():
            if held is conn:
                self.children[pid] = None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                _reply(conn, {"exit": os.waitstatus_to_exitcode(status)})
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(conn)
                conn.close()


def main(argv: list[str] | None = None) -> int:
    """Pre-import, listen on the socket, serve starts until stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m runtime.forkserver")
    parser.add_argument("--socket", required=True, help="the unix socket to listen on")
    parser.add_argument(
        "--room", default="", help="padding: room for the forked workers' command lines"
    )
    args = parser.parse_args(argv)
    # `ps` shows the server without its padding (the room stays, NUL-filled).
    set_cmdline([sys.orig_argv[0], "-m", "runtime.forkserver", "--socket", args.socket])
    missing = _preload()
    if "runtime.worker" in missing:
        print("forkserver: cannot import runtime.worker", file=sys.stderr, flush=True)
        return 1
    # What is loaded now lives as long as every worker: frozen, a worker's collections skip it
    # (its ready-time full collection walks only its own objects) and never write to its
    # pages, which stay shared with the server (copy-on-write) instead of being copied.
    gc.collect()
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # Bound under another name, listening, then renamed: the socket's path appears (the
    # service's sign that the server is ready) only once a connection is served at once.
    bound = args.socket + ".new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(bound)
    bind_private(listener, bound)
    listener.listen(64)
    os.replace(bound, args.socket)
    print(f"forkserver: ready, pid {os.getpid()}", flush=True)
    try:
        _Server(listener).run()
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
