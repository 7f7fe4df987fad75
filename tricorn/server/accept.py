"""Taking connections from a listening socket that other workers share.

An event loop's server accepts every connection waiting in the kernel's queue at each wakeup, so
the worker that happens to run first takes a burst of connections and keeps them (keep-alive):
an ASGI worker took 61 of a burst of 64 on `-w 2`, leaving the other worker's core idle, and a WSGI
worker queues their requests behind its busy threads while the other workers' threads wait (the
spread measured before and after: docs/benchmarks.md). Gunicorn's gthread workers do the same
(gunicorn issues #2191, #3433: two slow requests on a worker with one thread, the other worker
idle). Here a worker under a master accepts one connection per wakeup, so a burst alternates
between the workers that are free to take it.

A WSGI worker also accepts none while every thread runs a request or one is on its way (a
connection just accepted with bytes waiting, until its request is complete), which leaves the
kernel's queue to the workers with a free thread. Requests whose body is still arriving and threads
waiting for a slow client to read do not count (wsgi.ThreadPool): they hold no thread the app
needs, so idle, silent, half-sent and slow connections never stop a worker accepting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import TYPE_CHECKING

from .connection import HttpConnection

if TYPE_CHECKING:
    from .state import ServerState

logger = logging.getLogger("tricorn.error")

# How long a new connection counts as a request on its way: its client sends at once (a browser's
# preconnect may not, and must not keep the worker from accepting for the header timeout).
FIRST_REQUEST_S = 0.2
DEFER_ACCEPT_S = 1


def _has_data(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset already: reading it will say so


class Acceptor:
    def __init__(
        self, state: ServerState, sock: socket.socket, ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float | None = None,
    ) -> None:
        self.state = state
        self.loop = state.loop
        self.sock = sock
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.accepting = False
        self.closed = False
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # The kernel keeps a connection until its first bytes arrive (or DEFER_ACCEPT_S pass):
            # a connection that sends nothing takes no accept and counts as no request on its way.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_S)

    def start(self) -> None:
        """Accept (again): at start, and when one of the worker's threads frees."""
        if not self.accepting and not self.closed:
            self.accepting = True
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def pause(self) -> None:
        if self.accepting:
            self.accepting = False
            self.loop.remove_reader(self.sock.fileno())

    def close(self) -> None:
        self.pause()
        self.closed = True
        self.sock.close()

    def _accept(self) -> None:
        if self.state.threads_busy():
            self.state.accept_paused = True  # until thread_freed() starts the acceptors again
            self.pause()
            return
        try:
            client, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it, or the client gave up first
        except OSError as exc:
            # Out of file descriptors: wait a moment rather than spin on a readable socket.
            logger.error("accept() failed: %s; retrying in 1s", exc)
            self.pause()
            self.loop.call_later(1.0, self.start)
            return
        client.setblocking(False)
        # Its request, on its way, will need a thread: count it now, or a burst of connections
        # would all be accepted before the first request is read. Not one that has sent nothing
        # (with TCP_DEFER_ACCEPT: for a second already), nor, once its first bytes are read, one
        # whose request is not complete (connection.py settles it): those may never send one.
        fresh = self.state.threads > 0 and _has_data(client)
        connection = HttpConnection(self.state, fresh=fresh)
        if fresh:
            self.state.starting += 1
            self.loop.call_later(FIRST_REQUEST_S, connection.settle)
        self.loop.create_task(self._connect(client, connection))

    async def _connect(self, client: socket.socket, connection: HttpConnection) -> None:
        try:
            await self.loop.connect_accepted_socket(
                lambda: connection, client, ssl=self.ssl_context, ssl_handshake_timeout=self.handshake_timeout)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            logger.debug("connection dropped before it started: %s", exc)
            client.close()
            connection.settle()
