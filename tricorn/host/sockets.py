"""Listening sockets from --bind addresses: TCP v4/v6, unix:/path, fd://N."""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from typing import TYPE_CHECKING

from ..errors import BindError
from . import systemd

if TYPE_CHECKING:
    from ..config import Config

logger = logging.getLogger("tricorn.error")


def parse_bind(address: str) -> tuple[str, str | int, int]:
    """("tcp", host, port) | ("unix", path, 0) | ("fd", n, 0)."""
    if address.startswith("unix:"):
        path = address[5:]
        if not path:
            raise BindError(f"bind address {address!r} has no path; use unix:/path/to/socket")
        return "unix", path, 0
    if address.startswith("fd://"):
        try:
            return "fd", int(address[5:]), 0
        except ValueError:
            raise BindError(f"bind address {address!r}: fd:// needs a file descriptor number, like fd://3") from None
    host, port_text = address, "8000"
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise BindError(f"bind address {address!r}: expected [IPv6]:PORT")
            port_text = rest[1:]
    elif ":" in address:
        host, _, port_text = address.rpartition(":")
    try:
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise BindError(f"bind address {address!r}: the port must be a number from 0 to 65535") from None
    return "tcp", host or "0.0.0.0", port


def open_listeners(config: Config) -> list[socket.socket]:
    """Sockets systemd passed (socket activation), else one per --bind address."""
    inherited = systemd.listen_fds()
    if inherited:
        logger.info("Using %d socket(s) from systemd (LISTEN_FDS)", len(inherited))
        return [open_listener(f"fd://{fd}", config.backlog) for fd in inherited]
    return [open_listener(address, config.backlog, config.reuse_port) for address in config.listeners()]


def open_listener(address: str, backlog: int, reuse_port: bool = False) -> socket.socket:
    kind, where, port = parse_bind(address)
    if kind == "fd":
        try:
            sock = socket.socket(fileno=int(where))
        except OSError as exc:
            reason = exc.strerror or exc
            raise BindError(f"cannot use {address}: {reason}; is that descriptor an open socket?") from None
        sock.listen(backlog)
        sock.setblocking(False)
        return sock
    if kind == "unix":
        path = str(where)
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket file from an earlier run
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        _bind(sock, path, address)
    else:
        try:
            infos = socket.getaddrinfo(str(where), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise BindError(f"cannot listen on {address}: host {where!r} not found ({exc.strerror})") from None
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        _bind(sock, sockaddr, address)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def _bind(sock: socket.socket, sockaddr: object, address: str) -> None:
    try:
        sock.bind(sockaddr)  # type: ignore[arg-type]
    except OSError as exc:
        sock.close()
        hint = {
            errno.EADDRINUSE: "address already in use; stop the other server or choose another --bind/--port",
            errno.EACCES: "permission denied; ports below 1024 need root, or choose another --bind/--port",
            errno.EADDRNOTAVAIL: "that address is not on this machine; use 127.0.0.1 or 0.0.0.0",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise BindError(f"cannot listen on {address}: {hint}") from None


def describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    if sock.family == socket.AF_INET6:
        return f"http://[{name[0]}]:{name[1]}"
    return f"http://{name[0]}:{name[1]}"
