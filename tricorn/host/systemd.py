"""systemd: socket activation (LISTEN_FDS) and readiness notification (NOTIFY_SOCKET)."""

from __future__ import annotations

import contextlib
import os
import socket

SD_LISTEN_FDS_START = 3


def listen_fds() -> list[int]:
    """The descriptors systemd passed to this process, if it was socket-activated.

    The variables are removed so that a worker or a reloaded child does not take them for its own."""
    pid, count = os.environ.pop("LISTEN_PID", ""), os.environ.pop("LISTEN_FDS", "")
    os.environ.pop("LISTEN_FDNAMES", None)
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))


def notify(state: str) -> None:
    """Tell systemd (Type=notify) "READY=1", "RELOADING=1", "STOPPING=1"; a no-op without NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
