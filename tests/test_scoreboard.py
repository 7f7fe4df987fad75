"""The scoreboard under concurrent use: a worker beating while the master reads never shows a
half-written slot (a heartbeat of 0 once made the master kill a healthy worker)."""

from __future__ import annotations

import multiprocessing
import os
import time

from tricorn.master import scoreboard as sb
from tricorn.master.scoreboard import Scoreboard
from tricorn.stats import BUCKETS, RETIRE_REASONS, WorkerStats

SECONDS = 2.0


def _beat_until_stopped(board: Scoreboard, slot: int, stop: multiprocessing.synchronize.Event) -> None:
    me, n = os.getpid(), 0
    stats = WorkerStats()
    while not stop.is_set():
        # Every field read is derived from n, so a slot mixed from two beats is visible to the reader.
        n += 1
        stats.requests = stats.in_flight = stats.bytes_sent = n
        stats.lag = n / 1000
        stats.loop_lag.counts[-1] = n
        board.beat(slot, me, stats)


def _torn_reads(board: Scoreboard, slot: int) -> tuple[int, int]:
    """Read `slot` for SECONDS while another process beats it."""
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    beater = context.Process(target=_beat_until_stopped, args=(board, slot, stop))
    beater.start()
    reads = torn = 0
    try:
        while not board.ready(slot):  # the first beat: the beater is running
            pass
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            for _ in range(200):
                reads += 1
                pid, beat, requests, in_flight = board.read(slot)
                words = board.snapshot(slot)
                ok = pid == beater.pid and 0 < beat <= time.monotonic() and requests == in_flight \
                    and words[sb.BYTES_SENT] == words[sb.REQUESTS] == words[sb.LOOP_LAG + len(BUCKETS)] \
                    and abs(words[sb.LAG] / 1e6 - words[sb.REQUESTS]) < 1e-3
                torn += not ok
    finally:
        stop.set()
        beater.join(10)
    return reads, torn


def test_a_slot_read_while_its_worker_beats_is_never_half_written() -> None:
    board = Scoreboard(slots=4)
    board.claim(2, 0)
    reads, torn = _torn_reads(board, 2)
    assert reads > 10_000
    assert torn == 0, f"{torn} of {reads} reads saw a half-written slot"


def test_a_claimed_slot_is_not_ready_until_its_worker_beats() -> None:
    board = Scoreboard(slots=2)
    board.claim(0, 0)
    assert not board.ready(0)
    pid, beat, requests, in_flight = board.read(0)
    assert (pid, requests, in_flight) == (0, 0, 0) and 0 < beat <= time.monotonic()
    stats = WorkerStats()
    stats.requests, stats.in_flight, stats.retire = 5, 2, RETIRE_REASONS.index("memory")
    stats.finished(503, 10, 0.003, 0.0005)
    board.beat(0, 1234, stats)
    assert board.ready(0) and RETIRE_REASONS[board.retire_reason(0)] == "memory"
    assert board.read(0)[::2] == (1234, 5)
    words = board.snapshot(0)
    assert words[sb.STATUS + 4] == 1 and words[sb.BYTES_SENT] == 10
    assert words[sb.DURATION + 2] == 1 and words[sb.QUEUE_WAIT] == 1  # 2.5 ms < 3 ms <= 5 ms; 0.5 ms <= 1 ms


def test_a_new_worker_starts_from_zero_and_its_stacks_word_is_the_masters() -> None:
    board = Scoreboard(slots=1)
    stats = WorkerStats()
    stats.requests = 7
    board.beat(0, 99, stats)
    board.ask_stacks(0, 3)
    board.claim(0, 0)
    assert not any(board.snapshot(0)[sb.REQUESTS:sb.ASKED]) and board.stacks_asked(0) == 3
