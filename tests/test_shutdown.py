"""SIGTERM / SIGINT: stop accepting, finish in-flight requests within --graceful-timeout, exit 0."""

from __future__ import annotations

import concurrent.futures
import signal
import socket
import time

import httpx
import pytest


def _wait_in_flight(server, path: str):
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(httpx.get, server.url + path, timeout=30)
    server.wait_for(lambda: "sleeping" in server.records(), what="the slow request inside the app")
    return pool, future


@pytest.mark.parametrize("app", ["asgi_apps:app", "wsgi_apps:app"])
def test_sigterm_lets_in_flight_requests_finish(serve, app: str) -> None:
    server = serve(app)
    with socket.create_connection(("127.0.0.1", server.port)) as idle:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        pool, slow = _wait_in_flight(server, "/sleep?1.5")
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert idle.recv(10) == b""  # idle keep-alive connections are closed promptly...
        assert time.monotonic() - started < 4.0  # ...after the 0.25 s drain grace, not after --keep-alive (5 s)
        response = slow.result()
        assert response.status_code == 200
        assert response.headers.get("connection") == "close"
        assert server.wait() == 0
        pool.shutdown()
    if app.startswith("asgi"):
        assert [r for r in server.records() if r != "sleeping"] == ["startup", "shutdown"]


def test_graceful_timeout_bounds_the_wait(serve) -> None:
    server = serve("asgi_apps:app", "--graceful-timeout", "0.5")
    pool, slow = _wait_in_flight(server, "/sleep?20")
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait() == 0
    assert time.monotonic() - started < 5
    with pytest.raises(httpx.HTTPError):
        slow.result()
    pool.shutdown()
    assert "graceful timeout: closing 1 connection(s)" in server.stderr


def test_second_sigint_exits_at_once(serve) -> None:
    server = serve("asgi_apps:app", "--graceful-timeout", "30")
    pool, slow = _wait_in_flight(server, "/sleep?20")
    server.proc.send_signal(signal.SIGINT)
    server.wait_for(lambda: "Shutting down" in server.stderr, what="graceful shutdown")
    started = time.monotonic()
    server.proc.send_signal(signal.SIGINT)
    assert server.wait() == 1
    assert time.monotonic() - started < 3
    assert "second interrupt" in server.stderr
    with pytest.raises(httpx.HTTPError):
        slow.result()
    pool.shutdown()


def test_no_new_connections_after_sigterm(serve) -> None:
    server = serve("asgi_apps:app")
    pool, slow = _wait_in_flight(server, "/sleep?1")
    server.proc.send_signal(signal.SIGTERM)
    server.wait_for(lambda: "Shutting down" in server.stderr, what="graceful shutdown")
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url + "/", timeout=2)
    assert slow.result().status_code == 200
    pool.shutdown()
