"""Apps for the observability tests: a loop that blocks, requests that run long, app metrics."""

import asyncio
import os
import time

RECORD = os.environ.get("TEST_RECORD_FILE")


def _record(line):
    if RECORD:
        with open(RECORD, "a") as f:
            f.write(line + "\n")


async def _respond(send, status, body):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def hold_the_loop_half_a_second():
    time.sleep(0.5)


async def wait_far_too_long():
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        _record("cancelled")
        raise


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/block":
        hold_the_loop_half_a_second()
    elif path == "/slow":
        await asyncio.sleep(1.0)
    elif path == "/forever":
        await wait_far_too_long()
    elif path.startswith("/status/"):  # any status the app asks for, even one past 599
        await _respond(send, int(path[8:]), b"ok")
        return
    await _respond(send, 200, b"ok")


def sleep_past_the_deadline(seconds):
    time.sleep(seconds)


def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/whoami":  # as the app sees its client through a proxy
        body = f"{environ['REMOTE_ADDR']} {environ['wsgi.url_scheme']} {environ.get('HTTP_HOST')}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/forever":
        sleep_past_the_deadline(3.0)
        _record("finished")
    elif path == "/slow":
        sleep_past_the_deadline(1.0)
    body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def counted():
    """A Flask app counting its requests with prometheus_client, in multiprocess mode."""
    from flask import Flask
    from prometheus_client import Counter

    _record(os.environ.get("PROMETHEUS_MULTIPROC_DIR", "-"))
    app = Flask(__name__)
    hits = Counter("app_hits", "Requests the app saw")

    @app.route("/")
    def index():
        hits.inc()
        return "ok"

    return app


def gated():
    """The WSGI app, once the file TEST_GATE does not exist: a worker that boots as long as it does."""
    gate = os.environ["TEST_GATE"]
    if os.path.exists(gate):
        _record("waiting")
        while os.path.exists(gate):
            time.sleep(0.01)
    return wsgi
