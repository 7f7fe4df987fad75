"""Listeners: unix sockets, IPv6, --host/--port, and running out of file descriptors."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import APPS, ROOT


def _wait_until_connectable(family: int, address: object, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(address)  # type: ignore[arg-type]
                return
            except OSError:
                time.sleep(0.05)
    raise AssertionError("server never listened")


def _spawn(*args: str, **kwargs) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-m", "tricorn", "asgi_apps:app", "--app-dir", str(APPS), *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)
    if proc.stderr:
        proc.stderr.close()


def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "tricorn.sock"
    path.write_text("")  # a stale non-socket file must not be removed silently: use a fresh name
    path.unlink()
    proc = _spawn("--bind", f"unix:{path}")
    try:
        _wait_until_connectable(socket.AF_UNIX, str(path), proc)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
            r = client.get("http://localhost/echo")
        assert r.status_code == 200 and r.json()["client"] is None
    finally:
        _stop(proc)


def _free_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def test_host_and_port_shortcuts_and_two_binds() -> None:
    first, second = _free_port(), _free_port()
    proc = _spawn("--host", "127.0.0.1", "--port", str(first), "--bind", f"127.0.0.1:{second}")
    try:
        _wait_until_connectable(socket.AF_INET, ("127.0.0.1", second), proc)
        assert httpx.get(f"http://127.0.0.1:{second}/").status_code == 200
        with pytest.raises(httpx.ConnectError):  # --bind wins over --host/--port, as in gunicorn
            httpx.get(f"http://127.0.0.1:{first}/", timeout=1)
    finally:
        _stop(proc)


def test_ipv6_loopback() -> None:
    try:
        port = _free_port(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    proc = _spawn("--bind", f"[::1]:{port}")
    try:
        _wait_until_connectable(socket.AF_INET6, ("::1", port), proc)
        r = httpx.get(f"http://[::1]:{port}/echo")
        assert r.json()["client"][0] == "::1"
    finally:
        _stop(proc)


def test_running_out_of_file_descriptors_does_not_kill_the_server(serve) -> None:  # type: ignore[no-untyped-def]
    limit = 64

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    server = serve("asgi_apps:app", "--no-access-log")
    server.proc.kill()  # replaced by one started with a low descriptor limit
    server.proc.wait()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tricorn", "asgi_apps:app", "--app-dir", str(APPS), "--no-access-log",
         "--bind", f"fd://{listener.fileno()}"],
        cwd=ROOT, pass_fds=[listener.fileno()], preexec_fn=low_limit,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    listener.close()
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
        flood = [socket.create_connection(("127.0.0.1", port)) for _ in range(limit * 2)]
        time.sleep(0.5)  # the server is now failing accept() with EMFILE
        for sock in flood:
            sock.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not recover from EMFILE"
        assert proc.poll() is None
    finally:
        _stop(proc)
