"""WSGI (PEP 3333) on a bounded thread pool; the event loop never runs app code.

Theory of operation. The loop parses the request and hands the cycle to a pool thread once the
body has fully arrived or passed the high-water mark (so a slow uploader of a small body holds no
thread), or at once when the request has no body or expects 100-continue. `wsgi.input` reads from
a buffer the loop fills under a lock (with a condition variable once a side has to wait); reading
pauses at the high-water mark and resumes as the app consumes. The thread's writes cross to the
loop with call_soon_threadsafe and wait while more than the high-water mark is queued or the
transport is paused, so a fast generator and a slow client cannot grow memory. A thread that
waits on its client (the body, a slow reader, sendfile) stands aside from the app's threads
while another takes its place (ThreadPool). A list response is joined and sent in one write
with a Content-Length; `wsgi.file_wrapper` over a regular file uses os.sendfile.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import select
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote_to_bytes

from ..errors import ClientDisconnected
from .h1 import PERCENT, UNDERSCORE, Request, ResponseError, check_header
from .state import HIGH_WATER, WSGIApp

if TYPE_CHECKING:
    from ..config import Config
    from .connection import HttpConnection

logger = logging.getLogger("tricorn.error")

ERROR_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
ERROR_BODY = b"Internal Server Error\n"
TIMEOUT_BODY = b"Gateway Timeout: the app took longer than --request-timeout\n"


class WSGIProtocolError(Exception):
    """The app broke the WSGI contract; the message says how."""


class Job(Protocol):
    def run(self) -> None: ...
    def describe(self) -> str: ...


class ThreadPool:
    """Threads taking jobs from one queue: `size` of them for the app. A thread that waits on a
    client inside its job (network_wait: a slow reader, a body still arriving) stands aside and,
    if that leaves fewer than `size` threads to take jobs, a thread starts in its place; the
    surplus ends as the waits end. So slow clients cost a parked thread each, never the app's."""

    def __init__(self, size: int, on_free: Callable[[], None] = lambda: None) -> None:
        self.size = size
        self.on_free = on_free  # called from a pool thread when a job ends or waits on a client
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # for the counts below; the common path takes none
        self.waiting = 0  # threads inside a job, waiting on its client (or abandoned)
        self.abandoned: set[threading.Thread] = set()  # threads whose job passed --request-timeout
        self._live = 0
        self._threads: list[threading.Thread] = []
        self._names = itertools.count()
        # The job of each thread inside one: [job, since]; since is 0 while it waits on the client.
        self.jobs: dict[threading.Thread, list[Any]] = {}
        for _ in range(size):
            self._spawn()

    def busy(self) -> int:
        """The jobs that hold or wait for one of the `size` threads."""
        return self._queue.qsize() + len(self.jobs) - self.waiting

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._work, name=f"tricorn-wsgi-{next(self._names)}", daemon=True)
        self._live += 1
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def _work(self) -> None:
        get = self._queue.get
        jobs = self.jobs
        thread = threading.current_thread()
        while (job := get()) is not None:
            jobs[thread] = [job, monotonic()]
            try:
                job.run()
            finally:
                del jobs[thread]
                if thread in self.abandoned:
                    with self._lock:
                        self.abandoned.discard(thread)
                        self.waiting -= 1
                self.on_free()
            if self._live > self.size and self._retire_surplus():
                return

    def _retire_surplus(self) -> bool:
        """Whether this thread, started in place of one that waited on a client, is one too many now."""
        with self._lock:
            surplus = self._live - self.waiting > self.size
            if surplus:
                self._live -= 1
            return surplus

    def _stand_aside(self, record: list[Any] | None) -> None:
        """A thread inside a job stops counting as one of the app's: another starts if that leaves
        fewer than `size`, and its job no longer counts as running app code (overdue, stuck_for)."""
        with self._lock:
            self.waiting += 1
            if self._live - self.waiting < self.size:
                self._spawn()
        if record is not None:
            record[1] = 0.0
        self.on_free()

    @contextlib.contextmanager
    def network_wait(self) -> Iterator[None]:
        """Inside a job, while it waits on its client."""
        record = self.jobs.get(threading.current_thread())
        self._stand_aside(record)
        try:
            yield
        finally:
            with self._lock:
                self.waiting -= 1
            if record is not None and threading.current_thread() not in self.abandoned:
                record[1] = monotonic()

    def abandon(self, job: Job) -> None:
        """Give up on a job still running (--request-timeout; the loop thread): its thread stands
        aside as if it waited on a client, and a new thread takes its place. The thread rejoins the
        pool, or leaves it as surplus, when the app returns."""
        for thread, record in list(self.jobs.items()):
            if record[0] is job and thread not in self.abandoned:
                self.abandoned.add(thread)
                self._stand_aside(record)

    @property
    def current(self) -> list[Job]:
        return [job for job, _ in list(self.jobs.values())]

    def overdue(self, timeout: float) -> list[tuple[Job, float, str]]:
        """The jobs running app code for `timeout` or longer: each with how long, and its thread's stack."""
        now = monotonic()
        found = []
        for thread, (job, since) in list(self.jobs.items()):
            if since and now - since >= timeout:
                frame = sys._current_frames().get(thread.ident or 0)
                stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
                found.append((job, now - since, f"Thread {thread.name}:\n{stack}"))
        return found

    def stuck_for(self) -> float:
        """How long every one of the `size` threads has been inside one job running app code (0 if
        one is free)."""
        running: list[float] = sorted(since for _, since in list(self.jobs.values()) if since)
        if len(running) < self.size:
            return 0.0
        return monotonic() - running[-self.size]

    def shutdown(self, timeout: float) -> None:
        for _ in range(self._live):
            self._queue.put(None)
        deadline = monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - monotonic()))


class FileWrapper:
    """`wsgi.file_wrapper`: iterates a file in blocks; the server sends regular files with sendfile."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while data := read(self.blksize):
            yield data


class WSGIAdapter:
    def __init__(
        self, app: WSGIApp, config: Config, threads: int, multiprocess: bool = False,
        on_free: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.pool = ThreadPool(threads, on_free)
        self.root_path = config.root_path
        self.base_environ: dict[str, Any] = {
            "SCRIPT_NAME": config.root_path,
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.version": (1, 0),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
        }

    def start(self, conn: HttpConnection, request: Request) -> None:
        cycle = conn.cycle = WSGICycle(self, conn, request)
        if not request.has_body or request.expect_continue:
            cycle.dispatch()

    def close(self, timeout: float) -> None:
        self.pool.shutdown(timeout)


class WSGICycle:
    def __init__(self, adapter: WSGIAdapter, conn: HttpConnection, request: Request) -> None:
        self.adapter = adapter
        self.conn = conn
        self.loop = conn.loop
        self.request = request
        self.lock = threading.Lock()
        self._cond: threading.Condition | None = None  # made by the first wait (most requests never wait)
        # loop → thread: the body
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.body_done = not request.has_body
        self.disconnected = False
        self.dispatched = False
        self.continue_asked = False
        # thread → loop: the response
        self.queued = 0
        self.failed = False
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_sent = False

    # loop thread -------------------------------------------------------------------------------

    def dispatch(self) -> None:
        if not self.dispatched:
            self.dispatched = True
            self.adapter.pool.submit(self)

    def expire(self) -> None:
        """--request-timeout: answer 504, or close if the response has begun. What the app sends
        from now on is dropped, and its next read or write raises ClientDisconnected."""
        with self.lock:
            self.failed = self.disconnected = True
            self._notify()
        conn = self.conn
        if conn.cycle is not self:
            return
        response = conn.response
        if response is not None and not response.status and not conn.closed:
            response.keep_alive = False
            conn.send_start(504, ERROR_HEADERS, TIMEOUT_BODY, False)
        else:
            conn.abort()

    def describe(self) -> str:
        return self.request.describe()

    def feed_body(self, data: bytes) -> None:
        with self.lock:
            self.chunks.append(data)
            self.buffered += len(data)
            if self.buffered > HIGH_WATER and not self.paused:
                self.paused = True
                self.conn.body_paused(True)
            self._notify()
        if self.buffered >= HIGH_WATER:
            self.dispatch()

    def end_body(self) -> None:
        with self.lock:
            self.body_done = True
            self._notify()
        self.dispatch()

    def disconnect(self) -> None:
        with self.lock:
            self.disconnected = True
            self._notify()
        if not self.dispatched:
            self.dispatched = True
            self.conn.abort()  # the app was never called and never will be

    def client_eof(self) -> None:
        pass  # a WSGI app cannot observe it; a half-closed client still gets its response

    def writable_changed(self) -> None:
        with self.lock:
            self._notify()

    def _flush(self, data: bytes, more_body: bool, start: bool) -> None:
        try:
            if self.failed:
                return
            if start:
                self.conn.send_start(self.status, self.headers, data, more_body)
            else:
                self.conn.send_body(data, more_body)
        except ResponseError as exc:
            logger.error("WSGI app broke the protocol: %s", exc)
            self.failed = True
            self.conn.abort()
        finally:
            if more_body:  # the last piece was not counted: nobody waits for it
                with self.lock:
                    self.queued -= len(data)
                    self._notify()

    def _resume_reading(self) -> None:
        self.conn.body_paused(False)

    # pool thread -------------------------------------------------------------------------------

    def take_body(self) -> bytes:
        """Everything buffered, waiting for some; b"" at the end of the body."""
        with self.lock:
            while not self.chunks:
                if self.disconnected:
                    raise ClientDisconnected("client disconnected while the app read the body")
                if self.body_done:
                    return b""
                if not self.continue_asked:
                    self.continue_asked = True
                    self.loop.call_soon_threadsafe(self.conn.send_continue)
                with self.adapter.pool.network_wait():  # the client is still sending
                    self._wait()
            chunks = self.chunks
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self.chunks = []
            self.buffered = 0
            if self.paused:
                self.paused = False
                self.loop.call_soon_threadsafe(self._resume_reading)
            return data

    def _emit(self, data: bytes, more_body: bool, start: bool = False) -> None:
        with self.lock:
            if self._must_wait():
                with self.adapter.pool.network_wait():  # the client is not reading
                    while self._must_wait():
                        self._wait()
            if self.disconnected or self.failed:
                raise ClientDisconnected("client disconnected while the app wrote the response")
            if more_body:
                self.queued += len(data)
        self.loop.call_soon_threadsafe(self._flush, data, more_body, start)

    def _wait(self) -> None:
        """Wait for the other side (self.lock held)."""
        if self._cond is None:
            self._cond = threading.Condition(self.lock)
        self._cond.wait()

    def _notify(self) -> None:
        """Wake a waiting side, if any (self.lock held)."""
        if self._cond is not None:
            self._cond.notify_all()

    def _must_wait(self) -> bool:
        return (self.queued > HIGH_WATER or self.conn.write_paused) and not self.disconnected and not self.failed

    def start_response(
        self, status: Any, headers: Any, exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise WSGIProtocolError("start_response() called a second time without exc_info")
        if not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit() or status[3] != " ":
            raise WSGIProtocolError(f"invalid status {status!r}; expected a str such as '200 OK'")
        encoded = []
        try:
            for name, value in headers:
                if name.__class__ is not str or value.__class__ is not str:
                    raise WSGIProtocolError(f"header {name!r}: {value!r} is not a pair of str")
                header = (name.encode("latin-1"), value.encode("latin-1"))
                check_header(*header)
                encoded.append(header)
        except (ResponseError, UnicodeEncodeError, ValueError, TypeError) as exc:
            raise WSGIProtocolError(f"invalid response headers: {exc}") from None
        self.status = int(status[:3])
        self.headers = encoded
        return self.write

    def write(self, data: Any) -> None:
        if self.status is None:
            raise WSGIProtocolError("write() called before start_response()")
        if data.__class__ is not bytes:
            raise WSGIProtocolError(f"write() takes bytes, got {type(data).__name__}")
        if data:
            self._send(data, True)

    def _send(self, data: bytes, more_body: bool) -> None:
        if self.head_sent:
            self._emit(data, more_body)
        else:
            if self.status is None:
                raise WSGIProtocolError("the app returned a body without calling start_response()")
            self.head_sent = True
            self._emit(data, more_body, start=True)

    def run(self) -> None:
        if self.conn.server.metrics:  # the queue wait
            self.conn.queue_wait = monotonic() - self.conn.started_at
        result: Any = None
        try:
            result = self.adapter.app(self.environ(), self.start_response)
            if result is None:
                raise WSGIProtocolError("the app returned None; a WSGI app must return an iterable of bytes")
            if result.__class__ is list or result.__class__ is tuple:
                for chunk in result:
                    if chunk.__class__ is not bytes:
                        raise WSGIProtocolError(f"the app's iterable gave {type(chunk).__name__}, not bytes")
                body = b"".join(result)
                self._close(result)
                result = None
                self._send(body, False)
            elif isinstance(result, FileWrapper) and self._sendfile(result):
                pass
            else:
                for chunk in result:
                    if chunk.__class__ is not bytes:
                        raise WSGIProtocolError(f"the app's iterable gave {type(chunk).__name__}, not bytes")
                    if chunk:
                        self._send(chunk, True)
                self._close(result)
                result = None
                self._send(b"", False)
        except ClientDisconnected:
            self.loop.call_soon_threadsafe(self.conn.abort)
        except BaseException as exc:
            if isinstance(exc, WSGIProtocolError):
                logger.error("WSGI app broke the protocol: %s", exc, exc_info=exc)
            else:
                logger.error("Exception in WSGI application", exc_info=exc)
            if self.head_sent:
                self.loop.call_soon_threadsafe(self.conn.abort)
            else:
                self.head_sent = True
                self.status, self.headers = 500, ERROR_HEADERS
                try:
                    self._emit(ERROR_BODY, False, start=True)
                except ClientDisconnected:
                    self.loop.call_soon_threadsafe(self.conn.abort)
        finally:
            if result is not None:
                self._close(result)

    def _close(self, result: Any) -> None:
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                logger.exception("Exception in the WSGI response iterable's close()")

    def _sendfile(self, wrapper: FileWrapper) -> bool:
        """Send a regular file with os.sendfile; False where it cannot be (TLS, not a real file)."""
        if self.conn.scheme != "http" or self.status is None:
            return False
        try:
            fileno = wrapper.filelike.fileno()
            offset = wrapper.filelike.tell()
            size = os.fstat(fileno).st_size
            sock = self.conn.transport.get_extra_info("socket")
            sock_fd = sock.fileno()
        except (AttributeError, OSError, ValueError):
            return False
        count = max(0, size - offset)
        declared = next((int(v) for n, v in self.headers if n.lower() == b"content-length"), None)
        if declared is None:
            self.headers.append((b"content-length", str(count).encode()))
        else:
            count = min(count, declared)
        self._send(b"", True)
        sent = 0
        with self.adapter.pool.network_wait():  # no app code: the client's pace
            self._wait_drained()
            try:
                while sent < count:
                    try:
                        sent += os.sendfile(sock_fd, fileno, offset + sent, count - sent)
                    except BlockingIOError:
                        writable = select.poll()  # not select(): descriptors pass 1024
                        writable.register(sock_fd, select.POLLOUT)
                        writable.poll(1000)
                        if self.disconnected:
                            raise ClientDisconnected("client disconnected during sendfile") from None
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from None
        self.loop.call_soon_threadsafe(self._account, sent)
        self._close(wrapper)
        self._emit(b"", False)
        return True

    def _account(self, sent: int) -> None:
        if self.conn.response is not None:
            self.conn.response.account(sent)

    def _wait_drained(self) -> None:
        """Block until the loop has written everything queued and the transport buffer is empty."""
        drained = threading.Event()

        def check() -> None:
            if self.conn.closed or self.conn.transport.get_write_buffer_size() == 0:
                drained.set()
            else:
                self.loop.call_later(0.001, check)

        with self.lock:
            while not (self.queued == 0 or self.disconnected):
                self._wait()
        self.loop.call_soon_threadsafe(check)
        drained.wait()
        if self.disconnected:
            raise ClientDisconnected("client disconnected")

    def environ(self) -> dict[str, Any]:
        request = self.request
        conn = self.conn
        path = request.path
        if PERCENT in path:
            path = unquote_to_bytes(path)
        path_info = path.decode("latin-1")
        root = self.adapter.root_path
        if root and (path_info == root or path_info.startswith(root + "/")):
            path_info = path_info[len(root):]
        server = conn.sockname or ("localhost", 0)
        environ = self.adapter.base_environ.copy()
        environ["REQUEST_METHOD"] = request.method.decode("ascii")
        environ["PATH_INFO"] = path_info
        environ["QUERY_STRING"] = request.query.decode("latin-1")
        environ["SERVER_NAME"] = server[0]
        environ["SERVER_PORT"] = str(server[1])
        environ["RAW_URI"] = request.target.decode("latin-1")
        environ["wsgi.url_scheme"] = request.scheme
        environ["wsgi.input"] = InputStream(self)
        if conn.tls_environ:
            environ.update(conn.tls_environ)
        if request.http_version == "1.0":
            environ["SERVER_PROTOCOL"] = "HTTP/1.0"
        if request.client is not None:
            environ["REMOTE_ADDR"], port = request.client
            environ["REMOTE_PORT"] = str(port)
        keys = _ENVIRON_KEYS
        for name, value in request.headers:
            key = keys.get(name)
            if key is None:
                key = _environ_key(name)
            if key:
                text = value.decode("latin-1")
                if key in environ and key[0] == "H":  # a repeated header: joined (CONTENT_* are not)
                    text = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + text
                environ[key] = text
        return environ


_ENVIRON_KEYS: dict[bytes, str] = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}


def _environ_key(name: bytes) -> str:
    """The environ key of a (lowercased) request header name, cached; "" for none."""
    # HTTP_X_USER from "X_User" would pass for "X-User": dropped, as gunicorn does
    key = "" if UNDERSCORE in name else "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
    if len(_ENVIRON_KEYS) < 1024:
        _ENVIRON_KEYS[name] = key
    return key


class InputStream:
    """`wsgi.input`: the request body, streamed from the connection as the app reads it."""

    def __init__(self, cycle: WSGICycle) -> None:
        self._cycle = cycle
        self._buffer = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._cycle.take_body()
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def _take(self, n: int) -> bytes:
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        start = 0
        while True:
            newline = self._buffer.find(b"\n", start)
            if newline >= 0:
                end = newline + 1
                break
            start = len(self._buffer)
            if 0 <= limit <= start or not self._fill():
                end = start
                break
        return self._take(end if limit < 0 else min(end, limit))

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line
