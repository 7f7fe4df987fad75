"""What a worker counts and reports to its master: the numbers behind `/metrics` and `tricorn ctl`.

A worker's event loop thread keeps these as plain Python numbers (a request costs a few
increments) and copies them into its scoreboard slot on each heartbeat (master/scoreboard.py);
the master adds up the slots, and folds a worker's counters into its own totals when the worker
exits, so totals never go backwards. Only the loop thread writes, except `loop_blocks` (the
watchdog thread's, server/watchdog.py): one writer per number.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Protocol

# Histogram bucket upper bounds, seconds: the same for every histogram, so the slot layout is fixed.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FIRST_BUCKET = BUCKETS[0]
ROW = len(BUCKETS) + 1  # a count per bucket, and one for +Inf
HISTOGRAM_WORDS = ROW + 1  # the counts and the sum in nanoseconds
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Why a worker asks to be replaced: its scoreboard RETIRE word is an index in this tuple.
RETIRE_REASONS = ("", "max_requests", "memory", "lifetime", "timeout")
INTERFACES = ("", "asgi", "wsgi")  # the scoreboard's INTERFACE word is an index in this tuple


class Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * ROW
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def words(self) -> list[int]:
        return [*self.counts, round(self.total * 1e9)]


class WorkerStats:
    """One worker's counters (monotonic) and gauges (as of the last heartbeat).

    `finished` runs for every response, so it does as little as it can: one count per response in
    `responses`, by status class (the status // 100, 0 to 9) and duration bucket, from which the
    heartbeat derives both the count per class and the duration histogram; and the queue wait
    histogram as flat fields."""

    __slots__ = (
        "bytes_sent", "connections", "duration_total", "in_flight", "interface", "lag", "loop_blocks", "loop_lag",
        "queue_counts", "queue_total", "refusals", "request_timeouts", "requests", "responses", "retire", "threads",
        "threads_busy", "websockets",
    )

    def __init__(self) -> None:
        self.interface = 0  # an index in INTERFACES
        self.requests = 0
        self.in_flight = 0
        self.retire = 0  # an index in RETIRE_REASONS; 0: keep serving
        self.lag = 0.0  # the most the heartbeat timer fired late since the previous beat
        self.connections = 0
        self.websockets = 0
        self.threads = 0
        self.threads_busy = 0
        self.bytes_sent = 0
        self.loop_blocks = 0
        self.request_timeouts = 0
        self.responses = [0] * (10 * ROW)  # by status // 100 and duration bucket (head complete → response sent)
        self.duration_total = 0.0
        self.refusals = [0] * 10  # by status // 100: requests answered before the app saw them
        self.queue_counts = [0] * ROW  # request head complete → the app starts on it
        self.queue_total = 0.0
        self.loop_lag = Histogram()  # how late the loop ran a timer that was due

    def finished(self, status: int, bytes_sent: int, duration: float, queue_wait: float) -> None:
        """A response ended (the loop thread), with --metrics-bind on; most requests take the
        first bucket's fast path."""
        self.responses[status // 100 * ROW + (0 if duration <= FIRST_BUCKET else bisect_left(BUCKETS, duration))] += 1
        self.duration_total += duration
        self.bytes_sent += bytes_sent
        if queue_wait >= 0.0:
            self.queue_counts[0 if queue_wait <= FIRST_BUCKET else bisect_left(BUCKETS, queue_wait)] += 1
            self.queue_total += queue_wait

    def refused(self, status: int) -> None:
        """A request answered with an error before the app saw it (the loop thread)."""
        self.refusals[status // 100] += 1  # our own error statuses: 4xx and 5xx

    def status_counts(self) -> list[int]:
        """Responses and refusals per status class, 1xx to 5xx (statuses 600 to 999 have none)."""
        responses = self.responses
        return [sum(responses[row * ROW:(row + 1) * ROW]) + self.refusals[row] for row in range(1, 6)]

    def histogram_words(self) -> list[int]:
        """The three histograms as the scoreboard keeps them: counts, then the sum in nanoseconds."""
        responses = self.responses
        durations = [sum(responses[bucket::ROW]) for bucket in range(ROW)]
        return [*durations, round(self.duration_total * 1e9), *self.queue_counts, round(self.queue_total * 1e9),
                *self.loop_lag.words()]


class MasterLink(Protocol):
    """A worker's line to its master: the heartbeat, and whether the master asks for its stacks."""

    def beat(self, stats: WorkerStats) -> None: ...
    def stacks_asked(self) -> int: ...  # a number the master raises each time it asks
    def stacks_answer(self, asked: int, text: str) -> None: ...
