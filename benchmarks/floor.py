#!/usr/bin/env python3
"""The floor: the least a Python server can do per request, to measure the peers' targets against.

Not a server to use. Each serves one app from one thread with none of what a server owes its
users: no limits, no timeouts, no error responses, no request bodies, no pipelining order, no
logging, no supervision, nothing for a slow client. What it does is what every request needs:
read, parse (httptools, as tricorn), build the environ or scope, call the app, frame the response
with a Content-Length, write, close when asked; the garbage collector set as tricorn sets it. The
speed a real server can reach is below this.

  wsgi   one thread on select.epoll; the app runs inline: no hand-off to a pool
  asgi   a uvloop protocol; the app runs in a task, as every ASGI server does

    python benchmarks/floor.py wsgi benchmarks.apps:wsgi_hello 8000
    python benchmarks/wsgi_peers.py hello --servers floor,tricorn,granian   # beside the peers
    python benchmarks/asgi_peers.py hello close --servers floor,tricorn,granian
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import io
import select
import socket
import sys
from pathlib import Path
from typing import Any

import httptools
import uvloop


class Request:
    """httptools' callbacks: the head of each complete request, in order."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.done: list[tuple[bytes, bytes, list[tuple[bytes, bytes]], bool]] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_message_complete(self) -> None:
        parser = self.parser
        self.done.append((parser.get_method(), self.url, self.headers, parser.should_keep_alive()))
        self.url, self.headers = b"", []


def head(status: bytes, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool) -> bytes:
    lines = [b"HTTP/1.1 " + status + b"\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in headers if name.lower() != b"content-length"]
    lines.append(b"content-length: %d\r\n" % len(body))
    lines.append(b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
    return b"".join(lines) + body


def serve_wsgi(app: Any, port: int) -> None:
    base = {"SCRIPT_NAME": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(port), "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": False,
            "wsgi.multiprocess": False, "wsgi.run_once": False}

    def respond(client: tuple[str, int], method: bytes, url: bytes, headers: list[tuple[bytes, bytes]],
                keep_alive: bool) -> bytes:
        path, _, query = url.partition(b"?")
        environ = base.copy()
        environ.update(REQUEST_METHOD=method.decode(), PATH_INFO=path.decode("latin-1"),
                       QUERY_STRING=query.decode("latin-1"), SERVER_PROTOCOL="HTTP/1.1",
                       REMOTE_ADDR=client[0], REMOTE_PORT=str(client[1]))
        environ["wsgi.input"] = io.BytesIO()
        for name, value in headers:
            environ["HTTP_" + name.decode("latin-1").upper().replace("-", "_")] = value.decode("latin-1")
        started: list[Any] = []
        result = app(environ, lambda status, headers, exc_info=None: started.extend((status, headers)))
        body = b"".join(result)
        if hasattr(result, "close"):
            result.close()
        encoded = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in started[1]]
        return head(started[0].encode("latin-1"), encoded, body, keep_alive)

    listener = socket.create_server(("127.0.0.1", port), backlog=2048)
    listener.setblocking(False)
    poll = select.epoll()
    poll.register(listener.fileno(), select.EPOLLIN)
    connections: dict[int, tuple[socket.socket, tuple[str, int], Request]] = {}
    print("ready", flush=True)
    while True:
        for fd, _ in poll.poll():
            if fd == listener.fileno():
                while True:
                    try:
                        sock, client = listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    connections[sock.fileno()] = (sock, client, Request())
                    poll.register(sock.fileno(), select.EPOLLIN)
                continue
            sock, client, request = connections[fd]
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionError:
                data = b""
            keep_alive = False
            if data:
                request.parser.feed_data(data)
                keep_alive = all(done[3] for done in request.done)
                sock.send(b"".join(respond(client, *done) for done in request.done))
                request.done.clear()
            if not keep_alive:
                poll.unregister(fd)
                sock.close()
                del connections[fd]


class ASGIConnection(asyncio.Protocol):
    def __init__(self, app: Any) -> None:
        self.app = app
        self.request = Request()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.server = transport.get_extra_info("sockname")
        self.client = transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        self.request.parser.feed_data(data)
        for done in self.request.done:
            asyncio.get_running_loop().create_task(self.run(*done))
        self.request.done.clear()

    async def run(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        path, _, query = url.partition(b"?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method.decode(),
                 "scheme": "http", "path": path.decode("utf-8", "surrogateescape"), "raw_path": path,
                 "query_string": query, "root_path": "", "headers": headers, "server": self.server,
                 "client": self.client}
        response: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                response.extend((message["status"], message.get("headers", [])))
            elif not message.get("more_body"):
                status = str(response[0]).encode() + b" OK"
                self.transport.write(head(status, response[1], message.get("body", b""), keep_alive))
                if not keep_alive:
                    self.transport.close()

        await self.app(scope, receive, send)


async def serve_asgi(app: Any, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(
        lambda: ASGIConnection(app), "127.0.0.1", port, backlog=2048)
    print("ready", flush=True)
    await server.serve_forever()


def main() -> None:
    kind, target, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    module, _, name = target.partition(":")
    gc.set_threshold(10_000, *gc.get_threshold()[1:])  # as tricorn's --gc-threshold default
    app = getattr(importlib.import_module(module), name)
    gc.freeze()
    if kind == "wsgi":
        serve_wsgi(app, port)
    else:
        uvloop.run(serve_asgi(app, port))


if __name__ == "__main__":
    main()
