"""A worker's Unix socket next to its TCP port, for calls from workers on the same machine.

Why: an LB route calling a QB function pays for a loopback TCP exchange on both workers, and on
loopback the sender also runs the receiver's TCP processing; over a Unix socket the same
exchange costs each worker about a fifth less CPU per call (measured with `bench/load.py`'s
project). The HTTP on it is the same (same app, auth, host check, request log), so nothing else
changes.

How a caller finds it: a worker binds `flash-worker-<port>-<random>.sock` in its temporary
directory (`TMPDIR`: the local cloud gives each worker a private one), 0600, and names it in a
response header (`x-flash-socket`) on every answer. A caller that reached the worker over
loopback TCP (`runtime.httpwire`) adopts the socket for its next connections to that address,
only if the path has that name, is a socket and is owned by the caller's own user; if it cannot
connect there (the worker stopped, or was replaced at the same port) it falls back to TCP, where
the next answer names the new socket. Remote endpoints (RunPod, over HTTPS) never see any of it.

A queue-based worker binds a second socket, `flash-frames-<port>-<random>.sock`, named in
`x-flash-frames`: its jobs' framed protocol for same-machine callers (`runtime.local_frames`).
Both are adopted under the same rules, plus one: the socket's mode gives nobody else access.

`FLASH_WORKER_SOCKET=off` keeps a worker on TCP only. A socket path longer than the system
allows (about 100 bytes) is not bound: that worker is reached over TCP.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import stat
import tempfile

__all__ = [
    "LOOPBACK_NAMES",
    "SOCKET_ENV",
    "FRAMES_HEADER",
    "FRAMES_KIND",
    "SOCKET_HEADER",
    "WORKER_KIND",
    "WorkerSocket",
    "advertised_socket",
    "bind_private",
    "bind_worker_socket",
]

SOCKET_HEADER = "x-flash-socket"
FRAMES_HEADER = "x-flash-frames"
SOCKET_ENV = "FLASH_WORKER_SOCKET"
# Addresses whose answers may name a local socket: only a worker on this machine has one.
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
_NAME = re.compile(r"flash-(worker|frames)-\d{1,5}-[0-9a-f]{8}\.sock")
WORKER_KIND = "worker"  # HTTP, the same app as the TCP port
FRAMES_KIND = "frames"  # a queue-based worker's framed protocol (runtime.local_frames)
_MAX_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS, with the NUL


class WorkerSocket:
    """A bound, listening Unix socket and its path (removed by `close`)."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self.sock = sock
        self.path = path

    def close(self) -> None:
        """Close the socket and remove its file."""
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def bind_worker_socket(
    port: int, directory: str | None = None, kind: str = WORKER_KIND
) -> WorkerSocket | None:
    """Bind and listen on a fresh socket of `kind` for the worker on `port`; None when it
    cannot be."""
    # TMPDIR as the environment says now: a worker forked from `runtime.forkserver` inherits
    # tempfile's cached answer of the fork server, not its own directory.
    folder = directory or os.environ.get("TMPDIR") or tempfile.gettempdir()
    path = os.path.join(os.path.abspath(folder), f"flash-{kind}-{port}-{secrets.token_hex(4)}.sock")
    if len(os.fsencode(path)) > _MAX_PATH or not hasattr(socket, "AF_UNIX"):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        bind_private(sock, path)
        sock.listen(2048)
    except OSError:
        sock.close()
        return None
    return WorkerSocket(sock, path)


def bind_private(sock: socket.socket, path: str) -> None:
    """Bind a Unix socket at `path`, its file open to this user only (mode 0600)."""
    # Created with no permission for anyone else: the umask decides only what is left.
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)


def advertised_socket(value: str) -> str | None:
    """The socket a worker's answer names, if a caller may use it: a worker socket's name, a
    socket, owned by this process's user and open to nobody else; else None."""
    if not os.path.isabs(value) or not _NAME.fullmatch(os.path.basename(value)):
        return None
    try:
        info = os.stat(value)
    except OSError:
        return None
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
        return None
    if info.st_mode & 0o077:  # group or others may connect: not one a worker bound
        return None
    return value
