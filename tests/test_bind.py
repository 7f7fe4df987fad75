"""Listeners: unix sockets, IPv6, --host/--port, and running out of file descriptors."""

from __future__ import annotations

import os
import resource
import socket
import time
from pathlib import Path

import httpx
import pytest

from .conftest import free_port


def _connectable(family: int, address: object) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(address)
            return True
        except OSError:
            return False


# An ASGI app in one process; a WSGI app in two workers, which accept for themselves (accept.py).
SERVERS = [("asgi_apps:app", "client", ()), ("wsgi_apps:echo", "remote_addr", ("-w", "2"))]


@pytest.mark.parametrize(("app", "client_key", "args"), SERVERS)
def test_unix_socket(serve, tmp_path: Path, app: str, client_key: str, args: tuple[str, ...]) -> None:
    path = tmp_path / "tricorn.sock"
    server = serve(app, "--bind", f"unix:{path}", *args, bind=False)
    server.wait_for(lambda: _connectable(socket.AF_UNIX, str(path)), what="the unix socket")
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
        r = client.get("http://localhost/echo")
    assert r.status_code == 200 and r.json()[client_key] in (None, "")


def test_host_and_port_shortcuts_and_two_binds(serve) -> None:
    first, second = free_port(), free_port()
    server = serve("asgi_apps:app", "--host", "127.0.0.1", "--port", str(first), "--bind", f"127.0.0.1:{second}",
                   bind=False)
    server.wait_for(lambda: _connectable(socket.AF_INET, ("127.0.0.1", second)), what="the --bind listener")
    assert httpx.get(f"http://127.0.0.1:{second}/").status_code == 200
    with pytest.raises(httpx.ConnectError):  # --bind wins over --host/--port, as in gunicorn
        httpx.get(f"http://127.0.0.1:{first}/", timeout=1)


def test_ipv6_loopback(serve) -> None:
    try:
        port = free_port(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    server = serve("asgi_apps:app", "--bind", f"[::1]:{port}", bind=False)
    server.wait_for(lambda: _connectable(socket.AF_INET6, ("::1", port)), what="the IPv6 listener")
    assert httpx.get(f"http://[::1]:{port}/echo").json()["client"][0] == "::1"


@pytest.mark.parametrize(("app", "args"), [(app, args) for app, _, args in SERVERS])
def test_running_out_of_file_descriptors_does_not_kill_the_server(serve, app: str, args: tuple[str, ...]) -> None:
    limit = 64

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    server = serve(app, "--no-access-log", *args, preexec_fn=low_limit)
    assert httpx.get(server.url + "/").status_code == 200
    flood = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(limit * 2)]
    if "-w" in args:  # accept.py takes them a few at a time, and says when accept() fails
        server.wait_for(lambda: "accept() failed: [Errno 24] Too many open files; retrying in 1s" in server.stderr,
                        what="EMFILE")
    else:  # the event loop's server accepts until every descriptor is taken, and then fails with EMFILE
        server.wait_for(lambda: len(os.listdir(f"/proc/{server.proc.pid}/fd")) >= limit, what="EMFILE")
    for sock in flood:
        sock.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            assert httpx.get(server.url + "/", timeout=2).status_code == 200
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "the server did not recover from EMFILE"
    assert server.proc.poll() is None
