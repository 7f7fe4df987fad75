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

Not yet here (issue 3): USR1, --preload, --user/--group, --umask, process titles, systemd sockets.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable

from .scoreboard import Scoreboard
from .worker import EXIT_BOOT_FAILURE

logger = logging.getLogger("tricorn.error")

EXIT_APP_LOAD_FAILURE = 4
HALTING_EXITS = (EXIT_BOOT_FAILURE, EXIT_APP_LOAD_FAILURE)
ABORT_GRACE = 1.0  # seconds between SIGABRT (stacks to the log) and SIGKILL for a hung worker
# Crash-loop guard: a worker dying within CRASH_WINDOW of its start is an early death; each one in a
# row doubles the wait before the next start (from 0.1 s, at most 2 s); CRASH_LIMIT in a row stop
# the master, instead of burning CPU on a worker that cannot stay up.
CRASH_WINDOW = 5.0
CRASH_LIMIT = 6
Heartbeat = Callable[[int, int, bool], None]
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU,
           signal.SIGCHLD)


class Supervisor:
    def __init__(
        self, workers: int, timeout: float, graceful_timeout: float, listeners: list[socket.socket],
        serve: Callable[[int, Heartbeat], int],
        reload: Callable[[], tuple[int, Callable[[int, Heartbeat], int]]] | None = None,
    ) -> None:
        """`serve(parent_pid, heartbeat)` runs in each forked worker and returns its exit code;
        `reload()` re-reads the configuration for HUP and returns the worker count and a new `serve`."""
        self.reload = reload
        self.early_deaths = 0
        self.respawn_at = 0.0
        self.generation = 0
        self.generations: dict[int, int] = {}  # pid → generation
        self.retiring: set[int] = set()  # the old generation, told to drain once the new one is READY
        self.target = workers
        self.timeout = timeout
        self.graceful_timeout = graceful_timeout
        self.scoreboard = Scoreboard()
        self.slots: dict[int, int] = {}  # pid → scoreboard slot
        self.aborted: dict[int, float] = {}  # pid → when it was sent SIGABRT
        self.listeners = listeners
        self.serve = serve
        self.children: dict[int, float] = {}  # pid → start time
        self.queue: list[int] = []
        self.exit_code = 0
        self.stopping = False
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
        logger.info("Master starting (pid %d) with %d workers", os.getpid(), self.target)
        try:
            while not self.stopping:
                self._spawn_missing()
                self._sleep(max(0.01, min(1.0, self.respawn_at - time.monotonic())))
                self._reap()
                self._check_heartbeats()
                self._retire_when_ready()
                while self.queue and not self.stopping:
                    self._handle(self.queue.pop(0))
        finally:
            self._stop_children()
        logger.info("Master exiting (pid %d)", os.getpid())
        return self.exit_code

    def _sleep(self, timeout: float) -> None:
        try:
            ready, _, _ = select.select([self._wake_r], [], [], timeout)
            if ready:
                while os.read(self._wake_r, 64):
                    pass
        except (OSError, InterruptedError) as exc:
            if getattr(exc, "errno", None) not in (errno.EAGAIN, errno.EINTR, None):
                raise

    def _handle(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return
        if signum == signal.SIGHUP:
            self._reload()
        elif signum == signal.SIGTTIN:
            self.target += 1
            logger.info("SIGTTIN: %d workers", self.target)
        elif signum == signal.SIGTTOU:
            current = [pid for pid, generation in self.generations.items() if generation == self.generation]
            if self.target > 1 and current:
                self.target -= 1
                oldest = min(current, key=self.children.__getitem__)
                self.generations[oldest] = -1  # no longer counted: not replaced when it exits
                logger.info("SIGTTOU: %d workers; stopping worker %d", self.target, oldest)
                self._kill(oldest, signal.SIGTERM)
        else:
            self.stopping = True
            self._stop_signal = signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT
            logger.info("%s: stopping", signal.Signals(signum).name)

    # children ---------------------------------------------------------------------------------

    def _reload(self) -> None:
        if self.reload is not None:
            try:
                self.target, self.serve = self.reload()
            except Exception as exc:  # a broken config file must not take the running server down
                logger.error("SIGHUP: keeping the running workers, the new configuration failed: %s", exc)
                return
        self.retiring |= {pid for pid, generation in self.generations.items() if generation == self.generation}
        self.generation += 1
        logger.info("SIGHUP: starting generation %d of %d workers", self.generation, self.target)

    def _retire_when_ready(self) -> None:
        if not self.retiring:
            return
        current = [pid for pid, generation in self.generations.items() if generation == self.generation]
        if len(current) >= self.target and all(self.scoreboard.ready(self.slots[pid]) for pid in current):
            for pid in self.retiring:
                logger.info("Generation %d is ready: draining old worker %d", self.generation, pid)
                self._kill(pid, signal.SIGTERM)
            self.retiring.clear()

    def _spawn_missing(self) -> None:
        if time.monotonic() < self.respawn_at:
            return
        current = sum(1 for generation in self.generations.values() if generation == self.generation)
        for _ in range(self.target - current):
            if self.stopping:
                return
            self._spawn()

    def _spawn(self) -> None:
        parent = os.getpid()
        slot = min(set(range(self.scoreboard.slots)) - set(self.slots.values()))
        self.scoreboard.claim(slot, 0)
        # Until the child has dropped the master's handlers, a signal sent to it would only be
        # queued for a master loop it never runs: block them across the fork, and let the child
        # take any pending one with the default action once its handlers are reset.
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        pid = os.fork()
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
            self.children[pid] = time.monotonic()
            self.slots[pid] = slot
            self.generations[pid] = self.generation
            logger.info("Booting worker with pid %d", pid)
            return
        code = 1
        try:
            for signum in SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
            os.close(self._wake_r)
            os.close(self._wake_w)
            scoreboard, me = self.scoreboard, os.getpid()

            def heartbeat(requests: int, in_flight: int, retire: bool) -> None:
                scoreboard.beat(slot, me, requests, in_flight, retire)

            code = self.serve(parent, heartbeat)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            logger.exception("Exception in worker process")
            code = EXIT_BOOT_FAILURE
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            aborted = pid in self.aborted
            lived = time.monotonic() - self.children.get(pid, 0.0)
            self._forget(pid)
            self._count_early_death(lived, status, aborted)
            if aborted:
                logger.critical("WORKER TIMEOUT (pid %d): stack above", pid)
            else:
                self._report(pid, status)

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

    def _forget(self, pid: int) -> None:
        self.children.pop(pid, None)
        self.slots.pop(pid, None)
        self.aborted.pop(pid, None)
        self.generations.pop(pid, None)
        self.retiring.discard(pid)

    def _check_heartbeats(self) -> None:
        """A worker silent for --timeout gets SIGABRT (it logs every thread's stack), then SIGKILL."""
        now = time.monotonic()
        for pid, slot in list(self.slots.items()):
            if pid in self.aborted:
                if now - self.aborted[pid] >= ABORT_GRACE:
                    logger.warning("Worker (pid %d) outlived SIGABRT: killing it", pid)
                    self._kill(pid, signal.SIGKILL)
                    self.aborted[pid] = float("inf")
                continue
            if self.generations.get(pid) == self.generation and self.scoreboard.wants_retirement(slot):
                logger.info("Worker (pid %d) asks to retire (--max-requests, --max-worker-memory or "
                            "--max-worker-lifetime): starting its successor", pid)
                self.generations[pid] = -1  # no longer counted, so a successor is spawned
                self.retiring.add(pid)  # and it drains once the successor is READY
            silent = now - self.scoreboard.read(slot)[1]
            if silent > self.timeout:
                logger.critical("Worker (pid %d) has not answered for %.1fs (--timeout %gs): dumping its stacks",
                                pid, silent, self.timeout)
                self._kill(pid, signal.SIGABRT)
                self.aborted[pid] = now

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
            self._stop_signal = signal.SIGTERM
        elif code and not self.stopping:
            logger.error("Worker (pid %d) exited with code %d", pid, code)
        else:
            logger.info("Worker (pid %d) exited", pid)

    def _kill(self, pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            self._forget(pid)

    def _stop_children(self) -> None:
        signum = getattr(self, "_stop_signal", signal.SIGTERM)
        for pid in list(self.children):
            self._kill(pid, signum)
        for sock in self.listeners:
            sock.close()  # workers keep their copies; new connections go nowhere once they exit
        deadline = time.monotonic() + self.graceful_timeout + 1.0
        resend = time.monotonic() + 1.0
        while self.children and time.monotonic() < deadline:
            self._sleep(0.05)
            self._reap()
            if time.monotonic() >= resend:  # harmless to a draining worker; rescues a lost signal
                for pid in list(self.children):
                    self._kill(pid, signum)
                resend += 1.0
        for pid in list(self.children):
            logger.warning("Worker (pid %d) did not stop in time: killing it", pid)
            self._kill(pid, signal.SIGKILL)
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self._forget(pid)
            self._report(pid, status)
