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

The last word of a slot is the master's, outside that scheme: it raises it to ask the worker for
its threads' stacks (`tricorn ctl stacks`); the worker only reads it.
"""

from __future__ import annotations

import mmap
import os
import time

from ..stats import HISTOGRAM_WORDS, STATUS_CLASSES, WorkerStats

# The words of a slot. Times are CLOCK_MONOTONIC nanoseconds, which all processes share. LAG is
# the most the worker's heartbeat timer fired late since its previous beat: how long callbacks held
# its loop. RETIRE is non-zero when the worker asks to be replaced (an index in stats.RETIRE_REASONS).
# Then the rest of stats.WorkerStats: gauges, counters, the status classes and three histograms.
(SEQ, PID, BEAT, REQUESTS, IN_FLIGHT, RETIRE, LAG, CONNECTIONS, WEBSOCKETS, THREADS, THREADS_BUSY,
 BYTES_SENT, LOOP_BLOCKS, REQUEST_TIMEOUTS) = range(14)
STATUS = 14
DURATION = STATUS + len(STATUS_CLASSES)
QUEUE_WAIT = DURATION + HISTOGRAM_WORDS
LOOP_LAG = QUEUE_WAIT + HISTOGRAM_WORDS
INTERFACE = LOOP_LAG + HISTOGRAM_WORDS  # an index in stats.INTERFACES
ASKED = 79  # the master's word: raised to ask for stacks
WORDS = ASKED + 1  # a slot is 640 bytes
assert INTERFACE < ASKED
# The words a worker only ever adds to: the master folds them into its totals when the worker exits.
COUNTERS = (REQUESTS, BYTES_SENT, LOOP_BLOCKS, REQUEST_TIMEOUTS, *range(STATUS, LOOP_LAG + HISTOGRAM_WORDS))
SLOT_BYTES = WORDS * 8
MAX_SLOTS = 1024
WRITER_GRACE = 0.1  # seconds a reader waits for a write under way to end


class Scoreboard:
    def __init__(self, slots: int = MAX_SLOTS) -> None:
        self.slots = slots
        self._memory = mmap.mmap(-1, SLOT_BYTES * slots)  # MAP_SHARED | MAP_ANONYMOUS
        self._words = memoryview(self._memory).cast("q")

    def claim(self, slot: int, pid: int) -> None:
        """The master gives `slot` to a new worker; its heartbeat starts at the fork."""
        self._write(slot, pid, time.monotonic_ns(), *[0] * (ASKED - BEAT - 1))

    def beat(self, slot: int, pid: int, stats: WorkerStats) -> None:
        self._write(
            slot, pid, time.monotonic_ns(), stats.requests, stats.in_flight, stats.retire, round(stats.lag * 1e9),
            stats.connections, stats.websockets, stats.threads, stats.threads_busy, stats.bytes_sent,
            stats.loop_blocks, stats.request_timeouts, *stats.status_counts(), *stats.histogram_words(),
            stats.interface,
        )

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

    def retire_reason(self, slot: int) -> int:
        """Non-zero when the worker asks to be replaced: an index in stats.RETIRE_REASONS."""
        return _read_slot(self._words, slot)[RETIRE]

    def snapshot(self, slot: int) -> list[int]:
        """All the words of a slot, as one beat wrote them."""
        return _read_slot(self._words, slot)

    def ask_stacks(self, slot: int, number: int) -> None:
        """Ask the worker in `slot` for its stacks (the master's word): `number` names the request."""
        self._words[slot * WORDS + ASKED] = number

    def stacks_asked(self, slot: int) -> int:
        return self._words[slot * WORDS + ASKED]


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


class Mailbox:
    """Shared memory for one worker's answers to the master (its stacks), made before the fork:
    the worker writes the text, then its length, then the number of the request it answers; the
    master, having asked, waits for that number. Untouched pages cost no memory."""

    SIZE = 1 << 20
    HEADER = 16  # the request's number, the text's length

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, self.SIZE)
        self._words = memoryview(self._memory)[:self.HEADER].cast("q")

    def post(self, asked: int, text: str) -> None:
        data = text.encode("utf-8", "replace")[:self.SIZE - self.HEADER]
        self._memory[self.HEADER:self.HEADER + len(data)] = data
        self._words[1] = len(data)
        self._words[0] = asked

    def wait(self, asked: int, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while self._words[0] != asked:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.005)
        return self._memory[self.HEADER:self.HEADER + self._words[1]].decode("utf-8", "replace")

    def close(self) -> None:
        """The master's part, once its worker has exited."""
        self._words.release()
        self._memory.close()
