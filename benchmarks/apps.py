"""The apps the benchmarks serve, identical for tricorn and its peers."""

import asyncio
import json


async def asgi_hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


async def asgi_sleep(scope, receive, send):
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.01)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


def wsgi_hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world!"]


def _fastapi():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/")
    def index():
        return {"message": "Hello, world!", "items": list(range(10))}

    return app


def _flask():
    from flask import Flask, jsonify

    app = Flask(__name__)

    @app.route("/")
    def index():
        return jsonify(message="Hello, world!", items=list(range(10)))

    return app


try:
    fastapi_json = _fastapi()
except ImportError:  # pragma: no cover
    fastapi_json = None
try:
    flask_json = _flask()
except ImportError:  # pragma: no cover
    flask_json = None

payload = json.dumps({"message": "Hello, world!"})
