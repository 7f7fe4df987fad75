"""ASGI: the http scope, lifespan, ASGI 2, app errors and contract breaches, disconnects."""

from __future__ import annotations

import socket

import httpx
import pytest

from .conftest import exchange


def test_http_scope_is_complete(serve) -> None:
    server = serve("asgi_apps:app", "--root-path", "/mount")
    r = httpx.get(server.url + "/caf%C3%A9/a%2Fb?x=1&y=%20", headers={"X-Custom": "Value"})
    scope = r.json()
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["root_path"] == "/mount"
    assert scope["path"] == "/mount/café/a/b"
    assert scope["raw_path"] == "/mount/caf%C3%A9/a%2Fb"
    assert scope["query_string"] == "x=1&y=%20"
    assert ["x-custom", "Value"] in scope["headers"]
    assert scope["headers"][0] == ["host", f"127.0.0.1:{server.port}"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ["127.0.0.1", server.port]
    assert scope["state"] == ["started"]  # lifespan state is copied into every request


def test_lifespan_startup_and_shutdown_run(serve) -> None:
    server = serve("asgi_apps:app")
    assert httpx.get(server.url + "/").status_code == 200
    assert server.records() == ["startup"]
    assert server.stop() == 0
    assert server.records() == ["startup", "shutdown"]


@pytest.mark.parametrize("app", ["asgi_apps:failing_startup", "asgi_apps:failing_startup_with_an_exception"])
def test_lifespan_startup_failure_stops_the_server(serve, app: str) -> None:
    server = serve(app)
    assert server.wait() == 3
    assert "Application startup failed: database unreachable" in server.stderr


def test_lifespan_auto_tolerates_apps_without_it_and_on_does_not(serve) -> None:
    server = serve("asgi_apps:raising_lifespan", "--lifespan", "auto")
    assert httpx.get(server.url + "/").status_code == 200
    assert "lifespan' protocol appears unsupported" in server.stderr
    strict = serve("asgi_apps:raising_lifespan", "--lifespan", "on")
    assert strict.wait() == 3
    assert "no lifespan here" in strict.stderr


def test_lifespan_off_never_calls_it(serve) -> None:
    server = serve("asgi_apps:app", "--lifespan", "off")
    assert httpx.get(server.url + "/").status_code == 200
    assert server.records() == []


def test_asgi2_app_is_detected_and_served(serve) -> None:
    server = serve("asgi_apps:ASGI2")
    assert httpx.get(server.url + "/").text == "asgi2"
    assert "(asgi2)" in server.stderr


@pytest.mark.parametrize("args", [("asgi_apps:factory()",), ("asgi_apps:factory", "--factory")])
def test_factories(serve, args) -> None:
    server = serve(*args)
    assert httpx.get(server.url + "/x").json()["path"] == "/x"


def test_exception_before_the_response_is_a_500_with_a_traceback(serve) -> None:
    server = serve("asgi_apps:app")
    r = httpx.get(server.url + "/raise-before")
    assert r.status_code == 500 and r.text == "Internal Server Error\n"
    assert httpx.get(server.url + "/").status_code == 200
    server.stop()
    assert "Exception in ASGI application" in server.stderr
    assert "RuntimeError: boom before the response" in server.stderr


def test_exception_after_the_response_started_closes_the_connection(serve) -> None:
    server = serve("asgi_apps:app")
    responses, closed = exchange(server.port, b"GET /raise-after HTTP/1.1\r\nHost: t\r\n\r\n", half_close=False)
    assert closed
    assert not responses[0].complete  # the chunked body never got its last chunk
    assert responses[0].body == b"partial"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/body-before-start", "expected 'http.response.start' first, got 'http.response.body'"),
        ("/str-body", "body must be bytes, got str"),
        ("/str-status", "invalid status code '200'; expected an int from 100 to 999"),
        # the values an app hands us, checked with our message in the mypyc build too (not TypeError)
        ("/none-status", "invalid status code None"),
        ("/str-header-name", "invalid header name 'x-a'"),
        ("/str-header-value", "has a value of type str; expected bytes"),
        ("/headers-not-pairs", "headers must be an iterable of (name, value) pairs, got 5"),
        ("/not-a-dict", "expected 'http.response.start' first, got None"),
        ("/no-response", "returned without sending 'http.response.start'"),
        ("/bad-header", "has a CR, LF or NUL in its value"),
        ("/too-long", "more body than its content-length"),  # found before the head was written
    ],
)
def test_contract_breaches_are_a_500_and_say_what_went_wrong(serve, path: str, message: str) -> None:
    server = serve("asgi_apps:app")
    r = httpx.get(server.url + path)
    assert r.status_code == 500
    assert "injected" not in r.headers
    server.stop()
    assert message in server.stderr


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/incomplete", "returned without completing the response"),
    ],
)
def test_breaches_after_the_head_close_the_connection(serve, path: str, message: str) -> None:
    server = serve("asgi_apps:app")
    responses, closed = exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), half_close=False)
    assert closed and not (responses and responses[0].complete)
    server.stop()
    assert message in server.stderr


def test_short_body_closes_the_connection(serve) -> None:
    server = serve("asgi_apps:app")
    responses, closed = exchange(server.port, b"GET /short HTTP/1.1\r\nHost: t\r\n\r\n", half_close=False)
    assert closed and responses[0].body == b"short" and not responses[0].complete


def test_http_disconnect_reaches_the_app(serve) -> None:
    server = serve("asgi_apps:app")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /wait-disconnect HTTP/1.1\r\nHost: t\r\n\r\n")
    server.wait_for(lambda: "disconnected" in server.records(), what="http.disconnect")


def test_body_ignored_by_the_app_keeps_the_connection_usable(serve) -> None:
    server = serve("asgi_apps:app")
    raw = (b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
           b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n")
    responses, _ = exchange(server.port, raw)
    assert [r.body[:7] for r in responses] == [b"ignored", b'{"metho']


def test_large_body_ignored_by_the_app_closes_instead_of_draining_forever(serve) -> None:
    server = serve("asgi_apps:app")
    size = 64 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        sock.sendall(bytes(65536))
        data = b""
        while b"ignored" not in data:
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200")
        sent = 65536
        try:
            while sent < size:
                sock.sendall(bytes(65536))
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert sent < 16 * 1024 * 1024, "the server drained the whole unread body"


def test_requests_run_in_tasks_of_the_apps_own_task_factory(serve) -> None:
    assert httpx.get(serve("asgi_apps:own_task_factory").url + "/").text == "made by the app's factory"
