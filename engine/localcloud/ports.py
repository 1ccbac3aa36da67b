"""TCP ports on 127.0.0.1: free ones for the workers, and listening sockets for our servers."""

from __future__ import annotations

import socket

__all__ = ["free_port", "listening_socket", "pick_port", "port_is_free"]


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


def listening_socket(port: int, backlog: int = 128) -> socket.socket:
    """A socket listening on 127.0.0.1:`port` (0: any free one) whose connections send at once
    (TCP_NODELAY); OSError when it cannot bind."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it on Linux; asyncio sets it only on sockets made with
        # IPPROTO_TCP, not on those of a socket passed to uvicorn. Without it, a response
        # written in two parts (headers, then body) waits for the client's delayed ACK: ~40 ms
        # on every request of a kept-alive connection.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock
