"""The load engine of one process: raw connections on the event loop, three ways to drive them.

  closed   -c connections, each sending its next request as soon as the previous one is answered
  open     --rate: request i is due at start + i/rate whether or not earlier ones were answered; its
           latency counts from that intended time, so a server stall shows in the percentiles
           instead of silently slowing the generator down (coordinated omission)
  users    --users, each with its own keep-alive connection, thinking MIN-MAX seconds between
           requests; started at --spawn-rate per second

A slot is one closed-loop connection or one user: it owns at most one connection at a time and
walks through its task's steps in order. A connection that fails, times out or is closed by the
server is replaced for the slot's next request. Every request issued while measuring ends as
exactly one answer or one error, so requests = answered + errors.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httptools

from .histogram import Histogram
from .kinds import connect_error
from .pages import Browser, Visit, html_assets
from .scenario import Request, Scenario, Target, Task

MAX_CONNECTING = 16  # open loop: connections opened at once; a burst of due requests waits for these
LATE_MS = 10.0  # open loop: a request started this far past its due time counts as late


Watch = Callable[[], Sequence[float]]  # numbers that grow (CPU seconds): sampled where a measurement starts and ends


@dataclass(frozen=True)
class Load:
    """How to drive the connections, and for how long."""

    mode: str  # closed | open | users
    connections: int = 64  # closed: the count; open: the most it may open
    rate: float = 0.0
    users: int = 0
    spawn_rate: float = 0.0
    think: tuple[float, float] = (0.0, 0.0)
    duration: float = 10.0  # seconds of measurement (after warmup), unless requests is set
    requests: int = 0  # stop after this many (0: by duration)
    warmup: float = 0.0
    timeout: float = 10.0
    keepalive: bool = True


class Window:
    """Counts for one stretch of time: the whole run, or one second of it."""

    __slots__ = ("answered", "asset_bytes", "asset_errors", "asset_status", "assets", "bytes", "close_codes", "errors",
                 "histogram", "issued", "names", "page_histogram", "pages", "status")

    def __init__(self) -> None:
        self.histogram = Histogram()
        self.issued = 0
        self.answered = 0
        self.bytes = 0
        self.status: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.names: dict[str, int] = {}  # answered, by request name
        self.pages = 0  # pages whose assets all ended (pages.py)
        self.page_histogram = Histogram()  # from the page request's start to its last asset's end
        self.assets = 0  # answered
        self.asset_bytes = 0
        self.asset_status: dict[int, int] = {}
        self.asset_errors: dict[str, int] = {}
        self.close_codes: dict[int, int] = {}  # WebSocket: the codes servers closed with

    def merge(self, other: Window) -> None:
        self.issued += other.issued
        self.answered += other.answered
        self.bytes += other.bytes
        self.pages += other.pages
        self.assets += other.assets
        self.asset_bytes += other.asset_bytes
        _add(self.status, other.status)
        _add(self.asset_status, other.asset_status)
        _add(self.close_codes, other.close_codes)
        for mine, theirs in ((self.errors, other.errors), (self.names, other.names),
                             (self.asset_errors, other.asset_errors)):
            _add(mine, theirs)
        self.histogram.merge(other.histogram)
        self.page_histogram.merge(other.page_histogram)

    def to_dict(self) -> dict[str, Any]:
        return {"issued": self.issued, "answered": self.answered, "bytes": self.bytes, "names": dict(self.names),
                "status": {str(k): v for k, v in sorted(self.status.items())}, "errors": dict(self.errors),
                "histogram": self.histogram.to_dict(), "pages": self.pages,
                "page_histogram": self.page_histogram.to_dict(), "assets": self.assets,
                "asset_bytes": self.asset_bytes, "asset_status": {str(k): v for k, v in self.asset_status.items()},
                "asset_errors": dict(self.asset_errors),
                "close_codes": {str(k): v for k, v in sorted(self.close_codes.items())}}


K = TypeVar("K")


def _add(counts: dict[K, int], more: dict[K, int]) -> None:
    for key, n in more.items():
        counts[key] = counts.get(key, 0) + n


class Connection(asyncio.Protocol):
    """One client connection: send a pre-encoded request, frame the response with llhttp."""

    def __init__(self, engine: Engine, slot: Slot) -> None:
        self.engine = engine
        self.slot = slot
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.busy = False
        self.request: Request | None = None
        self.started = 0  # ns: when the request was sent, or (open loop) when it was due
        self.counted = False  # issued while measuring
        self.status = 0
        self.received = 0
        self.headers_done = False
        self.framed = False  # the response has Content-Length or Transfer-Encoding
        self.reusable = True
        self.dead = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, request: Request, started: int, counted: bool, data: bytes | None = None) -> None:
        """Send `request` (its next variant, or `data` made from it)."""
        self.request, self.started, self.counted = request, started, counted
        self.busy, self.status, self.received, self.headers_done, self.framed = True, 0, 0, False, False
        assert self.transport is not None
        self.transport.write(request.next() if data is None else data)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail("malformed")
        except httptools.HttpParserUpgrade:
            self._fail("malformed")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) in (14, 17) and name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        if 100 <= self.status < 200 and self.status != 101:
            self.headers_done = False  # an interim response: the real one follows
            return
        if self.request is not None and self.request.is_head:
            self.parser = httptools.HttpResponseParser(self)  # no body follows, whatever the headers say
            self._complete(self.status)

    def on_message_complete(self) -> None:
        if self.busy and self.headers_done:
            self.reusable = self.parser.should_keep_alive()
            self._complete(self.status)

    def _complete(self, status: int) -> None:
        self.busy = False
        self.engine.answered(self, status)

    def _fail(self, kind: str) -> None:
        busy, self.busy = self.busy, False
        self.close()  # first: the slot's next request must go to a new connection
        if busy:
            self.engine.failed(self, kind)

    def close(self) -> None:
        self.dead = True
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        self._lost(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def _lost(self, exc: Exception | None) -> None:
        self.dead = True
        if self.busy:
            if exc is None and self.headers_done and not self.framed:
                self.reusable = False
                self._complete(self.status)  # a close-delimited body ends here
            else:
                self._fail("reset" if isinstance(exc, ConnectionResetError) else "closed")
        if self.transport is not None:
            self.transport.close()


class PageConnection(Connection):
    """A Connection in a scenario with pages: it sends the user's cookies, keeps the cookies a
    response sets, and keeps a page's HTML for its assets."""

    def __init__(self, engine: Engine, slot: Slot) -> None:
        super().__init__(engine, slot)
        self.body: list[bytes] = []
        self.sent = b""

    def send(self, request: Request, started: int, counted: bool, data: bytes | None = None) -> None:
        self.body = []
        data = request.next()
        browser = self.slot.browser
        if browser is not None and browser.cookies:
            head, _, body = data.partition(b"\r\n\r\n")
            data = head + b"\r\n" + browser.cookie_header() + b"\r\n" + body
        self.sent = data
        super().send(request, started, counted, data)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        if len(name) == 10 and name.lower() == b"set-cookie" and self.slot.browser is not None:
            self.slot.browser.remember_cookie(value)

    def on_body(self, body: bytes) -> None:
        if self.request is not None and self.request.assets:
            self.body.append(body)

    def page_url(self) -> str:
        """The URL the page was asked for, which its relative references resolve against."""
        path = self.sent.split(b" ", 2)[1].decode("latin-1") if self.sent.count(b" ") >= 2 else "/"
        return f"{self.engine.target.origin}{path}"


class Slot:
    """One closed-loop connection or one user: its connection, the steps left of its task, and (in
    a scenario with pages) what its browser keeps."""

    __slots__ = ("browser", "connection", "steps")

    def __init__(self, browser: Browser | None = None) -> None:
        self.connection: Connection | None = None
        self.steps: collections.deque[Request] = collections.deque()
        self.browser = browser


class Engine:
    def __init__(
        self, target: Target, scenario: Scenario, load: Load,
        on_second: Callable[[int, Window, float, float], None] | None = None,
        watch: Watch | None = None, tls: ssl.SSLContext | None = None, protocol: type[Connection] | None = None,
    ) -> None:
        """`on_second(second, window, cpu, behind_ms)` is called once per measured second; `watch()`
        as the measurement starts and as it ends (`watched`: how fast what it returns grew)."""
        self.target = target
        self.scenario = scenario
        self.load = load
        self.tls = tls if tls is not None or not target.secure else ssl.create_default_context()
        self.on_second = on_second
        self.watch = watch
        self.watched: list[float] = []  # per second measured
        self.total = Window()
        self.second = Window()
        self.pages = scenario.has_pages
        self.protocol = protocol or (PageConnection if self.pages else Connection)  # one per connection
        # The closed loop by duration on keep-alive connections takes a shortcut in answered().
        self.closed_fast = load.mode == "closed" and load.keepalive and not load.requests and not self.pages
        self.measuring = False
        self.running = True
        self.issued_total = 0  # measured requests issued, for -n (whose runs skip the closed loop's shortcut)
        self.in_flight = 0
        self.slots: list[Slot] = []
        self.connections: set[Connection] = set()
        self.idle: collections.deque[Slot] = collections.deque()  # open loop: slots free to send
        self.backlog: collections.deque[int] = collections.deque()  # open loop: due times waiting
        self.behind_ns = 0  # open loop: the most a request waited past its due time to be sent
        self.late = 0  # open loop: measured requests sent more than LATE_MS past their due time
        self.waited = 0  # open loop: requests that waited for a free connection
        self.cpu_samples: list[float] = []
        self.address: tuple[Any, ...] = ()
        self.rng = random.Random(os.getpid())
        self.loop: asyncio.AbstractEventLoop  # the running loop, from run()
        self.finished: asyncio.Future[None] | None = None
        self.open_steps: collections.deque[Request] = collections.deque()
        self.open_start = 0  # ns: request i of the open loop is due at open_start + i * open_interval
        self.open_interval = 0.0
        self.open_issued = 0
        self.connecting = 0  # connections being opened
        self.connect_tasks: set[asyncio.Task[None]] = set()  # ended with the run, not left to the loop's close
        self.elapsed = 0.0

    # results -----------------------------------------------------------------------------

    def answered(self, connection: Connection, status: int) -> None:
        now = time.perf_counter_ns()
        self.in_flight -= 1
        window = self.second  # merged into the total once a second: one set of counters per answer
        if connection.counted:
            window.answered += 1
            window.bytes += connection.received
            window.status[status] = window.status.get(status, 0) + 1
            window.histogram.record((now - connection.started) // 1000)
            names = window.names
            name = connection.request.name  # type: ignore[union-attr]
            names[name] = names.get(name, 0) + 1
        if self.closed_fast and connection.reusable and self.running:
            # The closed loop's common case, inlined: the next request on the same connection,
            # sent at the moment this answer was timed.
            steps = connection.slot.steps
            request = steps.popleft() if steps else self._next_request(connection.slot)
            self.in_flight += 1
            window.issued += self.measuring
            connection.send(request, now, self.measuring)
            return
        if not connection.reusable or not self.load.keepalive:
            connection.close()
        if self.pages and connection.request.assets and status == 200 and self.running:  # type: ignore[union-attr]
            self._visit(connection)  # type: ignore[arg-type]
            return
        self._next(connection.slot)

    def _visit(self, page: PageConnection) -> None:
        """Fetch the page's assets as its user's browser would; the slot goes on after the last."""
        slot, started, counted = page.slot, page.started, page.counted
        assert slot.browser is not None and page.request is not None
        url = page.page_url()
        paths = html_assets(b"".join(page.body).decode("utf-8", "replace"), url)
        page.body = []

        def asset(status: int, size: int) -> None:
            if counted:
                window = self.second
                window.assets += 1
                window.asset_bytes += size
                window.asset_status[status] = window.asset_status.get(status, 0) + 1

        def asset_failed(kind: str) -> None:
            if counted:
                self.second.asset_errors[kind] = self.second.asset_errors.get(kind, 0) + 1

        def done() -> None:
            self.in_flight -= 1
            if counted:
                self.second.pages += 1
                self.second.page_histogram.record((time.perf_counter_ns() - started) // 1000)
            self._next(slot)

        self.in_flight += 1
        Visit(slot.browser, self.address, self.tls_options(), self.target.authority, paths, url, page.request.cache,
              asset, asset_failed, done, self.load.timeout).start()

    def closed_with(self, code: int) -> None:
        """A WebSocket server closed a connection with `code`."""
        if self.measuring:
            self.second.close_codes[code] = self.second.close_codes.get(code, 0) + 1

    def failed(self, connection: Connection, kind: str) -> None:
        self.in_flight -= 1
        if connection.counted:
            window = self.second
            window.errors[kind] = window.errors.get(kind, 0) + 1
            window.bytes += connection.received
        self._next(connection.slot, after_error=True)

    # issuing -----------------------------------------------------------------------------

    def _may_issue(self) -> bool:
        return self.running and not (self.load.requests and self.issued_total >= self.load.requests)

    def _issue(self, slot: Slot, request: Request, started: int = 0) -> None:
        """Send `request` on the slot's connection, connecting first if it has none."""
        counted = self.measuring
        self.issued_total += counted
        self.in_flight += 1
        self.second.issued += counted
        connection = slot.connection
        if connection is not None and not connection.dead:
            connection.send(request, started or time.perf_counter_ns(), counted)
            return
        self.connecting += 1
        task = self.loop.create_task(self._connect_and_send(slot, request, started, counted))
        self.connect_tasks.add(task)
        task.add_done_callback(self.connect_tasks.discard)

    async def _connect_and_send(self, slot: Slot, request: Request, started: int, counted: bool) -> None:
        begun = started or time.perf_counter_ns()
        try:
            _, connection = await asyncio.wait_for(self.loop.create_connection(
                lambda: self.protocol(self, slot), self.address[0], self.address[1], **self.tls_options()),
                self.load.timeout)
        except (asyncio.TimeoutError, OSError) as exc:
            self.connecting -= 1
            kind = connect_error(exc)
            self.in_flight -= 1
            if counted:
                self.second.errors[kind] = self.second.errors.get(kind, 0) + 1
            await asyncio.sleep(0.01)  # a refused port must not spin a core
            self._next(slot, after_error=True)
            return
        self.connecting -= 1
        slot.connection = connection
        self.connections.add(connection)
        # Latency includes the connect for a new connection per request (--no-keepalive) and for
        # the open loop (it counts from the due time); a closed loop's first connect is not a request's.
        if not started and self.load.keepalive:
            begun = time.perf_counter_ns()
        connection.send(request, begun, counted)

    def _next_request(self, slot: Slot) -> Request:
        if not slot.steps:
            task: Task = self.scenario.next_task()
            slot.steps.extend(task.steps)
        return slot.steps.popleft()

    def _next(self, slot: Slot, after_error: bool = False) -> None:
        """A slot finished a request: what it does next depends on the load model."""
        if slot.connection is not None and slot.connection.dead:
            self.connections.discard(slot.connection)
            slot.connection = None
        if after_error:
            slot.steps.clear()  # a flow whose step failed starts over
        if not self._may_issue():
            self._maybe_finished()
            return
        mode = self.load.mode
        if mode == "closed":
            self._issue(slot, self._next_request(slot))
        elif mode == "users":
            low, high = self.load.think
            self.loop.call_later(self.rng.uniform(low, high), self._user_step, slot)
        else:
            if self.backlog:
                self._issue(slot, self._next_request_open(), self.backlog.popleft())
            else:
                self.idle.append(slot)
                self._open_due()

    def _user_step(self, slot: Slot) -> None:
        if self._may_issue():
            self._issue(slot, self._next_request(slot))
        else:
            self._maybe_finished()

    def _maybe_finished(self) -> None:
        if self.in_flight <= 0 and self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    # the run -----------------------------------------------------------------------------

    async def run(self) -> Window:
        self.loop = asyncio.get_running_loop()
        await self._resolve()
        load = self.load
        start = time.perf_counter_ns()
        self.finished = self.loop.create_future()
        self.measuring = not load.warmup
        if load.mode == "closed":
            for _ in range(load.connections):
                slot = Slot(Browser() if self.pages else None)
                self.slots.append(slot)
                self._issue(slot, self._next_request(slot))
        elif load.mode == "users":
            for i in range(load.users):
                slot = Slot(Browser() if self.pages else None)
                self.slots.append(slot)
                self.loop.call_later(i / load.spawn_rate if load.spawn_rate else 0, self._user_step, slot)
        else:
            self.open_start, self.open_interval = start, 1e9 / load.rate
            self.loop.call_soon(self._open_tick)
        sweeper = self.loop.create_task(self._sweep())
        try:
            if load.warmup:
                await asyncio.sleep(load.warmup)
                self.measuring = True
                self.second = Window()  # what the warmup answered is not measured
            await self._measure()
        finally:
            self.running = False
            self._maybe_finished()
            if self.in_flight > 0:
                # Answers still owed: bounded by the request timeout, which the sweep enforces.
                await asyncio.wait({self.finished}, timeout=load.timeout + 1)
            sweeper.cancel()
            for task in self.connect_tasks:
                task.cancel()
            await asyncio.gather(*self.connect_tasks, return_exceptions=True)
            for connection in list(self.connections):
                connection.close()
            for slot in self.slots:
                if slot.connection is not None:
                    slot.connection.close()
                if slot.browser is not None:
                    slot.browser.close()
            self.total.merge(self.second)  # the answers that arrived after the last tick
        return self.total

    def tls_options(self) -> dict[str, Any]:
        """create_connection's arguments for TLS: none for http://."""
        return {"ssl": self.tls, "server_hostname": self.target.host} if self.tls is not None else {}

    async def _resolve(self) -> None:
        try:
            infos = await self.loop.getaddrinfo(self.target.host, self.target.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ResolveError(f"cannot resolve {self.target.host!r}: {exc.strerror}") from None
        self.address = infos[0][4]

    async def _measure(self) -> None:
        """Tick once a second: hand the second's window to on_second; stop at the end."""
        load = self.load
        watched = self.watch() if self.watch else ()
        began = time.perf_counter()
        cpu_began = time.process_time()
        second = 0
        while True:
            deadline = began + second + 1
            if load.requests:
                done = self.finished
                assert done is not None
                await asyncio.wait({done}, timeout=max(0.0, deadline - time.perf_counter()))
            else:
                await _sleep_until(min(deadline, began + load.duration))
            now = time.perf_counter()
            cpu = (time.process_time() - cpu_began) / max(1e-9, now - (began + second))
            cpu_began = time.process_time()
            window, self.second = self.second, Window()
            self.total.merge(window)
            self.cpu_samples.append(cpu)
            if self.on_second is not None:
                self.on_second(second, window, cpu, self.behind_ns / 1e6)
            second += 1
            if load.requests and self.finished is not None and self.finished.done():
                break
            if load.requests and self.issued_total >= load.requests and self.in_flight <= 0:
                break
            if not load.requests and now >= began + load.duration:
                break
        self.elapsed = time.perf_counter() - began
        if self.watch:
            self.watched = [(end - start) / self.elapsed for start, end in zip(watched, self.watch(), strict=True)]

    def _open_tick(self) -> None:
        self._open_due()
        if self._may_issue():
            wait = (self.open_start + self.open_issued * self.open_interval - time.perf_counter_ns()) / 1e9
            # Timers tick in milliseconds, which would send a millisecond's requests in one burst:
            # closer than that, poll (the loop still runs I/O between polls). This keeps the core busy.
            if wait < 0.002:
                self.loop.call_soon(self._open_tick)
            else:
                self.loop.call_later(wait - 0.001, self._open_tick)

    def _open_due(self) -> None:
        """Issue every request due by now, each stamped with its due time. Called from a timer and
        after every response: the loop's timers tick in milliseconds, responses far more often, so
        requests leave close to their due times instead of in one burst per millisecond."""
        now = time.perf_counter_ns()
        due = int((now - self.open_start) / self.open_interval) + 1
        load = self.load
        late_ns = LATE_MS * 1e6
        while self.open_issued < due and self._may_issue():
            at = self.open_start + int(self.open_issued * self.open_interval)
            self.open_issued += 1
            if self.measuring:
                lateness = now - at
                self.behind_ns = max(self.behind_ns, lateness)
                self.late += lateness > late_ns
            if self.idle:  # the most recently used connection: fewest connections, warmest caches
                self._issue(self.idle.pop(), self._next_request_open(), at)
            elif len(self.slots) < load.connections and self.connecting < MAX_CONNECTING:
                slot = Slot(Browser() if self.pages else None)
                self.slots.append(slot)
                self._issue(slot, self._next_request_open(), at)
            else:  # the next connection to become free takes it
                self.waited += self.measuring and len(self.slots) >= load.connections
                self.backlog.append(at)

    def _next_request_open(self) -> Request:
        # Arrivals are single requests: a sequence's steps arrive one after another in order.
        if not self.open_steps:
            self.open_steps.extend(self.scenario.next_task().steps)
        return self.open_steps.popleft()

    async def _sweep(self) -> None:
        """Time out requests unanswered for --timeout."""
        timeout_ns = int(self.load.timeout * 1e9)
        while True:
            await asyncio.sleep(min(0.1, self.load.timeout / 4))
            now = time.perf_counter_ns()
            for slot in self.slots:
                connection = slot.connection
                if connection is not None and connection.busy and now - connection.started > timeout_ns:
                    connection._fail("timeout")
                for lane in slot.browser.connections if slot.browser is not None else ():
                    if lane.timed_out(now):
                        lane._fail("timeout")


class ResolveError(Exception):
    pass


async def _sleep_until(moment: float) -> None:
    """Sleeps until time.perf_counter() reaches `moment`: the loop's millisecond timers can wake a
    little early, and a tick that ended early would report the sliver left as one more second."""
    while (left := moment - time.perf_counter()) > 0:
        await asyncio.sleep(left)
