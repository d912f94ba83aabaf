"""Port checks with the owner's pid in the error, and free-port allocation for tests."""

from __future__ import annotations

import errno
import socket

import psutil

from streamfold.errors import HostEnvironmentError

__all__ = ["ensure_port_free", "free_ports", "port_owner"]


def port_owner(port: int) -> int | None:
    """The pid listening on a TCP port, when the process table tells (None otherwise)."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def ensure_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Raise a clear error when ``host:port`` cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise HostEnvironmentError(f"cannot bind {host}:{port}: {exc.strerror}") from exc
            pid = port_owner(port)
            owner = f"pid {pid}" if pid is not None else "another process"
            raise HostEnvironmentError(
                f"port {port} is in use by {owner}: stop it or choose other ports"
            ) from exc


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ask the kernel for ``count`` distinct free ports (free at the time of the call)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()
