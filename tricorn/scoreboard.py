"""Worker → master state in shared memory: one fixed-size slot per worker, one writer per slot.

An anonymous shared mmap made before the first fork, so every worker sees the same pages. The
worker writes its slot from a timer on its event loop: a stale heartbeat therefore means a blocked
loop (or, for WSGI, every thread stuck in one request), not merely a live process.

With TRICORN_SCOREBOARD=PATH the mmap is that file's instead, so that another process (tricorn
tune) can read the workers' own counters; `read_file` does.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from typing import Any

# pid, heartbeat (monotonic seconds; CLOCK_MONOTONIC is shared by all processes), requests,
# in flight, whether the worker asks to be replaced (--max-requests), and its loop lag: the most
# its heartbeat timer fired late since the previous beat, in seconds
_SLOT = struct.Struct("<qdqq?d")
MAX_SLOTS = 1024


class Scoreboard:
    def __init__(self, slots: int = MAX_SLOTS, path: str | None = None) -> None:
        self.slots = slots
        size = _SLOT.size * slots
        if path is None:
            self._memory = mmap.mmap(-1, size)  # MAP_SHARED | MAP_ANONYMOUS
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)
            self._memory = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def claim(self, slot: int, pid: int) -> None:
        """The master gives `slot` to a new worker; its heartbeat starts at the fork."""
        _SLOT.pack_into(self._memory, slot * _SLOT.size, pid, time.monotonic(), 0, 0, False, 0.0)

    def beat(self, slot: int, pid: int, requests: int, in_flight: int, retire: bool = False, lag: float = 0.0) -> None:
        _SLOT.pack_into(self._memory, slot * _SLOT.size, pid, time.monotonic(), requests, in_flight, retire, lag)

    def ready(self, slot: int) -> bool:
        """Claimed with pid 0; the worker's first beat, once it listens, writes its pid."""
        return self.read(slot)[0] != 0

    def read(self, slot: int) -> tuple[int, float, int, int]:
        """pid, heartbeat, requests, in flight."""
        pid, beat, requests, in_flight, _, _ = _SLOT.unpack_from(self._memory, slot * _SLOT.size)
        return pid, beat, requests, in_flight

    def wants_retirement(self, slot: int) -> bool:
        return bool(_SLOT.unpack_from(self._memory, slot * _SLOT.size)[4])


def read_file(path: str) -> list[dict[str, Any]]:
    """The live slots of a TRICORN_SCOREBOARD file: pid, requests, in_flight, lag_ms."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return []
    slots = []
    for offset in range(0, len(data) - _SLOT.size + 1, _SLOT.size):
        pid, _, requests, in_flight, _, lag = _SLOT.unpack_from(data, offset)
        if pid:
            slots.append({"pid": pid, "requests": requests, "in_flight": in_flight, "lag_ms": lag * 1000})
    return slots
