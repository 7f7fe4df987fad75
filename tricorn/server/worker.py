"""One serving process: event loop, lifespan, listeners, timeout sweep, graceful drain.

Shutdown order (SIGTERM or SIGINT): stop accepting; close idle connections and mark busy ones to
close after their response; wait for in-flight requests up to --graceful-timeout; close what is
left; run lifespan shutdown; stop the WSGI threads. A second SIGINT exits at once.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import random
import signal
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from .. import logs
from ..config import Config
from ..errors import EXIT_BOOT_FAILURE
from ..host import sockets as sockets_module
from ..host import systemd
from ..host.eventloop import new_event_loop
from ..host.resources import rss_bytes
from ..stats import INTERFACES, RETIRE_REASONS, MasterLink
from .accept import Acceptor
from .access_log import AccessLog
from .asgi import ASGI2App, ASGIAdapter, Lifespan, LifespanFailure
from .connection import HttpConnection
from .overdue import RequestWatch
from .state import ServerState
from .watchdog import Watchdog
from .ws import WebSocketAdapter
from .wsgi import Job, ThreadPool, WSGIAdapter

logger = logging.getLogger("tricorn.error")


class Worker:
    def __init__(
        self, config: Config, app: Any, interface: str, listeners: list[socket.socket],
        access_log: AccessLog | None, parent_pid: int = 0,
        link: MasterLink | None = None, ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.parent_pid = parent_pid  # the master's pid; 0 when serving without one
        self.link = link  # the heartbeat into the master's scoreboard; None serving alone
        self.ssl_context = ssl_context
        jitter = random.randint(0, config.max_requests_jitter) if config.max_requests_jitter > 0 else 0
        self.max_requests = config.max_requests + jitter if config.max_requests > 0 else 0
        lifetime = config.max_worker_lifetime
        self.retire_at = time.monotonic() + lifetime * random.uniform(1.0, 1.1) if lifetime > 0 else 0.0
        self.app = app
        self.interface = interface
        self.listeners = listeners
        self.access_log = access_log
        self.exit_code = 0
        self._stop: asyncio.Event | None = None
        self._signals = 0
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._retiring = False
        self._retire_why = 0  # an index in stats.RETIRE_REASONS, once the worker asked to be replaced
        self._watch: RequestWatch | None = None  # --slow-request, --request-timeout
        self._abandoned: set[Job] = set()  # WSGI requests past --timeout, not waited for

    def run(self) -> int:
        if self.link is not None:
            # The master sends SIGABRT to a hung worker: every thread's stack goes to the log, then
            # the worker dies of the signal.
            faulthandler.enable(all_threads=True)
        loop = new_event_loop(self.config.loop)
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.serve(loop))
        finally:
            loop.close()
        return self.exit_code

    def handle_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1 and signum == signal.SIGINT:
            logger.warning("second interrupt: exiting at once")
            os._exit(1)
        assert self._stop is not None
        self._stop.set()

    def _hup(self) -> None:
        if self.link is None:
            logger.warning("SIGHUP: serving in one process (-w 1), there is no master to start new workers; "
                           "restart the process, or run with -w 2 or more for zero-downtime reloads")

    async def serve(self, loop: asyncio.AbstractEventLoop) -> None:
        config = self.config
        self._stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.handle_signal, signum)
        loop.add_signal_handler(signal.SIGUSR1, logs.reopen, self.access_log)
        # HUP is the master's to handle (`pkill -HUP tricorn` reaches the workers too); alone, say why nothing happens.
        loop.add_signal_handler(signal.SIGHUP, self._hup)
        state = ServerState(config, loop, self.access_log)
        state.stats.interface = INTERFACES.index("wsgi" if self.interface == "wsgi" else "asgi")
        if self.link is not None and self.max_requests:
            state.max_requests = self.max_requests
            state.on_max_requests = lambda: self._retire(
                state, "max_requests",
                "Reached --max-requests (%d requests): finishing the %d in progress, then exiting",
                self.max_requests, state.in_flight)

        lifespan = None
        if self.interface == "wsgi":
            threads, _ = config.thread_count()
            def thread_freed() -> None:  # from a pool thread: the acceptors may take connections again
                if state.accept_paused:
                    loop.call_soon_threadsafe(state.thread_freed)

            state.adapter = adapter = WSGIAdapter(
                self.app, config, threads, multiprocess=self.link is not None, on_free=thread_freed)
            state.threads = threads
            state.busy_threads = adapter.pool.busy
        else:
            app = ASGI2App(self.app) if self.interface == "asgi2" else self.app
            lifespan = Lifespan(app, config.lifespan)
            try:
                await lifespan.startup()
            except LifespanFailure as exc:
                logger.error("Application startup failed: %s. Exiting.", exc)
                self.exit_code = EXIT_BOOT_FAILURE
                return
            state.adapter = ASGIAdapter(app, config, lifespan.state)
            if config.ws != "none":
                state.websockets = WebSocketAdapter(app, config, lifespan.state)

        servers: list[asyncio.AbstractServer] = []
        # A handshake counts against the header timeout: half-open handshakes cannot pile up.
        handshake_timeout = config.timeout_header if self.ssl_context else None
        for sock in self.listeners:
            if self.link is not None:  # workers sharing the listener: accept.py
                acceptor = Acceptor(state, sock, self.ssl_context, handshake_timeout)
                state.acceptors.append(acceptor)
                acceptor.start()
            else:
                servers.append(await loop.create_server(
                    lambda: HttpConnection(state), sock=sock, backlog=config.backlog, ssl=self.ssl_context,
                    ssl_handshake_timeout=handshake_timeout,
                ))
            where = sockets_module.describe(sock)
            if self.ssl_context is not None:
                where = where.replace("http://", "https://", 1)
            logger.info("Listening at: %s (%d)", where, os.getpid())
        logger.info("Serving %s (%s)", config.app, self.interface)
        if self.link is not None:
            self.link.beat(state.stats)  # the first beat tells the master this worker is READY
        systemd.notify("READY=1")  # serving alone under systemd; a no-op in a master's worker
        self._watch = RequestWatch(state, config.slow_request, config.request_timeout,
                                   getattr(state.adapter, "pool", None), lambda: self._too_many_abandoned(state))
        self._start_sweep(state)
        watchdog = Watchdog(state, config.block_warn, self.link, self._thread_requests(state))
        watchdog.start()

        await self._stop.wait()
        logger.info("Shutting down: waiting up to %gs for %d request(s) in progress",
                    config.graceful_timeout, state.in_flight - self._stuck(state))
        systemd.notify("STOPPING=1")
        backlog = [sock.dup() for sock in self.listeners]
        for server in servers:
            server.close()
        for accepting in state.acceptors:
            accepting.close()
        state.shutting_down = True
        for conn in list(state.connections):
            conn.shutdown()
        if self._retiring:  # the listen queue is the other workers' to serve
            for sock in backlog:
                sock.close()
        else:
            await self._serve_backlog(loop, state, backlog)
        # The sweep goes on closing connections as they fall idle (connection.shutdown).
        deadline = loop.time() + config.graceful_timeout
        quiet = 0  # a connection accepted just before the listeners closed is made a loop pass later
        while quiet < 2 and loop.time() < deadline:
            quiet = 0 if self._waiting_for(state) else quiet + 1
            await asyncio.sleep(0.02)
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        if self._waiting_for(state):
            logger.warning("graceful timeout: closing %d connection(s) with requests in progress", state.in_flight)
        for conn in list(state.connections):
            conn.transport.abort()
        if lifespan is not None:
            await lifespan.shutdown()
        if isinstance(state.adapter, WSGIAdapter):
            state.adapter.close(timeout=1.0)
        watchdog.stop()
        if self.link is not None:  # the last counts, for the master's totals
            self._report(state, 0.0)
        logger.info("Finished server process (%d)", os.getpid())

    async def _serve_backlog(
        self, loop: asyncio.AbstractEventLoop, state: ServerState, listeners: list[socket.socket],
    ) -> None:
        """Connections the kernel already accepted into the listen queue are owed an answer: take
        them and serve one request each (`connection: close`), rather than leave them to be reset."""
        for sock in listeners:
            with sock:
                sock.setblocking(False)
                while True:
                    try:
                        client, _ = sock.accept()
                    except OSError:  # BlockingIOError: the queue is empty
                        break
                    client.setblocking(False)
                    _, conn = await loop.connect_accepted_socket(lambda: HttpConnection(state), client)
                    conn.shutdown()

    def _retire(self, state: ServerState, why: str, message: str, *args: object) -> None:
        """Leave serving to a successor (--max-requests, a stuck WSGI request): every response from
        now on says `connection: close`, no new connection is taken, and the worker exits once its
        requests in flight are answered, except those abandoned past --timeout (the master starts
        its successor). So it serves at most one request more per connection; an idle keep-alive
        connection gets until its keep-alive deadline to send that request."""
        logger.info(message, *args)
        self._retiring = True
        self._retire_why = self._retire_why or RETIRE_REASONS.index(why)
        state.shutting_down = True
        state.hurry = False  # the successor is already starting: idle connections keep their deadlines
        assert self._stop is not None
        self._stop.set()

    def _retire_reason(self, state: ServerState) -> int:
        """--max-requests, --max-worker-lifetime, --max-worker-memory, a stuck request: ask the master
        for a successor, saying why (an index in stats.RETIRE_REASONS; 0: no need)."""
        if self._retire_why:
            return self._retire_why
        if 0 < self.max_requests <= state.requests:
            self._retire_why = RETIRE_REASONS.index("max_requests")
        elif self.retire_at and time.monotonic() >= self.retire_at:
            self._retire_why = RETIRE_REASONS.index("lifetime")
        elif self.config.max_worker_memory and rss_bytes() > self.config.max_worker_memory:
            self._retire_why = RETIRE_REASONS.index("memory")
        return self._retire_why

    def _report(self, state: ServerState, lag: float) -> None:
        """Copy the gauges into the stats and beat (the loop thread)."""
        assert self.link is not None
        stats = state.stats
        stats.requests = state.requests
        stats.in_flight = state.in_flight
        stats.retire = self._retire_reason(state)
        stats.lag = lag
        stats.connections = len(state.connections)
        stats.websockets = sum(1 for conn in state.connections if getattr(conn, "websocket", None) is not None)
        stats.threads = state.threads
        stats.threads_busy = state.busy_threads()
        self.link.beat(stats)

    def _check_overdue(self, state: ServerState, pool: ThreadPool) -> None:
        """A WSGI request still running at --timeout: its thread's stack goes to the log, once. Python
        cannot stop a thread, so under a master the worker is replaced and the request abandoned;
        serving alone, the thread stays lost until the app returns."""
        for job, seconds, stack in pool.overdue(self.config.timeout):
            if job in self._abandoned:
                continue
            self._abandoned.add(job)
            logger.error("WSGI request %s still running after %.1fs (--timeout %gs); %s. %s", job.describe(),
                         seconds, self.config.timeout,
                         "replacing this worker" if self.link is not None else "its thread stays busy",
                         stack.rstrip("\n"))
            if self.link is not None and not self._retiring:
                self._retire(state, "timeout", "Finishing the %d other request(s) in progress, then exiting",
                             state.in_flight - self._stuck(state))

    def _too_many_abandoned(self, state: ServerState) -> None:
        """More than half the WSGI threads run requests given up at --request-timeout."""
        if self.link is not None and not self._retiring:
            self._retire(state, "timeout", "More than half the threads run abandoned requests: finishing the %d "
                         "other request(s) in progress, then exiting", state.in_flight)

    def _thread_requests(self, state: ServerState) -> Callable[[], dict[int, str]]:
        """For the watchdog's stacks: which request each WSGI thread runs."""
        pool = getattr(state.adapter, "pool", None)
        if pool is None:
            return dict
        jobs = pool.jobs
        return lambda: {thread.ident or 0: record[0].describe() for thread, record in list(jobs.items())}

    def _stuck(self, state: ServerState) -> int:
        """How many abandoned requests are still running."""
        pool = getattr(state.adapter, "pool", None)
        return sum(job in self._abandoned for job in pool.current) if pool is not None and self._abandoned else 0

    def _waiting_for(self, state: ServerState) -> bool:
        """Whether stopping still waits: for requests in flight or open connections, beyond the
        abandoned requests (and their connections)."""
        stuck = self._stuck(state)
        return state.in_flight > stuck or len(state.connections) > stuck

    def _start_sweep(self, state: ServerState) -> None:
        """Close connections past their deadline (connection.py explains the deadlines)."""
        config = self.config
        timeouts = [t for t in (config.timeout_header, config.keep_alive, config.timeout_body) if t > 0]
        tick = max(0.05, min(0.5, *(t / 4 for t in timeouts)))
        loop = state.loop
        due = loop.time() + tick
        lag = 0.0  # the most this timer fired late since the last beat: how long callbacks held the loop

        def run() -> None:
            nonlocal due, lag
            now = loop.time()
            lag = max(lag, now - due)
            if self.parent_pid and os.getppid() != self.parent_pid and self._stop is not None:
                logger.warning("the master (pid %d) is gone: stopping", self.parent_pid)
                self._stop.set()
            pool = getattr(state.adapter, "pool", None)
            if pool is not None:
                self._check_overdue(state, pool)
            if self._watch is not None and self._watch.active:
                self._watch.check()
            # A WSGI worker whose every thread is stuck in one request is as hung as a blocked loop.
            if self.link is not None and (pool is None or pool.stuck_for() < config.timeout):
                self._report(state, lag)
                lag = 0.0
            for conn in list(state.connections):
                conn.check_deadline(now)
            due = now + tick
            self._sweep_handle = loop.call_later(tick, run)

        self._sweep_handle = loop.call_later(tick, run)
