"""The apps the benchmarks serve, identical for tricorn and its peers."""

import asyncio
import time


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


async def ws_echo(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})


def wsgi_stream(environ, start_response):
    """`/?N`: N MiB in 64 KiB pieces from a generator (slow readers hold the response open)."""
    size = int(environ.get("QUERY_STRING") or "0") * 1024 * 1024
    if not size:
        return wsgi_hello(environ, start_response)
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    piece = b"x" * 65536
    return (piece for _ in range(size // 65536))


def wsgi_sleep(environ, start_response):
    """I/O-bound: 10 ms waiting (a database call), then a small answer."""
    time.sleep(0.01)
    return wsgi_hello(environ, start_response)
