"""Real servers in subprocesses, talked to with real clients.

The test binds and listens on a free port itself and hands the socket to tricorn as `--bind fd://N`,
so a client can connect at once: the kernel queues it until the server accepts. No sleeps.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httptools
import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "apps"


def free_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _read_all(fd: int) -> str:
    """pread, not seek+read: the file offset is shared with the server, whose appends move it."""
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).decode(errors="replace")


class Server:
    """A tricorn process serving `app` from tests/apps on a pre-bound free port."""

    def __init__(
        self, app: str, *args: str, env: dict[str, str] | None = None, bind: bool = True,
        preexec_fn: Callable[[], None] | None = None, one_process: bool = True,
    ) -> None:
        """`one_process`: add --workers 1 unless the arguments, env or a --config file choose a count."""
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.record = Path(tempfile.mktemp(prefix="tricorn-record-"))
        # Append mode: the master and its workers share these files, and without O_APPEND their
        # writes would land at one shared offset and overwrite each other.
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        for capture in (self._out, self._err):
            fcntl.fcntl(capture.fileno(), fcntl.F_SETFL, fcntl.fcntl(capture.fileno(), fcntl.F_GETFL) | os.O_APPEND)
        fd = self.listener.fileno()
        argv = [sys.executable, "-m", "tricorn", app, "--app-dir", str(APPS), *args]
        chosen = {"-w", "--workers", "-c", "--config"} & {arg.split("=")[0] for arg in args}
        if one_process and not chosen and not {"WEB_CONCURRENCY", "TRICORN_WORKERS"} & set(env or {}):
            argv += ["--workers", "1"]  # one process unless a test is about workers
        if bind:
            argv += ["--bind", f"fd://{fd}"]
        full_env = {**os.environ, "TEST_RECORD_FILE": str(self.record), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, pass_fds=[fd], stdout=self._out, stderr=self._err, env=full_env, preexec_fn=preexec_fn,
        )
        self.listener.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def wait(self, timeout: float = 15) -> int:
        return self.proc.wait(timeout)

    @property
    def stderr(self) -> str:
        return _read_all(self._err.fileno())

    @property
    def stdout(self) -> str:
        return _read_all(self._out.fileno())

    def records(self) -> list[str]:
        return self.record.read_text().split() if self.record.exists() else []

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition"):
        """Poll `predicate` (bounded in time): for effects only visible in logs or files."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; stderr:\n{self.stderr}")

    def rss_peak_kib(self) -> int:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmHWM")))

    def close(self) -> None:
        self.stop()
        self.record.unlink(missing_ok=True)
        self._out.close()
        self._err.close()


@pytest.fixture
def serve() -> Iterator:
    servers: list[Server] = []

    def start(app: str, *args: str, **kwargs) -> Server:
        server = Server(app, *args, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        print(f"--- tricorn {' '.join(server.proc.args[3:5])} stderr ---\n{server.stderr}")  # shown on failure
        server.close()


class Response:
    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        return next((v.decode("latin-1") for n, v in self.headers if n.lower() == key), None)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:60]!r}>"


class _ResponseReader:
    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.responses.append(Response())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.responses[-1].headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.responses[-1].status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.responses[-1].body += body

    def on_message_complete(self) -> None:
        self.responses[-1].complete = True


def read_responses(sock: socket.socket, count: int) -> list[Response]:
    """Read from `sock` until `count` responses are complete or the server closes."""
    reader = _ResponseReader()
    while sum(r.complete for r in reader.responses) < count:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        reader.parser.feed_data(chunk)
    return reader.responses


def split_points(data: bytes, strategy: str, seed: int = 0) -> list[bytes]:
    """The pieces to send: whole, byte by byte, or at random places."""
    if strategy == "whole":
        return [data]
    if strategy == "bytewise":
        return [data[i:i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, 6))) if len(data) > 1 else []
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def exchange(
    port: int, data: bytes, strategy: str = "whole", half_close: bool = True, timeout: float = 10.0,
) -> tuple[list[Response], bool]:
    """Send `data` (split as asked), then read responses until the server closes.

    Returns the responses and whether the server closed the connection (False on timeout).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for piece in split_points(data, strategy):
                sock.sendall(piece)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server refused and closed before reading everything
        reader = _ResponseReader()
        closed = False
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                try:
                    reader.parser.feed_data(chunk)
                except httptools.HttpParserError as exc:
                    raise AssertionError(f"the server sent a malformed response: {exc}: {chunk[:200]!r}") from None
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            pass
        return reader.responses, closed
