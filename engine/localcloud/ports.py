"""Free TCP ports on 127.0.0.1 for the workers to listen on."""

from __future__ import annotations

import socket

__all__ = ["free_port", "pick_port", "port_is_free"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pick_port(taken: set[int]) -> int:
    """A free port not in `taken` (ports promised to workers that have not bound yet)."""
    for _ in range(50):
        port = free_port()
        if port not in taken:
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1")


def port_is_free(port: int) -> bool:
    """Whether `port` can be bound on 127.0.0.1 (with SO_REUSEADDR, as the worker binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
