"""The server under test: the command that starts it under one configuration (tricorn itself, or
a --cmd template), and the process it runs as, with its CPU time, memory and tricorn's own counters
(read from its master's control socket, as `tricorn ctl status` does)."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..ctl import ask
from ..errors import UserError
from ..host.interrupts import held_interrupts, release_interrupts
from ..host.resources import rss_bytes
from .limits import Limit
from .model import TrialError
from .procfs import ticks

# The server under test is our own child on 127.0.0.1, serving whatever certificate it was given:
# trusted as it is (no CA bundle loaded), for the readiness probe and every trial's load alike.
UNVERIFIED = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
UNVERIFIED.check_hostname = False
UNVERIFIED.verify_mode = ssl.CERT_NONE
UNVERIFIED.set_alpn_protocols(["http/1.1"])


def _answers(port: int, request: bytes, timeout: float, tls: ssl.SSLContext | None) -> bool:
    """Whether the server answers `request` with HTTP, in plain text or (with `tls`) over TLS."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            sock = tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls is not None else raw
            sock.sendall(request)
            return sock.recv(5) == b"HTTP/"
    except (OSError, ssl.SSLError):
        return False


@dataclass(frozen=True)
class ServerCommand:
    """How to start the server under test: tricorn itself, or a --cmd template."""

    app: str | None = None  # tricorn APP
    template: str | None = None  # --cmd, with {workers}, {threads}, {port}
    extra: tuple[str, ...] = ()  # more tricorn options, after --

    def argv(self, workers: int, threads: int | None, port: int) -> list[str]:
        """The command for `workers` × `threads`; tricorn's own defaults for workers 0."""
        if self.template is not None:
            return shlex.split(self.filled(workers, threads, port))
        assert self.app is not None
        argv = ["tricorn", self.app, "-b", f"127.0.0.1:{port}", "--no-access-log", "--log-level", "warning"]
        if workers:
            argv += ["-w", str(workers)]
        if workers and threads is not None:
            argv += ["--threads", str(threads)]
        return [*argv, *self.extra]

    def filled(self, workers: int, threads: int | None, port: int | str = "{port}") -> str:
        """The --cmd template for this configuration; by default the port is left for the user
        to fill (a trial's was a free one of the moment)."""
        assert self.template is not None
        return self.template.format(workers=workers, threads=threads or 1, port=port)

    def counted(self, workers: int) -> bool:
        """Whether the server has counters to read: tricorn's master, with 2+ workers (or its
        defaults, which may be 2+)."""
        return self.template is None and workers != 1

    def process_argv(self, argv: list[str]) -> list[str]:
        """What to execute: tricorn through this interpreter, so it need not be on PATH."""
        return [sys.executable, "-m", "tricorn", *argv[1:]] if self.template is None else argv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """The server under test, in its own session so that it and its workers stop together."""

    def __init__(self, argv: Sequence[str], cores: frozenset[int] | None, counted_workers: int = 0,
                 limit: Limit | None = None) -> None:
        """`counted_workers`: how many workers tricorn's master will report (0: argv is not a
        tricorn master; -1: as many as the master decides; else a control socket is added to
        argv). `limit`: the cgroup the server runs in."""
        self.argv = list(argv)
        self.cores = cores
        self.limit = limit
        self.workers = counted_workers
        self.log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 - closed by stop()
        self.process: subprocess.Popen[bytes] | None = None
        self.control: str | None = None
        if counted_workers:
            self._control_dir = tempfile.mkdtemp(prefix="tricorn-tune-")
            self.control = os.path.join(self._control_dir, "ctl")
            self.argv += ["--control-socket", self.control]
        self.served = 0  # the workers' requests at the last reading
        self.scheme = "http"  # "https" once wait_ready found that the server speaks TLS

    def start(self) -> None:
        cores, limit = self.cores, self.limit

        def pin() -> None:
            release_interrupts()  # held by start(); a server stops on SIGINT
            if cores:
                os.sched_setaffinity(0, cores)
            if limit is not None:
                limit.enter()

        try:
            with held_interrupts():  # else a Ctrl-C inside Popen leaves the server running, unknown to stop()
                self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                                stderr=self.log, start_new_session=True, preexec_fn=pin)
        except OSError as exc:
            raise TrialError(f"cannot start {self.argv[0]}: {exc.strerror}; check --cmd") from None

    def output_tail(self, lines: int = 3) -> str:
        self.log.seek(0)
        text = self.log.read().decode(errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:])

    def wait_ready(self, port: int, path: str, timeout: float) -> None:
        """Until the server answers an HTTP request on `port`, in plain text or over TLS (`scheme`
        says which; any status: the probe judges it) and,
        where its master reports them, every worker listens: connections opened while one still
        starts all go to the others, and stay there (keep-alive)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        answered = False
        while True:
            code = self.process.poll()
            if code is not None:
                raise TrialError(f"the server exited with code {code} before it answered: "
                                 f"{self.output_tail() or 'no output'}")
            if self.limit is not None and self.limit.oom_kills():
                raise TrialError("OOM-killed before the server answered")
            if not answered:
                answered = _answers(port, request, min(2.0, timeout), None)
                if not answered and _answers(port, request, min(2.0, timeout), UNVERIFIED):
                    answered, self.scheme = True, "https"
            listening, wanted = self._readiness() if self.control else (self.workers, self.workers)
            if answered and listening >= wanted:
                self.workers = wanted
                return
            if time.monotonic() > deadline:
                if answered:
                    raise TrialError(f"only {listening} of {wanted} workers started within {timeout:g}s: "
                                     f"{self.output_tail() or 'no output'} (a slow app: raise --start-timeout)")
                raise TrialError(f"the server did not answer on port {port} within {timeout:g}s: does the command "
                                 "bind the {port} it is given? (a slow app: raise --start-timeout)")
            time.sleep(0.05)

    def pids(self) -> list[int]:
        """The server and every process under it."""
        assert self.process is not None
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
        found, queue = [], [self.process.pid]
        while queue:
            pid = queue.pop()
            found.append(pid)
            queue.extend(children.get(pid, ()))
        return found

    def cpu_seconds(self) -> float:
        return ticks(f"/proc/{pid}/stat" for pid in self.pids()) / os.sysconf("SC_CLK_TCK")

    def side_thread_seconds(self) -> float:
        """The CPU time of every thread but each process's main one: where tricorn (and gunicorn's
        gthread workers) run a WSGI app, while tricorn's main thread runs the event loop."""
        stats = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                stats += [f"/proc/{pid}/task/{tid}/stat" for tid in os.listdir(f"/proc/{pid}/task") if tid != str(pid)]
        return ticks(stats) / os.sysconf("SC_CLK_TCK")

    def memory(self) -> tuple[int, int, int]:
        """Total RSS, the mean of the serving processes, and the master's (0 for one process)."""
        assert self.process is not None
        pids = self.pids()
        sizes = {pid: rss_bytes(pid) for pid in pids}
        total = sum(sizes.values())
        serving = [size for pid, size in sizes.items() if pid != self.process.pid and size]
        if not serving:
            return total, total, 0
        return total, sum(serving) // len(serving), sizes.get(self.process.pid, 0)

    def _readiness(self) -> tuple[int, int]:
        """Ready workers, and how many there should be: counted_workers, or (-1) the master's
        target once it has sized its workers to the memory limit and started them all."""
        status = self._status()
        workers = status.get("workers", [])
        ready = sum(worker["state"] == "ready" for worker in workers)
        if self.workers >= 0:
            return ready, self.workers
        target = int(status.get("target", 0))
        return ready, target if ready == len(workers) == target else max(target, ready + 1)

    def _status(self) -> dict[str, Any]:
        assert self.control is not None
        try:
            reply = ask(self.control, {"command": "status"})
        except UserError:
            return {}
        status: dict[str, Any] = reply.get("status", {})
        return status

    def _workers(self) -> list[dict[str, Any]]:
        """The ready workers as the master's control socket reports them; none until it answers."""
        workers: list[dict[str, Any]] = self._status().get("workers", [])
        return [worker for worker in workers if worker["state"] == "ready"]

    def counters(self) -> tuple[list[int], float] | None:
        """The workers' request counts and largest loop lag (ms), from tricorn's master."""
        if self.control is None:
            return None
        workers = self._workers()
        return [int(w["requests"]) for w in workers], max((w["lag_ms"] for w in workers), default=0.0)

    def stop(self, grace: float = 10.0) -> None:
        process = self.process
        if process is None:
            return
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(grace)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        finally:
            # Workers a dead master left behind: the session is ours, started above.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            self.log.close()
            if self.control is not None:
                shutil.rmtree(self._control_dir, ignore_errors=True)
