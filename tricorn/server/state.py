"""The bottom of the server package: what a worker's connections share (ServerState), the
contracts between the connection and the app adapters, and the ASGI and WSGI types. It imports
nothing from the modules above it, which all import it; where a contract names the connection,
it says `Any` (an HttpConnection), since connection.py imports this module."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Protocol

from ..config import Config
from ..stats import WorkerStats
from .access_log import AccessLog
from .h1 import Request, RequestParser
from .proxy import TrustedProxies

HIGH_WATER = 64 * 1024  # unread request body that pauses reading (uvicorn and h11 use 64 KiB too)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Cycle(Protocol):
    """One request/response cycle of an adapter, as the connection drives it."""

    def feed_body(self, data: bytes) -> None: ...
    def end_body(self) -> None: ...
    def disconnect(self) -> None: ...
    def client_eof(self) -> None: ...
    def writable_changed(self) -> None: ...


class Adapter(Protocol):
    """Runs the app for a request: starts a Cycle and gives it to the connection (`conn.cycle`,
    or `conn.upgrade()` for a WebSocket)."""

    def start(self, conn: Any, request: Request) -> object: ...


class Upgraded(Protocol):
    """What a connection hands its bytes to once it is no longer HTTP (an accepted WebSocket)."""

    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> None: ...
    def shutdown(self) -> None: ...


class UpgradedCycle(Cycle, Upgraded, Protocol):
    """A WebSocket session: the connection's cycle and the receiver of its bytes at once."""


class Connection(Protocol):
    """What the worker asks of every open connection."""

    transport: asyncio.Transport

    def check_deadline(self, now: float) -> None: ...
    def shutdown(self) -> None: ...


class Acceptor(Protocol):
    """A WSGI worker's own accept loop on a shared listener (accept.py)."""

    def start(self) -> None: ...
    def close(self) -> None: ...


def _nothing() -> None:
    pass


class ServerState:
    """What every connection of this process shares."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop, access_log: AccessLog | None) -> None:
        self.config = config
        self.loop = loop
        self.access_log = access_log
        self.adapter: Adapter = None  # type: ignore[assignment]  # set by the worker before it listens
        self.websockets: Adapter | None = None  # ASGI apps, unless --ws none
        self.connections: set[Connection] = set()
        self.in_flight = 0
        self.requests = 0
        self.stats = WorkerStats()  # reported to the master on each heartbeat (worker.py)
        # Whether each response is timed and counted for /metrics; and whether requests are timed at all.
        self.metrics = config.metrics_bind is not None
        self.timed = self.metrics or access_log is not None or bool(config.slow_request or config.request_timeout)
        self.threads = 0  # a WSGI worker's
        # ...and how many of them hold a request running app code, or one queued for them (not the
        # requests whose body is still arriving, nor those waiting for a slow client to read): the
        # WSGI worker's pool counts them, and calls thread_freed() when one frees (worker.py).
        self.busy_threads: Callable[[], int] = lambda: 0
        # A WSGI worker's, when it shares its listeners (accept.py); and the connections they took
        # whose first request has not begun.
        self.acceptors: list[Acceptor] = []
        self.accept_paused = False
        self.starting = 0
        self.shutting_down = False
        self.hurry = True  # stopping: idle connections close after DRAIN_IDLE, not at their deadline
        # --max-requests (a worker under a master): at this count, on_max_requests() stops the worker
        self.max_requests = 0
        self.on_max_requests: Callable[[], None] = _nothing
        # Read on every request: kept here rather than behind config.
        self.timeout_header = config.timeout_header
        self.timeout_body = config.timeout_body
        self.keep_alive = config.keep_alive
        self.limit_concurrency = config.limit_concurrency
        self.server_header = config.server_header
        self.date_header = config.date_header
        self.proxies = TrustedProxies(config.forwarded_allow_ips) if config.proxy_headers else None

    def threads_busy(self) -> bool:
        """Whether every thread has a request, or one on its way (accept.py); never for a worker
        without threads (ASGI)."""
        return self.threads > 0 and self.busy_threads() + self.starting >= self.threads

    def thread_freed(self) -> None:
        if not self.threads_busy():
            self.accept_paused = False
            for acceptor in self.acceptors:
                acceptor.start()

    def new_parser(self) -> RequestParser:
        c = self.config
        return RequestParser(
            c.limit_request_line, c.limit_request_fields, c.limit_request_field_size,
            c.limit_request_head, c.limit_request_body,
        )
