"""Worker → master state in shared memory: one fixed-size slot per worker, one writer per slot.

An anonymous shared mmap made before the first fork, so every worker sees the same pages. The
worker writes its slot from a timer on its event loop: a stale heartbeat therefore means a blocked
loop (or, for WSGI, every thread stuck in one request), not merely a live process.

Reads never see a half-written slot. Every field is a signed 8-byte word, written and read with
one aligned 8-byte store or load (a memoryview cast to "q", whose items are copied whole), so no
field is ever seen torn; `struct.pack_into` would not do: it zeroes the whole slot before filling
it, and a reader could catch a heartbeat of 0. A sequence word (a seqlock) makes the slot
consistent as a whole: the writer makes it odd before writing and even after; a reader retries
while it is odd or changed under it. A writer killed mid-write leaves it odd: after WRITER_GRACE a
reader takes the fields as they are, each of them still a value that was written.

With TRICORN_SCOREBOARD=PATH the mmap is that file's instead, so that another process (tricorn
tune) can read the workers' own counters; `read_file` does.
"""

from __future__ import annotations

import mmap
import os
import time
from typing import Any

# The words of a slot. Times are CLOCK_MONOTONIC nanoseconds, which all processes share. LAG is
# the most the worker's heartbeat timer fired late since its previous beat: how long callbacks held
# its loop. RETIRE is 1 when the worker asks to be replaced (--max-requests and the like).
SEQ, PID, BEAT, REQUESTS, IN_FLIGHT, RETIRE, LAG = range(7)
WORDS = 8  # one spare: a slot is 64 bytes
SLOT_BYTES = WORDS * 8
MAX_SLOTS = 1024
WRITER_GRACE = 0.1  # seconds a reader waits for a write under way to end


class Scoreboard:
    def __init__(self, slots: int = MAX_SLOTS, path: str | None = None) -> None:
        self.slots = slots
        size = SLOT_BYTES * slots
        if path is None:
            self._memory = mmap.mmap(-1, size)  # MAP_SHARED | MAP_ANONYMOUS
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.ftruncate(fd, size)
                self._memory = mmap.mmap(fd, size)
            finally:
                os.close(fd)
        self._words = memoryview(self._memory).cast("q")

    def claim(self, slot: int, pid: int) -> None:
        """The master gives `slot` to a new worker; its heartbeat starts at the fork."""
        self._write(slot, pid, time.monotonic_ns(), 0, 0, 0, 0)

    def beat(self, slot: int, pid: int, requests: int, in_flight: int, retire: bool = False, lag: float = 0.0) -> None:
        self._write(slot, pid, time.monotonic_ns(), requests, in_flight, int(retire), round(lag * 1e9))

    def _write(self, slot: int, *values: int) -> None:
        words, base = self._words, slot * WORDS
        seq = words[base] | 1  # odd: being written (also after a writer that died mid-write)
        words[base] = seq
        for offset, value in enumerate(values, PID):
            words[base + offset] = value
        words[base] = seq + 1

    def ready(self, slot: int) -> bool:
        """Claimed with pid 0; the worker's first beat, once it listens, writes its pid."""
        return _read_slot(self._words, slot)[PID] != 0

    def read(self, slot: int) -> tuple[int, float, int, int]:
        """pid, heartbeat (monotonic seconds), requests, in flight."""
        words = _read_slot(self._words, slot)
        return words[PID], words[BEAT] / 1e9, words[REQUESTS], words[IN_FLIGHT]

    def wants_retirement(self, slot: int) -> bool:
        return bool(_read_slot(self._words, slot)[RETIRE])


def _read_slot(words: memoryview, slot: int) -> list[int]:
    """One slot's words as one writer left them (see the module docstring)."""
    base = slot * WORDS
    deadline = 0.0
    while True:
        seq = words[base]
        if not seq & 1:
            values: list[int] = words[base:base + WORDS].tolist()
            if words[base] == seq and values[SEQ] == seq:
                return values
        # Mid-write: a writer preempted there needs the CPU to finish (on one core, ours).
        now = time.monotonic()
        if not deadline:
            deadline = now + WRITER_GRACE
        elif now > deadline:
            return words[base:base + WORDS].tolist()
        os.sched_yield()


def read_file(path: str) -> list[dict[str, Any]]:
    """The live slots of a TRICORN_SCOREBOARD file: pid, requests, in_flight, lag_ms."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size // SLOT_BYTES * SLOT_BYTES
            if not size:
                return []
            memory = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
    except OSError:
        return []
    slots = []
    with memory:
        words = memoryview(memory).cast("q")
        try:
            for slot in range(size // SLOT_BYTES):
                values = _read_slot(words, slot)
                if values[PID]:
                    slots.append({"pid": values[PID], "requests": values[REQUESTS],
                                  "in_flight": values[IN_FLIGHT], "lag_ms": values[LAG] / 1e6})
        finally:
            words.release()
    return slots
