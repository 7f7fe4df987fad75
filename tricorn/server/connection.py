"""The asyncio Protocol of one client connection: the only code that touches a transport.

Theory of operation. Bytes go to `h1.RequestParser`; its events are acted on in order. A `Request`
starts a cycle on the app adapter (ASGI or WSGI: they differ only in how the app is called);
body events go to that cycle; a request that arrives while one is in progress (pipelining) waits
in `pending` with reading paused, so memory stays bounded. The adapter answers through
`send_start` / `send_body`, which frame the response (h1.Response) and, on the last piece,
either start the next pending request or close. A response sent before its request's body was
read leaves the rest of the body to be dropped (up to DISCARD_LIMIT) before the next request.
Reading pauses when a cycle's unread body passes
the high-water mark; the app's writes wait (`drain`) while the transport's buffer is full.

Timeouts are deadlines on the loop clock, checked by one sweep for all connections (worker.py),
so a request costs a float assignment rather than a timer handle:
  head not complete `timeout_header` after accept or after the previous response → close
  idle keep-alive connection for `keep_alive` → close
  a request body we wait for brings no byte for `timeout_body` → 408 and close (the app, if it
  runs, hears of a disconnect); time the client waits on us (reading paused, 100-continue not yet
  asked for) does not count
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import monotonic
from typing import Any

from . import tls
from .h1 import Data, EndOfMessage, Event, ProtocolError, Request, Response, error_response
from .state import Cycle, ServerState, Upgraded, UpgradedCycle

logger = logging.getLogger("tricorn.error")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LINGER = 2.0  # seconds a refused connection keeps draining input before it is closed
DRAIN_IDLE = 0.25  # seconds an idle connection may still bring a request once draining starts
DISCARD_LIMIT = 1024 * 1024  # unread request body dropped to keep a connection, beyond it we close


class HttpConnection(asyncio.Protocol):
    __slots__ = (
        "_body_deadline",
        "_body_moved",
        "_drain_waiters",
        "_next_on_drain",
        "_paused_body",
        "_paused_pipeline",
        "_reading_paused",
        "body_done",
        "client",
        "closed",
        "continue_sent",
        "cycle",
        "deadline",
        "eof",
        "fresh",
        "idle",
        "loop",
        "parser",
        "pending",
        "queue_wait",
        "request",
        "response",
        "scheme",
        "server",
        "sockname",
        "started_at",
        "tls",
        "tls_environ",
        "transport",
        "trusted_proxy",
        "websocket",
        "write_paused",
    )

    def __init__(self, server: ServerState, fresh: bool = False) -> None:
        self.server = server
        self.fresh = fresh  # counted in server.starting until its first request (accept.py)
        self.loop = server.loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = server.new_parser()
        self.cycle: Cycle | None = None
        self.request: Request | None = None
        self.response: Response | None = None
        self.pending: deque[Event] = deque()
        self.deadline = 0.0
        self._body_deadline = 0.0  # while a body is awaited (the sweep checks it)
        self._body_moved = False  # body bytes came since the sweep last looked
        self.idle = False
        self.closed = False
        self.client: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None
        self.scheme = "http"
        self.body_done = False
        self.started_at = 0.0  # monotonic() when the request head was complete
        self.queue_wait = -1.0  # seconds from then until the app began on it (the adapter sets it)
        self.continue_sent = False
        self.write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._paused_body = False
        self._paused_pipeline = False
        self._reading_paused = False
        self._next_on_drain = False  # a finished response waits for the client to read it
        self.eof = False
        self.trusted_proxy = False
        self.tls: dict[str, Any] | None = None  # HTTPS: ASGI's tls extension, read once per connection
        self.tls_environ: dict[str, str] = {}  # and its WSGI environ variables
        self.websocket: Upgraded | None = None  # after an accepted WebSocket upgrade

    # transport events ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client = _address(transport.get_extra_info("peername"))
        self.sockname = _address(transport.get_extra_info("sockname"))
        self.deadline = self.loop.time() + self.server.timeout_header
        self.server.connections.add(self)
        proxies = self.server.proxies
        # A unix socket peer is a local process (a proxy on the same machine), so it is trusted.
        self.trusted_proxy = proxies is not None and (self.client is None or self.client[0] in proxies)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.scheme = "https"
            self.tls = tls.session(ssl_object)
            self.tls_environ = tls.environ(ssl_object, self.tls)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.parser.close()
        self.server.connections.discard(self)
        if self.fresh:
            self.settle()
        if self.cycle is not None:
            self.cycle.disconnect()  # the adapter still ends the cycle when the app returns
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    def data_received(self, data: bytes) -> None:
        if self.websocket is not None:
            self.websocket.data_received(data)
            return
        if self.idle:
            self.idle = False
            self.deadline = self.loop.time() + self.server.timeout_header
        for event in self.parser.receive_data(data):
            self._dispatch(event)
        if self.fresh:
            self.settle()  # its request is not complete: counted on its way no longer (accept.py)
        if self.parser.held is not None and not self.closed:
            self._after_upgrade_request()

    def _after_upgrade_request(self) -> None:
        """The parser holds what followed an Upgrade request. Dispatching that request may have
        upgraded this connection (so self.websocket is read afresh here): then those bytes are the
        new protocol's; else the upgrade was served as plain HTTP and they are the next request."""
        if self.websocket is not None:
            rest = self.parser.take_upgraded()
            if rest:
                self.websocket.data_received(rest)
        else:
            for event in self.parser.resume():
                self._dispatch(event)

    def eof_received(self) -> bool | None:
        if self.websocket is not None:
            self.websocket.eof_received()
            return None
        # A half-closed client may still wait for the answers to requests it sent whole; a body
        # cut short by EOF will never complete, so that request is abandoned.
        if (self.cycle is None and not self.pending) or not self.body_done:
            return None  # the transport closes itself
        self.eof = True
        if self.cycle is not None:
            self.cycle.client_eof()
        return True

    def pause_writing(self) -> None:
        # The client is not reading what we send: read nothing more from it either (no pipelined
        # request starts, no WebSocket ping is answered into memory) until it catches up.
        self.write_paused = True
        self._set_paused()
        if self.cycle is not None:
            self.cycle.writable_changed()

    def resume_writing(self) -> None:
        self.write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        self._set_paused()
        if self.cycle is not None:
            self.cycle.writable_changed()
        elif self._next_on_drain:
            self._next_on_drain = False
            self.next_request()

    # requests ------------------------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        cycle = self.cycle
        if self.pending or (type(event) is Request and (cycle is not None or self._next_on_drain)):
            self.pending.append(event)
            self._set_paused(pipeline=True)
        elif type(event) is Data:
            self._body_moved = True
            if cycle is not None:  # always: body comes after its Request
                cycle.feed_body(event.data)
        elif type(event) is EndOfMessage:
            if not self.body_done:  # a request without a body (or one already answered) needs no word
                self.body_done = True
                if cycle is not None:
                    cycle.end_body()
        elif type(event) is Request:
            self._start(event)
        elif cycle is not None and self.body_done:
            self.pending.append(event)  # answer the request in progress first, then refuse
        elif type(event) is ProtocolError:
            self._refuse(event)

    def settle(self) -> None:
        """Stop counting as a request on its way (accept.py): the connection ended, or sent nothing
        for a while (an idle one must not stop its worker from accepting)."""
        if self.fresh:
            self.fresh = False
            server = self.server
            server.starting -= 1
            if server.accept_paused:
                server.thread_freed()

    def _start(self, request: Request) -> None:
        server = self.server
        self.deadline = 0.0
        if self.fresh:
            self.settle()  # a thread counts it again once the app runs (accept.py)
        limit = server.limit_concurrency
        if limit is not None and server.in_flight >= limit:
            self._refuse(ProtocolError(503, "Service unavailable: too many requests in progress"))
            return
        server.in_flight += 1
        server.requests += 1
        if server.requests == server.max_requests:
            server.on_max_requests()  # this response already says `connection: close`
        self.request = request
        if self.trusted_proxy:
            request.client, request.scheme = server.proxies.resolve(  # type: ignore[union-attr]
                request.headers, self.client, self.scheme)
        else:
            request.client = self.client
            request.scheme = self.scheme
        self.response = Response(request, server.server_header, server.date_header)
        if server.shutting_down:
            self.response.keep_alive = False
        self.body_done = not request.has_body
        if request.has_body and server.timeout_body:
            self._body_deadline = self.loop.time() + server.timeout_body
        self.continue_sent = False
        if server.timed:
            self.started_at = monotonic()
            self.queue_wait = -1.0
        if server.websockets is not None and request.is_websocket:
            server.websockets.start(self, request)  # sets self.cycle and self.websocket
        else:
            server.adapter.start(self, request)  # sets self.cycle

    def _refuse(self, error: ProtocolError) -> None:
        if self.closed:
            return
        started = self.response is not None and self.response.status
        self.closed = True  # nothing more of ours goes out on this connection
        self.parser.dead = True
        self.pending.clear()
        if self.cycle is not None:
            self.cycle.disconnect()  # its body is broken: the app sees the client go away
        if not error.status or started:
            self.transport.close()
            return
        logger.debug("refused a request from %s: %d %s", self.client, error.status, error.reason)
        self.server.stats.refused(error.status)
        self.transport.write(error_response(error.status, error.reason, self.server.config.server_header))
        # Lingering close: closing with unread bytes in the kernel would send RST, which can
        # destroy the error response before the client reads it. Half-close, drop what still
        # arrives, and close on EOF or at the deadline.
        self._set_paused(body=False, pipeline=False)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.deadline = self.loop.time() + LINGER
        else:
            self.transport.close()

    # the adapter's side --------------------------------------------------------------------

    def send_start(self, status: Any, headers: Any, body: bytes, more_body: bool) -> None:
        """Head and first body piece; raises h1.ResponseError for a response HTTP cannot carry."""
        data = self.response.start(status, headers, body, more_body)  # type: ignore[union-attr]
        if not self.closed:
            self.transport.write(data)
        if not more_body:
            self.end_cycle()

    def send_body(self, body: bytes, more_body: bool) -> None:
        data = self.response.data(body, more_body)  # type: ignore[union-attr]
        if data and not self.closed:
            self.transport.write(data)
        if not more_body:
            self.end_cycle()

    def send_continue(self) -> None:
        """Answer `Expect: 100-continue` once the app first asks for the body (RFC 9110 10.1.1)."""
        request = self.request
        if request is not None and request.expect_continue and not self.continue_sent and not self.closed:
            self.continue_sent = True
            if self.response is not None and not self.response.status:
                self.transport.write(CONTINUE)

    def abort(self) -> None:
        """The response cannot be completed: close so the client does not take it as whole."""
        if self.response is not None:
            self.response.keep_alive = False
        if not self.closed:
            self.transport.close()
        if self.cycle is not None:
            self.end_cycle()

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def body_paused(self, paused: bool) -> None:
        self._set_paused(body=paused)

    def upgrade(self, session: UpgradedCycle) -> None:
        """From now on this connection's bytes go to `session` (a WebSocket), not to HTTP."""
        self.cycle = self.websocket = session

    def refuse_upgrade(self) -> None:
        """The upgrade request is answered with plain HTTP after all, and the connection closes
        after that response (it says `connection: close`)."""
        if self.response is not None:
            self.response.keep_alive = False
        self.websocket = None

    def end_cycle(self, linger: bool = False) -> None:
        """The cycle is over. `linger`: an ended WebSocket, whose peer closes the connection."""
        server = self.server
        response = self.response
        request = self.request
        server.in_flight -= 1
        if server.timed and response is not None:
            took = monotonic() - self.started_at
            if server.metrics:
                server.stats.finished(response.status, response.bytes_sent, took, self.queue_wait)
            if server.access_log is not None and request is not None:
                server.access_log.log(request, response, took)
        self.cycle = None
        self.request = None
        self.response = None
        if linger:
            return  # bytes still go to the WebSocket, for the closing handshake
        self.websocket = None
        if self.closed:
            return
        # Stopping, a connection is still kept when its response promised keep-alive (it was sent
        # before the connection heard of the stop): the client may send its next request at once,
        # which is answered `connection: close`; closing here would lose it.
        keep = (
            response is not None and response.complete_length
            and ((response.promised_keep_alive and not self.transport.is_closing()) if server.shutting_down
                 else response.keep_alive)
            and not (self.eof and not self.pending)
        )
        if not keep:
            self.transport.close()
            return
        if not self.body_done:
            # Answered before the body was read: drop the rest, then serve the next request.
            self.cycle = _DiscardBody(self)
            self._set_paused(body=False)
            return
        self.next_request()
        if server.shutting_down:
            self.shutdown()

    def next_request(self) -> None:
        """Start what is pending, or wait idle for the next request; while the client is not
        reading the last response, wait for it to (resume_writing)."""
        if self.write_paused:
            self._next_on_drain = True
            return
        self._paused_body = False
        if self.pending:
            pending = self.pending
            self.pending = deque()
            while pending:
                event = pending.popleft()
                if self.cycle is not None and type(event) is Request:
                    pending.appendleft(event)
                    self.pending = pending
                    return
                self._dispatch(event)
                if self.closed:
                    return
        if self._reading_paused:
            self._set_paused(pipeline=False)
        else:
            self._paused_pipeline = False
        if self.cycle is None:
            self.idle = True
            self.deadline = self.loop.time() + self.server.keep_alive

    def _set_paused(self, body: bool | None = None, pipeline: bool | None = None) -> None:
        """Reading pauses for a body the app has not taken, a pipelined request waiting, or a
        client that does not read our writes (unless the connection is only lingering now)."""
        if body is not None:
            self._paused_body = body
        if pipeline is not None:
            self._paused_pipeline = pipeline
        paused = self._paused_body or self._paused_pipeline or (self.write_paused and not self.closed)
        if paused != self._reading_paused and not self.transport.is_closing():
            self._reading_paused = paused
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    # the server's side ---------------------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        if self.deadline and now >= self.deadline and (self.cycle is None or self.closed):
            self.transport.close()
        elif self._body_deadline:
            self._check_body(now)

    def _check_body(self, now: float) -> None:
        request = self.request
        if self.body_done or self.cycle is None or self.closed:
            self._body_deadline = 0.0
        elif self._body_moved or self._reading_paused or (
                request is not None and request.expect_continue and not self.continue_sent):
            self._body_moved = False
            self._body_deadline = now + self.server.timeout_body
        elif now >= self._body_deadline:
            self._body_deadline = 0.0
            self._body_timed_out(now)

    def _body_timed_out(self, now: float) -> None:
        """The client stopped sending the body it announced: 408 unless the response has begun
        (then only closing is left). The access log line is written now, with the 408."""
        request, response = self.request, self.response
        logger.info("Request body from %s stalled for %gs (--timeout-body): answered 408 and closed",
                    self.client, self.server.timeout_body)
        if request is None or response is None or response.status:
            self.transport.close()
            return
        server = self.server
        if server.access_log is not None:
            timed_out = Response(request, server.server_header, server.date_header)
            timed_out.status = 408
            server.access_log.log(request, timed_out, monotonic() - self.started_at)
        self.request = None  # logged: the app's own ending adds no second line
        self._refuse(ProtocolError(408, "Request timeout: the request body stopped arriving (--timeout-body)"))

    def shutdown(self) -> None:
        """Stop keeping this connection alive: a busy one closes after its response; an idle one
        after DRAIN_IDLE when the server hurries (server.hurry: stopping, not retiring), else at its
        own deadline (keep-alive, header timeout). Closing
        an idle connection at once races a request already on the wire (the client sees a reset,
        not a refusal); a request that arrives before the deadline is answered with `connection:
        close` instead, and the client reconnects to another worker."""
        if self.websocket is not None:
            self.websocket.shutdown()
        elif self.cycle is None:
            if self.server.hurry and (self.idle or not self.parser.started):
                self.deadline = self.loop.time() + DRAIN_IDLE
        elif self.response is not None:
            self.response.keep_alive = False  # says `connection: close` if its head is not out yet


class _DiscardBody:
    """The rest of a body whose response is already sent: dropped, up to DISCARD_LIMIT, so that
    the connection can be kept (nginx does the same). Past the limit the connection is closed."""

    def __init__(self, conn: HttpConnection) -> None:
        self.conn = conn
        self.dropped = 0

    def feed_body(self, data: bytes) -> None:
        self.dropped += len(data)
        if self.dropped > DISCARD_LIMIT:
            self.conn.transport.close()

    def end_body(self) -> None:
        self.conn.cycle = None
        self.conn.next_request()

    def disconnect(self) -> None:
        pass

    def client_eof(self) -> None:
        pass

    def writable_changed(self) -> None:
        pass


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None
