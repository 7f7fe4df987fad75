"""Real framework apps served by tricorn: Flask, Django (WSGI and ASGI), FastAPI, Starlette, Quart."""

from __future__ import annotations

import httpx


def test_flask(serve) -> None:
    server = serve("flask_app:app", "--root-path", "/app")
    assert "(wsgi)" in server.wait_for(lambda: "Serving" in server.stderr and server.stderr, what="startup")
    r = httpx.get(server.url + "/app/?a=1")
    assert r.json() == {"framework": "flask", "args": {"a": "1"}, "script_root": "/app"}
    r = httpx.post(server.url + "/app/upload", data={"field": "value"})
    assert r.json() == {"size": 11, "form": {"field": "value"}}
    r = httpx.get(server.url + "/app/stream")
    assert r.text == "line 0\nline 1\nline 2\n"
    assert httpx.get(server.url + "/app/error").status_code == 500
    server.stop()
    assert "flask view failed" in server.stderr


def test_django_wsgi_and_asgi(serve) -> None:
    for app, interface in (("django_app:application", "wsgi"), ("django_app:asgi_application", "asgi3")):
        server = serve(app)
        r = httpx.post(server.url + "/hello/?q=search", content=b"payload")
        assert r.status_code == 200, server.stderr
        assert r.json() == {"framework": "django", "path": "/hello/", "method": "POST", "q": "search",
                            "body": "payload"}
        assert httpx.get(server.url + "/missing").status_code == 404
        assert f"({interface})" in server.stderr


def test_fastapi(serve) -> None:
    server = serve("fastapi_app:app", "--root-path", "/api")
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/items/42?q=x").json() == {"item_id": 42, "q": "x"}
        assert client.post("/items", json={"name": "pen", "price": 1.5}).json() == {
            "name": "pen", "price": 1.5, "total": 3.0}
        assert client.post("/items", json={"name": "pen"}).status_code == 422
        assert client.get("/state").json() == {"greeting": "hello from lifespan", "root_path": "/api"}
        assert client.get("/sync").json() == {"sync": True}


def test_starlette_streaming_and_upload(serve) -> None:
    server = serve("starlette_app:app")
    with httpx.Client(base_url=server.url) as client:
        with client.stream("GET", "/stream") as r:
            assert r.headers["transfer-encoding"] == "chunked"
            assert list(r.iter_lines()) == ["0", "1", "2", "3", "4"]
        assert client.post("/upload", content=b"z" * 300_000).json() == {"size": 300_000}
        assert client.get("/").json() == {"path": "/", "root_path": ""}


def test_quart(serve) -> None:
    server = serve("quart_app:app")
    assert httpx.get(server.url + "/?x=y").json() == {"framework": "quart", "args": {"x": "y"}}
    assert httpx.post(server.url + "/echo", content=b"12345").json() == {"size": 5}
