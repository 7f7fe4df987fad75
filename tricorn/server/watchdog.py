"""A thread beside each worker's event loop: it sees what the loop cannot see itself.

The loop runs a short timer (`_tick`, with --block-warn or --metrics-bind on) that notes when it
ran; how late each tick came is the loop lag histogram. The watchdog thread wakes on the same period and
  - when the loop has not run a due tick for --block-warn, logs one WARNING with the loop thread's
    Python stack at that moment and the request it serves (when a frame on that stack holds one),
    counts it, and once the loop runs again logs how long the block lasted;
  - answers the master's request for every thread's stack (`tricorn ctl stacks`), which works
    while the loop is blocked, since this thread needs nothing from the loop.
It never stops anything: a loop blocked past --timeout is the master's to kill.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType

from ..stats import MasterLink
from .asgi import HttpCycle
from .h1 import Request
from .state import ServerState

logger = logging.getLogger("tricorn.error")

MAX_PERIOD = 0.05  # seconds between ticks; shorter for a short --block-warn
MIN_PERIOD = 0.005


class Watchdog:
    def __init__(self, state: ServerState, block_warn: float, link: MasterLink | None,
                 thread_requests: Callable[[], dict[int, str]] = dict) -> None:
        self.state = state
        self.loop = state.loop
        self.block_warn = block_warn
        self.link = link
        self.thread_requests = thread_requests  # thread id → the request it runs (WSGI pool threads)
        self.period = min(MAX_PERIOD, max(MIN_PERIOD, block_warn / 4)) if block_warn else MAX_PERIOD
        self.due = 0.0  # when the loop's next tick is due (written by the loop thread only)
        self._loop_thread = 0
        self._blocked_since = 0.0  # the due time of the tick that did not come
        self._answered = link.stacks_asked() if link is not None else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="tricorn-watchdog", daemon=True)
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """From the loop thread."""
        self._loop_thread = threading.get_ident()
        if self.block_warn or self.state.metrics:  # the ticks: what blocks are seen by, and the lag histogram
            self.due = time.monotonic() + self.period
            self._handle = self.loop.call_later(self.period, self._tick)
        if self.block_warn or self.link is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()

    def _tick(self) -> None:
        now = time.monotonic()
        self.state.stats.loop_lag.observe(max(0.0, now - self.due))
        self.due = now + self.period
        self._handle = self.loop.call_later(self.period, self._tick)

    # the watchdog thread -----------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.wait(self.period):
            try:
                if self.link is not None:
                    self._answer_stacks(self.link)
                if self.block_warn:
                    self._check_block()
            except Exception:  # a bug here must not end the watching
                logger.exception("watchdog")

    def _check_block(self) -> None:
        due = self.due
        if self._blocked_since:
            if due > self._blocked_since:  # the loop ran the late tick
                lasted = due - self.period - self._blocked_since
                logger.info("Event loop ran again after a block of %.3fs", lasted)
                self._blocked_since = 0.0
            return
        late = time.monotonic() - due
        if late < self.block_warn:
            return
        self._blocked_since = due
        self.state.stats.loop_blocks += 1
        frame = sys._current_frames().get(self._loop_thread)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
        where = _request_on(frame) or self._request_of_current_task()
        logger.warning("Event loop blocked for %.3fs so far (--block-warn %gs)%s; its stack:\n%s",
                       late, self.block_warn, f", serving {where}" if where else "", stack.rstrip("\n"))

    def _answer_stacks(self, link: MasterLink) -> None:
        asked = link.stacks_asked()
        if asked == self._answered:
            return
        self._answered = asked
        link.stacks_answer(asked, self.stacks())

    def stacks(self) -> str:
        """Every thread's stack, each headed by its name and, where known, the request it serves."""
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        requests = self.thread_requests()
        parts = []
        for ident, frame in sorted(sys._current_frames().items()):
            if ident == threading.get_ident():
                continue
            label = names.get(ident, str(ident))
            if ident == self._loop_thread:
                label += " (event loop)"
                where = _request_on(frame) or self._request_of_current_task()
            else:
                where = requests.get(ident, "")
            if where:
                label += f", serving {where}"
            parts.append(f"Thread {label}:\n" + "".join(traceback.format_stack(frame)))
        return "\n".join(parts)

    def _request_of_current_task(self) -> str:
        """The request whose task the loop runs now: found from the task when no frame on the
        stack holds it (in the mypyc build the cycle's frames are compiled away)."""
        task = asyncio.current_task(self.loop)
        if task is not None:
            for conn in list(self.state.connections):
                cycle = getattr(conn, "cycle", None)
                if isinstance(cycle, HttpCycle) and cycle.task is task:
                    return cycle.request.describe()
        return ""


def _request_on(frame: FrameType | None) -> str:
    """The request a frame on this stack serves: the first `self` with a `request` (a cycle, a
    connection); "" when none does."""
    depth = 0
    while frame is not None and depth < 200:
        owner = frame.f_locals.get("self")
        request = getattr(owner, "request", None)
        if isinstance(request, Request):
            return request.describe()
        frame = frame.f_back
        depth += 1
    return ""
