"""Raw WSGI apps for the tests, most wrapped in wsgiref.validate."""

import json
import os
import tempfile
import threading
import time
from wsgiref.validate import validator

CLOSED = os.environ.get("TEST_RECORD_FILE")


def _record(line):
    if CLOSED:
        with open(CLOSED, "a") as f:
            f.write(line + "\n")


def _json(start_response, data, status="200 OK"):
    body = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                            ("X-App", "called")])
    return [body]


def _read_all(stream):
    body = b""
    while chunk := stream.read(65536):  # wsgiref.validate insists on a size
        body += chunk
    return body


def _echo(environ, start_response):
    body = _read_all(environ["wsgi.input"])
    headers = [[k[5:].lower().replace("_", "-"), v] for k, v in environ.items() if k.startswith("HTTP_")]
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if key in environ:
            headers.append([key.lower().replace("_", "-"), environ[key]])
    return _json(start_response, {
        "method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"], "script_name": environ["SCRIPT_NAME"],
        "raw_path": environ["RAW_URI"].split("?")[0], "query_string": environ["QUERY_STRING"],
        "http_version": environ["SERVER_PROTOCOL"][5:], "headers": headers, "body": body.decode("latin-1"),
        "scheme": environ["wsgi.url_scheme"], "remote_addr": environ.get("REMOTE_ADDR"),
        "server_name": environ["SERVER_NAME"], "server_port": environ["SERVER_PORT"],
        "multithread": environ["wsgi.multithread"], "thread": threading.current_thread().name,
    })


echo = validator(_echo)


class _Closing:
    def __init__(self, chunks):
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        _record("closed")


def _app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stream":
        def gen():
            for i in range(3):
                yield b"chunk%d\n" % i
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path.startswith("/status/"):
        code = path.rsplit("/", 1)[1]
        start_response(f"{code} Status", [("Content-Type", "text/plain"), ("X-App", "called")])
        return [b"some body"]
    if path == "/empty":
        start_response("200 OK", [])
        return []
    if path == "/closing":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _Closing([b"a", b"b"])
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written;")
        return [b"returned"]
    if path == "/raise":
        raise RuntimeError("boom in the WSGI app")
    if path == "/raise-in-iter":
        def gen():
            yield b"first"
            raise RuntimeError("boom while iterating")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/file":
        size = int(environ["QUERY_STRING"] or "100000")
        f = tempfile.TemporaryFile()
        f.write(bytes(range(256)) * (size // 256) + b"z" * (size % 256))
        f.seek(0)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 8192)
    if path == "/readline":
        stream = environ["wsgi.input"]
        lines = [stream.readline().decode(), stream.readline(3).decode()]
        lines += [line.decode() for line in stream]
        return _json(start_response, lines)
    if path == "/count-upload":
        total = 0
        stream = environ["wsgi.input"]
        while chunk := stream.read(65536):
            total += len(chunk)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(total).encode()]
    if path == "/upload-record":
        try:
            _read_all(environ["wsgi.input"])
        except OSError as exc:
            _record(f"input-raised-{type(exc).__name__}")
            raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read"]
    if path == "/download":
        size = int(environ["QUERY_STRING"])
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])

        def gen():
            block = b"x" * 65536
            sent = 0
            while sent < size:
                piece = block[: min(65536, size - sent)]
                sent += len(piece)
                yield piece
        return gen()
    if path == "/sleep":
        _record("sleeping")  # the tests' sign that the request is inside the app
        time.sleep(float(environ["QUERY_STRING"] or "1"))
        return _json(start_response, {"thread": threading.current_thread().name, "pid": os.getpid()})
    if path == "/rss":
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [fields["VmHWM"].split()[0].encode()]
    return _echo(environ, start_response)


app = validator(_app)


def unvalidated(environ, start_response):
    """Contract breaches that wsgiref.validate would catch before tricorn could."""
    path = environ["PATH_INFO"]
    if path == "/start-twice":
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b"x"]
    if path == "/none":
        start_response("200 OK", [])
        return None
    if path == "/str-chunk":
        start_response("200 OK", [])
        return ["text, not bytes"]
    if path == "/bad-status":
        start_response("OK", [])
        return [b"x"]
    if path == "/int-status":
        start_response(200, [])
        return [b"x"]
    if path == "/bytes-headers":
        start_response("200 OK", [(b"X-A", b"b")])
        return [b"x"]
    if path == "/headers-not-pairs":
        start_response("200 OK", 5)
        return [b"x"]
    if path == "/write-str":
        start_response("200 OK", [])("text, not bytes")
        return []
    if path == "/exc-info":
        try:
            raise ValueError("handled")
        except ValueError:
            import sys
            start_response("200 OK", [])
            start_response("500 Internal Server Error", [("X-Handled", "yes")], sys.exc_info())
        return [b"recovered"]
    if path == "/no-start":
        return [b"x"]
    if path == "/file":
        return _app(environ, start_response)  # unwrapped, so the server sees its FileWrapper
    return app(environ, start_response)


def stuck_in_a_slow_query(seconds):
    time.sleep(seconds)  # every thread stuck here: the worker must be killed with this stack


def hangs(environ, start_response):
    if environ["PATH_INFO"] == "/block":
        stuck_in_a_slow_query(60)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def pid(environ, start_response):
    """Answers with the serving process's pid."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
