"""Sockets the master answers between its other work: `/metrics` over HTTP and the control socket.

The master is one thread with one select loop (supervisor.py); these sockets join that select.
Everything is non-blocking: a client sends one request, gets one answer, and the connection
closes. A client has DEADLINE seconds for all of it and at most LIMIT bytes of request, so a slow
or hostile client costs the master nothing but a socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("tricorn.error")

DEADLINE = 5.0
LIMIT = 16 * 1024
Answer = Callable[[bytes], bytes]  # a whole request → the whole answer


@dataclass
class Endpoint:
    sock: socket.socket
    complete: Callable[[bytes], bool]  # whether these bytes are a whole request
    answer: Answer
    owner_only: bool = False  # unix sockets: refuse a peer whose uid is not ours


@dataclass
class _Client:
    sock: socket.socket
    endpoint: Endpoint
    deadline: float
    received: bytes = b""
    out: bytes = b""
    answered: bool = False


class Endpoints:
    def __init__(self) -> None:
        self.endpoints: dict[socket.socket, Endpoint] = {}
        self.clients: dict[socket.socket, _Client] = {}

    def add(self, endpoint: Endpoint) -> None:
        endpoint.sock.setblocking(False)
        self.endpoints[endpoint.sock] = endpoint

    def readers(self) -> list[int]:
        return [*(s.fileno() for s in self.endpoints), *(s.fileno() for s, c in self.clients.items() if not c.answered)]

    def writers(self) -> list[int]:
        return [s.fileno() for s, c in self.clients.items() if c.answered]

    def handle(self, readable: list[int], writable: list[int]) -> None:
        for sock, endpoint in list(self.endpoints.items()):
            if sock.fileno() in readable:
                self._accept(endpoint)
        for sock, client in list(self.clients.items()):
            if sock.fileno() in readable and not client.answered:
                self._read(client)
            elif sock.fileno() in writable and client.answered:
                self._write(client)
        now = time.monotonic()
        for client in [c for c in self.clients.values() if c.deadline < now]:
            self._close(client)

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._close(client)
        for sock in self.endpoints:
            sock.close()
        self.endpoints.clear()

    def _accept(self, endpoint: Endpoint) -> None:
        for _ in range(64):
            try:
                sock, _ = endpoint.sock.accept()
            except OSError:  # BlockingIOError: none left
                return
            if endpoint.owner_only and not _same_user(sock):
                logger.warning("Control socket: refused a client that is not this server's user")
                sock.close()
                continue
            sock.setblocking(False)
            self.clients[sock] = _Client(sock, endpoint, time.monotonic() + DEADLINE)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(LIMIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        client.received += data
        if not data or len(client.received) > LIMIT:
            self._close(client)
            return
        if client.endpoint.complete(client.received):
            try:
                client.out = client.endpoint.answer(client.received)
            except Exception:
                logger.exception("Error answering on %s", client.endpoint.sock.getsockname())
                self._close(client)
                return
            client.answered = True
            self._write(client)

    def _write(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.out)
        except BlockingIOError:
            return
        except OSError:
            sent = len(client.out)
        client.out = client.out[sent:]
        if not client.out:
            self._close(client)

    def _close(self, client: _Client) -> None:
        self.clients.pop(client.sock, None)
        with contextlib.suppress(OSError):
            client.sock.close()


def _same_user(sock: socket.socket) -> bool:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    uid: int = struct.unpack("3i", creds)[1]
    return uid == os.getuid()


# HTTP, for /metrics -------------------------------------------------------------------------------

def http_complete(data: bytes) -> bool:
    return b"\r\n\r\n" in data or b"\n\n" in data


def http_answer(route: Callable[[str, str, dict[str, str]], tuple[int, str, str]]) -> Answer:
    """An HTTP/1.x answer from `route(method, path, headers) -> (status, content type, body)`."""

    def answer(data: bytes) -> bytes:
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("latin-1")
        lines = head.replace("\r\n", "\n").split("\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _http(400, "text/plain; charset=utf-8", "Bad request\n")
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                return _http(400, "text/plain; charset=utf-8", "Bad request\n")
            headers[name.strip().lower()] = value.strip()
        method, target = parts[0], parts[1]
        status, kind, body = route(method, target.split("?", 1)[0], headers)
        return _http(status, kind, body, head_only=method == "HEAD")

    return answer


REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def _http(status: int, kind: str, body: str, head_only: bool = False) -> bytes:
    payload = body.encode()
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\ncontent-type: {kind}\r\n"
            f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n").encode()
    return head if head_only else head + payload
