"""CPU time from /proc: of CPUs (their idle time) and of processes or threads (their ticks)."""

from __future__ import annotations

import os
from collections.abc import Iterable


def idle_seconds(cores: frozenset[int]) -> float:
    """The idle (and I/O wait) time of these CPUs since boot, from /proc/stat."""
    total = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cores:
                total += int(fields[3]) + int(fields[4])
    return total / os.sysconf("SC_CLK_TCK")


def ticks(stat_files: Iterable[str]) -> int:
    """utime + stime, in clock ticks, of these /proc stat files (those gone since count 0)."""
    total = 0
    for path in stat_files:
        try:
            with open(path) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total
