"""Requests running long: --slow-request logs a request's stack once; --request-timeout answers
504 and gives up on it. The worker's sweep calls `check`.

ASGI: the stack is the app task's (where it awaits); at the deadline the task is cancelled, so
the app sees CancelledError. WSGI: the stack is the thread's; Python cannot stop a thread, so the
request is abandoned: the client gets its 504, the thread stands aside and a new one takes its
place (wsgi.ThreadPool.abandon), and what the app still does is dropped.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from .asgi import HttpCycle
from .state import ServerState
from .wsgi import ThreadPool, WSGICycle

logger = logging.getLogger("tricorn.error")


class RequestWatch:
    def __init__(self, state: ServerState, slow: float, timeout: float, pool: ThreadPool | None,
                 too_many_abandoned: Callable[[], None]) -> None:
        self.state = state
        self.slow = slow
        self.timeout = timeout
        self.pool = pool
        self.too_many_abandoned = too_many_abandoned  # more than half the WSGI threads abandoned
        self._logged: set[object] = set()  # the requests whose slow stack is logged

    @property
    def active(self) -> bool:
        return bool(self.slow or self.timeout)

    def check(self) -> None:
        if self.pool is not None:
            self._check_threads(self.pool)
        else:
            self._check_tasks()

    def _check_tasks(self) -> None:
        now = time.monotonic()
        running = set()
        for conn in list(self.state.connections):
            cycle = getattr(conn, "cycle", None)
            if type(cycle) is not HttpCycle or cycle.complete or cycle.task is None:
                continue
            running.add(cycle)
            age = now - conn.started_at  # type: ignore[attr-defined]
            if self.timeout and age >= self.timeout:
                logger.error("Request %s still running after %.1fs (--request-timeout %gs): cancelled, %s. %s",
                             cycle.request.describe(), age, self.timeout,
                             "answered 504" if not cycle.head_sent else "connection closed",
                             _task_stack(cycle))
                self.state.stats.request_timeouts += 1
                cycle.expire()
            elif self.slow and age >= self.slow and cycle not in self._logged:
                self._logged.add(cycle)
                logger.warning("Slow request %s: running for %.1fs (--slow-request %gs). %s",
                               cycle.request.describe(), age, self.slow, _task_stack(cycle))
        self._logged &= running

    def _check_threads(self, pool: ThreadPool) -> None:
        if self.timeout:
            for job, seconds, stack in pool.overdue(self.timeout):
                if not isinstance(job, WSGICycle):
                    continue
                logger.error("WSGI request %s still running after %.1fs (--request-timeout %gs): %s; its thread "
                             "is abandoned. %s", job.describe(), seconds, self.timeout,
                             "answered 504" if not job.head_sent else "connection closed", stack.rstrip("\n"))
                self.state.stats.request_timeouts += 1
                pool.abandon(job)
                job.expire()
            if len(pool.abandoned) * 2 > pool.size:
                self.too_many_abandoned()
        if self.slow:
            running = set(pool.current)
            for job, seconds, stack in pool.overdue(self.slow):
                if job not in self._logged:
                    self._logged.add(job)
                    logger.warning("Slow request %s: running for %.1fs (--slow-request %gs). %s",
                                   job.describe(), seconds, self.slow, stack.rstrip("\n"))
            self._logged &= running


def _task_stack(cycle: HttpCycle) -> str:
    """Where the app's task waits: each coroutine down the chain of awaits from the app's own,
    outermost first."""
    frames: list[tuple[FrameType, int]] = []
    awaited: Any = cycle.app_call
    while awaited is not None and len(frames) < 200:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break
        frames.append((frame, frame.f_lineno))
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return "Its task's stack (most recent call last):\n" + "".join(
        traceback.StackSummary.extract(iter(frames)).format()).rstrip("\n")
