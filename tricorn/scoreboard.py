"""Worker → master state in shared memory: one fixed-size slot per worker, one writer per slot.

An anonymous shared mmap made before the first fork, so every worker sees the same pages. The
worker writes its slot from a timer on its event loop: a stale heartbeat therefore means a blocked
loop (or, for WSGI, every thread stuck in one request), not merely a live process.
"""

from __future__ import annotations

import mmap
import struct
import time

# pid, heartbeat (monotonic seconds; CLOCK_MONOTONIC is shared by all processes), requests,
# in flight, and whether the worker asks to be replaced (--max-requests)
_SLOT = struct.Struct("<qdqq?")
MAX_SLOTS = 1024


class Scoreboard:
    def __init__(self, slots: int = MAX_SLOTS) -> None:
        self.slots = slots
        self._memory = mmap.mmap(-1, _SLOT.size * slots)  # MAP_SHARED | MAP_ANONYMOUS

    def claim(self, slot: int, pid: int) -> None:
        """The master gives `slot` to a new worker; its heartbeat starts at the fork."""
        _SLOT.pack_into(self._memory, slot * _SLOT.size, pid, time.monotonic(), 0, 0, False)

    def beat(self, slot: int, pid: int, requests: int, in_flight: int, retire: bool = False) -> None:
        _SLOT.pack_into(self._memory, slot * _SLOT.size, pid, time.monotonic(), requests, in_flight, retire)

    def ready(self, slot: int) -> bool:
        """Claimed with pid 0; the worker's first beat, once it listens, writes its pid."""
        return self.read(slot)[0] != 0

    def read(self, slot: int) -> tuple[int, float, int, int]:
        """pid, heartbeat, requests, in flight."""
        pid, beat, requests, in_flight, _ = _SLOT.unpack_from(self._memory, slot * _SLOT.size)
        return pid, beat, requests, in_flight

    def wants_retirement(self, slot: int) -> bool:
        return bool(_SLOT.unpack_from(self._memory, slot * _SLOT.size)[4])
