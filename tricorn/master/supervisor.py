"""The pre-fork master: spawn, reap and replace workers; signals with gunicorn's meanings.

Theory of operation (gunicorn's arbiter shape). The listeners are bound once, here, and every
worker inherits them across fork. Signal handlers only enqueue the signal and wake the loop
through a pipe; one synchronous loop handles the queue, reaps children, and keeps the worker count.
  TERM            graceful stop: workers drain within --graceful-timeout, then KILL
  INT, QUIT       fast stop
  HUP             reload: re-read the config file and environment, start a new generation of
                  workers (new code: the app is imported after the fork), and only when every
                  one of them is READY tell the old generation to drain: no request is refused
  TTIN / TTOU     one worker more / one less
  USR1            reopen log files, here and in every worker
  CHLD            wakes the loop to reap
A worker that exits with 3 (boot failure) or 4 (app load failure) stops the master with the same
code instead of being respawned forever. Workers watch their parent pid and exit if the master
is gone, so killing the master with -9 leaves no orphans serving.

Liveness: each worker's event loop writes a heartbeat into the scoreboard; one silent for
--timeout is sent SIGABRT (faulthandler logs every thread's stack, then the worker dies of it;
SIGKILL a second later if it did not).

Recycling (--max-requests, --max-worker-memory, --max-worker-lifetime): a worker past a limit asks
for retirement in its slot; the master starts its successor and drains the old worker once the
successor is READY, as for HUP. Workers that keep dying right after they start are restarted with
a growing delay, and stop the master after CRASH_LIMIT deaths in a row.

Sizing: without --workers the count is the effective CPUs. The first worker boots alone; once it is
READY its RSS is known, and the count is lowered so that all workers fit in MEMORY_SHARE of the
memory limit. Then the others start. Under systemd (NOTIFY_SOCKET) the master reports READY=1
once a whole generation is READY, RELOADING=1 on HUP and STOPPING=1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config
from ..errors import EXIT_APP_LOAD_FAILURE, EXIT_BOOT_FAILURE
from ..host import systemd
from ..host.identity import set_title
from ..host.resources import memory_limit, rss_bytes
from ..host.sockets import describe, open_listener
from ..stats import RETIRE_REASONS, MasterLink, WorkerStats
from . import control, metrics
from . import scoreboard as sb
from .endpoints import Endpoint, Endpoints, http_answer, http_complete
from .scoreboard import Mailbox, Scoreboard

logger = logging.getLogger("tricorn.error")

HALTING_EXITS = (EXIT_BOOT_FAILURE, EXIT_APP_LOAD_FAILURE)
ABORT_GRACE = 1.0  # seconds between SIGABRT (stacks to the log) and SIGKILL for a hung worker
# Crash-loop guard: a worker dying within CRASH_WINDOW of its start is an early death; each one in a
# row doubles the wait before the next start (from 0.1 s, at most 2 s); CRASH_LIMIT in a row stop
# the master, instead of burning CPU on a worker that cannot stay up.
CRASH_WINDOW = 5.0
CRASH_LIMIT = 6
MEMORY_SHARE = 0.8  # of the memory limit, for all workers together; the rest is headroom
ServeWorker = Callable[[int, int, MasterLink], int]  # (worker number, master pid, link) -> exit code
STACKS_WAIT = 2.0  # seconds the master waits for a worker's stacks
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU,
           signal.SIGUSR1, signal.SIGCHLD)


@dataclass
class Child:
    """What the master knows of one worker process."""

    slot: int  # its scoreboard slot
    started: float  # monotonic time of the fork
    mailbox: Mailbox  # where it answers the master's requests for its stacks
    generation: int  # -1 once it no longer counts toward the worker count (TTOU, retiring)
    aborted_at: float = 0.0  # when it was sent SIGABRT for a missed heartbeat; 0 if never
    retiring: bool = False  # drain it once every worker of the current generation is READY
    replaced: str = ""  # why a successor took its place (metrics.RESTART_REASONS); "" if none did


class Link:
    """A worker's MasterLink: its scoreboard slot, and the mailbox for its stacks."""

    def __init__(self, scoreboard: Scoreboard, mailbox: Mailbox, slot: int, pid: int) -> None:
        self.scoreboard, self.mailbox, self.slot, self.pid = scoreboard, mailbox, slot, pid

    def beat(self, stats: WorkerStats) -> None:
        self.scoreboard.beat(self.slot, self.pid, stats)

    def stacks_asked(self) -> int:
        return self.scoreboard.stacks_asked(self.slot)

    def stacks_answer(self, asked: int, text: str) -> None:
        self.mailbox.post(asked, text)


class Supervisor:
    def __init__(
        self, config: Config, listeners: list[socket.socket], serve: ServeWorker,
        reload: Callable[[], tuple[Config, ServeWorker]] | None = None,
        reopen_logs: Callable[[], None] = lambda: None, app_metrics: metrics.AppMetrics | None = None,
    ) -> None:
        """`serve(number, master_pid, heartbeat)` runs in each forked worker and returns its exit code;
        `reload()` re-reads the configuration for HUP and returns it with a new `serve`."""
        self.config = config
        self.target = config.worker_count()[0]
        self.listeners = listeners
        self.serve = serve
        self.reload = reload
        self.reopen_logs = reopen_logs
        self.sized = False  # the worker count was checked against the memory limit
        self.announced = False  # systemd was told READY=1 for the current generation
        self.scoreboard = Scoreboard()
        self.asked = 0  # the last stacks request's number
        self.totals = metrics.Totals()
        self.endpoints = Endpoints()
        self.app_metrics = app_metrics  # --metrics-bind: the app's prometheus_client metrics
        self.control_path: str | None = None
        self.children: dict[int, Child] = {}
        self.generation = 0
        self.early_deaths = 0
        self.respawn_at = 0.0
        self.queue: list[int] = []
        self.exit_code = 0
        self.stopping = False
        self.stop_signal = signal.SIGTERM
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # signals: enqueue and wake, nothing more --------------------------------------------------

    def _enqueue(self, signum: int, frame: object) -> None:
        if len(self.queue) < 10:
            self.queue.append(signum)
        with contextlib.suppress(OSError):  # the pipe is full: the loop is awake anyway
            os.write(self._wake_w, b".")

    def run(self) -> int:
        for signum in SIGNALS:
            signal.signal(signum, self._enqueue)
        set_title(f"tricorn: master [{self.config.app}]")
        count, why = self.config.worker_count()
        logger.info("Master starting (pid %d) with %d workers (%s)", os.getpid(), count, why)
        try:
            self._open_endpoints()
            while not self.stopping:
                self._spawn_missing()
                self._sleep(max(0.01, min(1.0, self.respawn_at - time.monotonic())))
                self._reap()
                self._check_heartbeats()
                self._when_ready()
                while self.queue and not self.stopping:
                    self._handle(self.queue.pop(0))
        finally:
            systemd.notify("STOPPING=1")
            self._stop_children()
            self.endpoints.close()
            if self.control_path:
                with contextlib.suppress(OSError):
                    os.unlink(self.control_path)
            if self.app_metrics is not None:
                self.app_metrics.close()
        logger.info("Master exiting (pid %d)", os.getpid())
        return self.exit_code

    def _sleep(self, timeout: float) -> None:
        endpoints = self.endpoints
        if endpoints.clients:
            timeout = min(timeout, 0.1)  # their deadlines
        try:
            readable, writable, _ = select.select(
                [self._wake_r, *endpoints.readers()], endpoints.writers(), [], timeout)
        except InterruptedError:
            return
        if self._wake_r in readable:
            readable.remove(self._wake_r)
            with contextlib.suppress(BlockingIOError):  # drained
                while os.read(self._wake_r, 64):
                    pass
        endpoints.handle(readable, writable)

    # metrics and control ----------------------------------------------------------------------

    def _open_endpoints(self) -> None:
        config = self.config
        self.control_path = config.control_path()
        if config.metrics_bind:
            sock = open_listener(config.metrics_bind, 64)
            self.endpoints.add(Endpoint(sock, http_complete, http_answer(self._route_metrics)))
            logger.info("Metrics at: %s/metrics", describe(sock))
        if self.control_path:
            sock = open_listener(f"unix:{self.control_path}", 16)
            os.chmod(self.control_path, 0o600)
            self.endpoints.add(Endpoint(sock, control.complete, control.answerer(self), owner_only=True))
            logger.info("Control socket at: %s (tricorn ctl)", self.control_path)

    def _route_metrics(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str, str]:
        plain = "text/plain; charset=utf-8"
        if path != "/metrics":
            return 404, plain, "Not found: the metrics are at /metrics\n"
        if method not in ("GET", "HEAD"):
            return 405, plain, "Method not allowed: use GET\n"
        body, kind = metrics.exposition(self.worker_metrics(), self.totals, self.app_metrics, headers)
        return 200, kind, body

    def worker_metrics(self) -> list[metrics.Worker]:
        found = []
        for pid, child in self.children.items():
            words = self.scoreboard.snapshot(child.slot)
            if words[sb.PID] and child.aborted_at == 0:  # pid written: the worker has beaten once
                found.append(metrics.Worker(child.slot + 1, pid, words, rss_bytes(pid)))
        return found

    def status(self) -> dict[str, object]:
        """`tricorn ctl status`."""
        now = time.monotonic()
        workers = []
        for pid, child in sorted(self.children.items(), key=lambda item: item[1].slot):
            words = self.scoreboard.snapshot(child.slot)
            state = ("aborted" if child.aborted_at else "retiring" if child.retiring or child.generation == -1
                     else "ready" if words[sb.PID] else "booting")
            workers.append({
                "worker": child.slot + 1, "pid": pid, "state": state, "age": round(now - child.started, 3),
                "requests": words[sb.REQUESTS], "in_flight": words[sb.IN_FLIGHT], "rss": rss_bytes(pid),
                "heartbeat_age": round(now - words[sb.BEAT] / 1e9, 3), "lag_ms": words[sb.LAG] / 1e6,
            })
        return {"master": os.getpid(), "app": self.config.app, "target": self.target,
                "generation": self.generation, "workers": workers}

    def set_workers(self, count: int) -> None:
        """`tricorn ctl workers N`: as many TTIN or TTOU as it takes."""
        while self.target < count:
            self._handle(signal.SIGTTIN)
        while self.target > count:
            self._handle(signal.SIGTTOU)

    def signal_self(self, signum: int) -> None:
        """A control command that a signal would do (reload, stop): queued like that signal."""
        self._enqueue(signum, None)

    def stacks(self, number: int | None) -> dict[int, str]:
        """Each worker's (or worker `number`'s) threads' stacks, from the worker's watchdog thread:
        every worker is asked at once, and answers within one wait of STACKS_WAIT."""
        asked = {}
        for pid, child in sorted(self.children.items(), key=lambda item: item[1].slot):
            if number is None or child.slot + 1 == number:
                self.asked += 1
                self.scoreboard.ask_stacks(child.slot, self.asked)
                asked[pid] = self.asked
        deadline = time.monotonic() + STACKS_WAIT
        found = {}
        for pid, question in asked.items():
            child = self.children[pid]
            text = child.mailbox.wait(question, max(0.0, deadline - time.monotonic()))
            found[child.slot + 1] = text if text is not None else (
                f"(worker {pid} did not answer in {STACKS_WAIT:g}s: still booting, or every thread holds the "
                "GIL; SIGABRT logs its stacks, and kills it)")
        return found

    def _handle(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return
        if signum == signal.SIGHUP:
            self._reload()
        elif signum == signal.SIGUSR1:
            logger.info("SIGUSR1: reopening log files")
            self.reopen_logs()
            for pid in self.children:
                self._kill(pid, signal.SIGUSR1)
        elif signum == signal.SIGTTIN:
            self.target += 1
            logger.info("SIGTTIN: %d workers", self.target)
        elif signum == signal.SIGTTOU:
            current = self._current()
            if self.target > 1 and current:
                self.target -= 1
                oldest = min(current, key=lambda pid: self.children[pid].started)
                self.children[oldest].generation = -1  # no longer counted: not replaced when it exits
                logger.info("SIGTTOU: %d workers; stopping worker %d", self.target, oldest)
                self._kill(oldest, signal.SIGTERM)
        else:
            self.stopping = True
            self.stop_signal = signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT
            logger.info("%s: stopping", signal.Signals(signum).name)

    # children ---------------------------------------------------------------------------------

    def _current(self) -> list[int]:
        """The workers that count toward --workers: this generation's, not retiring."""
        return [pid for pid, child in self.children.items() if child.generation == self.generation]

    def _reload(self) -> None:
        if self.reload is not None:
            try:
                self.config, self.serve = self.reload()
            except Exception as exc:  # a broken config file must not take the running server down
                logger.error("SIGHUP: keeping the running workers, the new configuration failed: %s", exc)
                return
            self.target = self.config.worker_count()[0]
            self.sized = False
        for pid in self._current():
            self.children[pid].retiring = True
            self.children[pid].replaced = "reload"
        self.generation += 1
        self.announced = False
        systemd.notify("RELOADING=1")
        logger.info("SIGHUP: starting generation %d of %d workers", self.generation, self.target)

    def _when_ready(self) -> None:
        """Size the worker count by the first READY worker's memory; once the whole generation is
        READY, tell systemd and drain the workers it replaces."""
        current = self._current()
        ready = [pid for pid in current if self.scoreboard.ready(self.children[pid].slot)]
        if ready and not self.sized:
            self.sized = True
            self._fit_memory(ready[0])
        if len(ready) < self.target:
            return
        if not self.announced:
            self.announced = True
            systemd.notify("READY=1")
        for pid, child in self.children.items():
            if child.retiring:
                logger.info("Generation %d is ready: draining old worker %d", self.generation, pid)
                child.retiring = False
                self._kill(pid, signal.SIGTERM)

    def _fit_memory(self, pid: int) -> None:
        rss = rss_bytes(pid)
        if not rss:
            return
        limit, why = memory_limit()
        fit = max(1, int(limit * MEMORY_SHARE // rss))
        logger.debug("A worker uses %d MiB; the memory limit is %d MiB (%s)", rss // 2**20, limit // 2**20, why)
        mib = 2**20
        cap = self.config.max_worker_memory
        if cap and cap < rss * 1.1:
            logger.warning("--max-worker-memory %d MiB is at or below a fresh worker's RSS (%d MiB): workers "
                           "will be replaced again and again; raise it", cap // mib, rss // mib)
        if self.target <= fit:
            return
        if self.config.workers is not None:
            logger.warning("%d workers of %d MiB each do not fit in %d%% of the memory limit (%d MiB, %s); "
                           "at most %d would", self.target, rss // mib, MEMORY_SHARE * 100, limit // mib, why, fit)
            return
        logger.warning("Lowering workers from %d to %d: a worker uses %d MiB and %d%% of the memory limit "
                       "(%d MiB, %s) holds %d; set --workers to choose", self.target, fit, rss // mib,
                       MEMORY_SHARE * 100, limit // mib, why, fit)
        self.target = fit

    def _spawn_missing(self) -> None:
        """Start workers up to the count. The first of a generation boots alone: once it is READY its
        memory sizes the count, and an app that cannot load fails once instead of in every worker."""
        if time.monotonic() < self.respawn_at:
            return
        target = self.target if self.sized else 1
        for _ in range(target - len(self._current())):
            if self.stopping:
                return
            self._spawn()

    def _spawn(self) -> None:
        parent = os.getpid()
        taken = {child.slot for child in self.children.values()}
        slot = next(i for i in range(self.scoreboard.slots) if i not in taken)
        self.scoreboard.claim(slot, 0)
        # Until the child has dropped the master's handlers, a signal sent to it would only be
        # queued for a master loop it never runs: block them across the fork, and let the child
        # take any pending one with the default action once its handlers are reset.
        mailbox = Mailbox()
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        pid = os.fork()
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
            self.children[pid] = Child(slot, time.monotonic(), mailbox, self.generation)
            logger.info("Booting worker with pid %d", pid)
            return
        code = 1
        try:
            for signum in SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the worker's loop handles it
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
            os.close(self._wake_r)
            os.close(self._wake_w)
            os.environ.pop("NOTIFY_SOCKET", None)  # only the master speaks to systemd
            self.endpoints.close()  # the master's alone
            code = self.serve(slot + 1, parent, Link(self.scoreboard, mailbox, slot, os.getpid()))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            logger.exception("Exception in worker process")
            code = EXIT_BOOT_FAILURE
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _reap(self, block: bool = False) -> None:
        while self.children or not block:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            child.mailbox.close()
            self._account_exit(pid, child, status)
            if child.aborted_at:
                logger.critical("WORKER TIMEOUT (pid %d): stack above", pid)
            else:
                self._report(pid, status)
            self._count_early_death(time.monotonic() - child.started, status, bool(child.aborted_at))

    def _account_exit(self, pid: int, child: Child, status: int) -> None:
        """Keep an exited worker's counters, count why it was replaced, and tidy the app's metrics."""
        words = self.scoreboard.snapshot(child.slot)
        if words[sb.PID] == pid:
            self.totals.fold(words)
        reason = "timeout" if child.aborted_at else child.replaced
        if not reason and not self.stopping and child.generation == self.generation:
            reason = "crash"  # it died unasked: a successor takes its place
        if reason:
            self.totals.restarts[reason] += 1
        if self.app_metrics is not None:
            try:
                self.app_metrics.worker_exited(pid)
            except Exception:
                logger.exception("Could not fold worker %d's prometheus_client files", pid)

    def _count_early_death(self, lived: float, status: int, aborted: bool) -> None:
        clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if self.stopping or clean or aborted or lived >= CRASH_WINDOW:
            if lived >= CRASH_WINDOW:
                self.early_deaths = 0
            return
        self.early_deaths += 1
        if self.early_deaths >= CRASH_LIMIT:
            logger.error("Workers died %d times in a row right after starting: stopping the master "
                         "(the log above shows why)", self.early_deaths)
            self.exit_code = EXIT_BOOT_FAILURE
            self.stopping = True
            return
        delay = min(2.0, 0.1 * 2 ** (self.early_deaths - 1))
        self.respawn_at = time.monotonic() + delay
        logger.warning("Worker died %.1fs after starting (%d in a row): next start in %.1fs",
                       lived, self.early_deaths, delay)

    def _check_heartbeats(self) -> None:
        """A worker silent for --timeout gets SIGABRT (it logs every thread's stack), then SIGKILL."""
        now = time.monotonic()
        for pid, child in list(self.children.items()):
            if child.aborted_at:
                if now - child.aborted_at >= ABORT_GRACE:
                    logger.warning("Worker (pid %d) outlived SIGABRT: killing it", pid)
                    self._kill(pid, signal.SIGKILL)
                    child.aborted_at = float("inf")
                continue
            reason = self.scoreboard.retire_reason(child.slot) if child.generation == self.generation else 0
            if reason:
                child.replaced = RETIRE_REASONS[reason] if reason < len(RETIRE_REASONS) else "crash"
                logger.info("Worker (pid %d) asks to be replaced (%s): starting its successor", pid, child.replaced)
                child.generation = -1  # no longer counted, so a successor is spawned
                child.retiring = True  # and it drains once the successor is READY
            silent = now - self.scoreboard.read(child.slot)[1]
            if silent > self.config.timeout:
                logger.critical("Worker (pid %d) has not answered for %.1fs (--timeout %gs): dumping its stacks",
                                pid, silent, self.config.timeout)
                self._kill(pid, signal.SIGABRT)
                child.aborted_at = now

    def _report(self, pid: int, status: int) -> None:
        if os.WIFSIGNALED(status):
            name = signal.Signals(os.WTERMSIG(status)).name
            hint = " (perhaps out of memory?)" if os.WTERMSIG(status) == signal.SIGKILL else ""
            logger.error("Worker (pid %d) was killed by %s%s", pid, name, hint)
            return
        code = os.WEXITSTATUS(status)
        if code in HALTING_EXITS and not self.stopping:
            reason = "failed to boot" if code == EXIT_BOOT_FAILURE else "could not load the app"
            logger.error("Worker (pid %d) %s (exit %d): stopping the master", pid, reason, code)
            self.exit_code = code
            self.stopping = True
        elif code and not self.stopping:
            logger.error("Worker (pid %d) exited with code %d", pid, code)
        else:
            logger.info("Worker (pid %d) exited", pid)

    def _kill(self, pid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone: _reap will hear of it
            os.kill(pid, signum)

    def _stop_children(self) -> None:
        for pid in list(self.children):
            self._kill(pid, self.stop_signal)
        for sock in self.listeners:
            sock.close()  # workers keep their copies; new connections go nowhere once they exit
        deadline = time.monotonic() + self.config.graceful_timeout + 1.0
        resend = time.monotonic() + 1.0
        while self.children and time.monotonic() < deadline:
            self._sleep(0.05)
            self._reap()
            if time.monotonic() >= resend:  # harmless to a draining worker; rescues a lost signal
                for pid in list(self.children):
                    self._kill(pid, self.stop_signal)
                resend += 1.0
        for pid in list(self.children):
            logger.warning("Worker (pid %d) did not stop in time: killing it", pid)
            self._kill(pid, signal.SIGKILL)
        self._reap(block=True)
