"""The scoreboard under concurrent use: a worker beating while the master reads never shows a
half-written slot (a heartbeat of 0 once made the master kill a healthy worker)."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time

from tricorn.master.scoreboard import Scoreboard, read_file

SECONDS = 2.0


def _beat_until_stopped(board: Scoreboard, slot: int, stop: multiprocessing.synchronize.Event) -> None:
    me, n = os.getpid(), 0
    while not stop.is_set():
        # Every field is derived from n, so a slot mixed from two beats is visible to the reader.
        n += 1
        board.beat(slot, me, n, n, lag=n / 1000)


def _torn_reads(board: Scoreboard, slot: int, path: str | None = None) -> tuple[int, int]:
    """Read `slot` (or the whole file at `path`) for SECONDS while another process beats it."""
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
                if path is None:
                    pid, beat, requests, in_flight = board.read(slot)
                    ok = pid == beater.pid and 0 < beat <= time.monotonic() and requests == in_flight
                else:
                    entries = read_file(path)
                    ok = len(entries) == 1 and entries[0]["pid"] == beater.pid \
                        and entries[0]["requests"] == entries[0]["in_flight"] \
                        and abs(entries[0]["lag_ms"] - entries[0]["requests"]) < 1e-3
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


def test_the_scoreboard_file_is_never_read_half_written() -> None:
    """tricorn tune reads the workers' counters from TRICORN_SCOREBOARD's file."""
    with tempfile.NamedTemporaryFile() as f:
        board = Scoreboard(slots=2, path=f.name)
        board.claim(1, 0)
        reads, torn = _torn_reads(board, 1, path=f.name)
    assert reads > 1_000
    assert torn == 0, f"{torn} of {reads} reads saw a half-written slot"


def test_a_claimed_slot_is_not_ready_until_its_worker_beats() -> None:
    board = Scoreboard(slots=2)
    board.claim(0, 0)
    assert not board.ready(0)
    pid, beat, requests, in_flight = board.read(0)
    assert (pid, requests, in_flight) == (0, 0, 0) and 0 < beat <= time.monotonic()
    board.beat(0, 1234, 5, 2, retire=True, lag=0.25)
    assert board.ready(0) and board.wants_retirement(0)
    assert board.read(0)[::2] == (1234, 5)
