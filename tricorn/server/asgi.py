"""ASGI 3.0: the http request/response cycle and the lifespan protocol.

Each request runs the app in its own task. The response head is held back until the first body
message so that head and body leave in one write, and a body given whole gets a Content-Length
instead of chunked framing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from .h1 import PERCENT, Request, ResponseError
from .state import HIGH_WATER, ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from ..config import Config
    from .connection import HttpConnection


logger = logging.getLogger("tricorn.error")

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}
ERROR_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
ERROR_BODY = b"Internal Server Error\n"
ERROR_BODIES = {500: ERROR_BODY, 504: b"Gateway Timeout: the app took longer than --request-timeout\n"}
TASK_NAME = "tricorn: ASGI request"


class ASGIProtocolError(Exception):
    """The app broke the ASGI contract; the message says how."""


def decode_path(raw_path: bytes) -> str:
    """ASGI `path`: percent-escapes and UTF-8 decoded (undecodable bytes kept as surrogates)."""
    if PERCENT in raw_path:
        raw_path = unquote_to_bytes(raw_path)
    return raw_path.decode("utf-8", "surrogateescape")


def as_bytes(value: Any, field: str) -> bytes:
    """A message's bytes `field` whose class is not bytes, as bytes, or the error that says why it
    cannot be: HTTP's bodies and the WebSocket's alike (callers test for bytes first, the common case)."""
    if not isinstance(value, (bytes, bytearray, memoryview)):  # a subclass of bytes too
        raise ASGIProtocolError(f"{field} must be bytes, got {type(value).__name__}")
    return bytes(value)


class ASGI2App:
    """Runs an ASGI 2 app (scope → instance; await instance(receive, send)) as ASGI 3."""

    def __init__(self, app: Callable[[Scope], Callable[[Receive, Send], Awaitable[None]]]) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return self.app(scope)(receive, send)  # the instance's own awaitable: its stack is the app's


class ASGIAdapter:
    """Starts an `HttpCycle` per request."""

    def __init__(self, app: ASGIApp, config: Config, state: dict[str, Any]) -> None:
        self.app = app
        self.root_path = config.root_path
        self.raw_root_path = config.root_path.encode("utf-8")
        self.state = state

    def start(self, conn: HttpConnection, request: Request) -> None:
        cycle = conn.cycle = HttpCycle(self, conn, request)
        loop = conn.loop
        if loop.get_task_factory() is None:
            # Named here: a task left unnamed formats a "Task-N" name of its own (CPython < 3.12).
            cycle.task = asyncio.Task(cycle.run(), loop=loop, name=TASK_NAME)
        else:
            cycle.task = loop.create_task(cycle.run())


class HttpCycle:
    __slots__ = (
        "app",
        "app_call",
        "body_done",
        "buffered",
        "chunks",
        "complete",
        "conn",
        "disconnected",
        "eof",
        "expired",
        "final_delivered",
        "head_sent",
        "headers",
        "paused",
        "request",
        "scope",
        "started",
        "status",
        "task",
        "waiter",
    )

    def __init__(self, adapter: ASGIAdapter, conn: HttpConnection, request: Request) -> None:
        self.app = adapter.app
        self.conn = conn
        self.request = request
        raw_path = request.path
        root = adapter.root_path
        self.scope: Scope = {
            "type": "http",
            "asgi": ASGI_VERSION,
            "http_version": request.http_version,
            "server": conn.sockname,
            "client": request.client,
            "scheme": request.scheme,
            "method": request.method.decode("ascii"),
            "root_path": root,
            "path": root + decode_path(raw_path) if root or PERCENT in raw_path
            else raw_path.decode("utf-8", "surrogateescape"),
            "raw_path": adapter.raw_root_path + raw_path if root else raw_path,
            "query_string": request.query,
            "headers": request.headers,
            "state": adapter.state.copy(),
        }
        if conn.tls is not None:
            self.scope["extensions"] = {"tls": conn.tls}
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.body_done = not request.has_body
        self.final_delivered = False
        self.disconnected = False
        self.eof = False
        self.expired = False  # cancelled at --request-timeout
        self.waiter: asyncio.Future[None] | None = None
        self.started = False
        self.head_sent = False
        self.complete = False
        self.status: Any = 0
        self.headers: Any = ()
        self.task: asyncio.Task[None] | None = None
        # What the task awaits: the app's coroutine, where its stack starts (overdue.py); the task's
        # own coroutine, run() below, has no Python frame in the mypyc build.
        self.app_call: Awaitable[None] | None = None

    # connection → cycle ----------------------------------------------------------------------

    def feed_body(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.paused:
            self.paused = True
            self.conn.body_paused(True)
        self._wake()

    def end_body(self) -> None:
        self.body_done = True
        self._wake()

    def disconnect(self) -> None:
        self.disconnected = True
        self._wake()

    def client_eof(self) -> None:
        # The client will send nothing more: once the body is delivered receive() reports a
        # disconnect, but a response may still be sent (a half-closed client reads it).
        self.eof = True
        self._wake()

    def writable_changed(self) -> None:
        pass  # ASGI sends wait on HttpConnection.drain()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # app → cycle -----------------------------------------------------------------------------

    async def receive(self) -> Message:
        while True:
            if self.disconnected or self.complete or (self.eof and self.final_delivered):
                return DISCONNECT
            if self.chunks or (self.body_done and not self.final_delivered):
                chunks = self.chunks
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self.chunks = []
                self.buffered = 0
                if self.paused:
                    self.paused = False
                    self.conn.body_paused(False)
                self.final_delivered = self.body_done
                return {"type": "http.request", "body": body, "more_body": not self.body_done}
            self.conn.send_continue()
            self.waiter = self.conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def send(self, message: Message) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if not self.started:
            if kind != "http.response.start":
                raise ASGIProtocolError(f"expected 'http.response.start' first, got {kind!r}")
            self.started = True
            self.status = message.get("status")
            self.headers = message.get("headers", ())
            return
        if kind != "http.response.body":
            if kind == "http.response.start":
                raise ASGIProtocolError("sent 'http.response.start' twice")
            raise ASGIProtocolError(f"expected 'http.response.body', got {kind!r}")
        if self.complete:
            if self.disconnected:
                return
            raise ASGIProtocolError("sent 'http.response.body' after the response was complete")
        body = message.get("body", b"")
        if body.__class__ is not bytes:
            body = as_bytes(body, "'http.response.body' body")
        more_body = bool(message.get("more_body", False))
        if not more_body:
            self.complete = True
        try:
            if self.head_sent:
                self.conn.send_body(body, more_body)
            else:
                self.conn.send_start(self.status, self.headers, body, more_body)
                self.head_sent = True
        except ResponseError as exc:
            self.complete = False
            raise ASGIProtocolError(str(exc)) from None
        if more_body:
            if self.conn.write_paused:
                await self.conn.drain()
        elif self.waiter is not None:  # a receive() waiting for the body hears the response is done
            self._wake()

    async def run(self) -> None:
        if self.conn.server.metrics:  # the queue wait
            self.conn.queue_wait = monotonic() - self.conn.started_at
        try:
            self.app_call = self.app(self.scope, self.receive, self.send)
            await self.app_call
        except asyncio.CancelledError:
            if self.expired:  # our own cancellation: the task ends here
                self._fail(None, 504)
                return
            self._fail(None)
            raise
        except BaseException as exc:
            if isinstance(exc, ASGIProtocolError):
                logger.error("ASGI app broke the protocol: %s", exc, exc_info=exc)
            else:
                logger.error("Exception in ASGI application", exc_info=exc)
            self._fail(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if not self.started:
                if not (self.disconnected or self.eof):  # returning on http.disconnect is normal
                    logger.error("ASGI app returned without sending 'http.response.start'")
                self._fail(None)
            elif not self.complete:
                logger.error("ASGI app returned without completing the response (more_body was still true)")
                self._fail(None)

    def expire(self) -> None:
        """--request-timeout: cancel the app; the client gets 504, or a closed connection once the
        response has begun."""
        if not self.complete and self.task is not None:
            self.expired = True
            self.task.cancel()

    def _fail(self, exc: BaseException | None, status: int = 500) -> None:
        if self.complete:
            return
        self.complete = True
        if self.head_sent:
            self.conn.abort()
        else:
            self.head_sent = True
            self.conn.send_start(status, ERROR_HEADERS, ERROR_BODIES[status], False)


class LifespanFailure(Exception):
    """Startup failed; the server must not serve."""


class Lifespan:
    """The ASGI lifespan protocol: startup before serving, shutdown after; `state` shared into requests."""

    def __init__(self, app: ASGIApp, mode: str) -> None:
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] = {}
        self.supported = True
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._failure: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        if self.mode == "off":
            self.supported = False
            return
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._started.wait()
        if self._failure is not None:
            raise LifespanFailure(self._failure)

    async def shutdown(self) -> None:
        if not self.supported or self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._stopped.wait()
        if self._failure is not None:
            logger.error("ASGI lifespan shutdown failed: %s", self._failure)

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if self._started.is_set() or self.mode == "on":
                self._failure = f"{type(exc).__name__}: {exc}"
                logger.error("Exception in ASGI lifespan", exc_info=exc)
            else:
                self.supported = False
                logger.info("ASGI 'lifespan' protocol appears unsupported (%s: %s)", type(exc).__name__, exc)
        finally:
            self._started.set()
            self._stopped.set()

    async def _receive(self) -> Message:
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "lifespan.startup.complete":
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self._failure = str(message.get("message") or "lifespan.startup.failed")  # an app may give an exception
            self._started.set()
        elif kind == "lifespan.shutdown.complete":
            self._stopped.set()
        elif kind == "lifespan.shutdown.failed":
            self._failure = str(message.get("message") or "lifespan.shutdown.failed")
            self._stopped.set()
        else:
            raise ASGIProtocolError(f"unexpected lifespan message {kind!r}")
