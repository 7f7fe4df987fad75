"""What this process may really use: CPUs (affinity, cgroup CPU quota) and memory (cgroup limit,
else physical RAM), read from cgroup v2 or v1 files. Every answer comes with its reason, so that
`--print-config` can say "2 CPUs from cgroup cpu.max 200000/100000" instead of a bare number.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNLIMITED = 1 << 60  # cgroup v1 writes a huge number (page-rounded LONG_MAX) for "no limit"


def effective_cpus(cgroup_root: Path = CGROUP_ROOT, affinity: int | None = None) -> tuple[int, str]:
    """The CPUs this process can keep busy, and why: affinity, lowered by a cgroup CPU quota."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            affinity = os.cpu_count() or 1
    count, why = affinity, f"{affinity} CPUs from sched_getaffinity"
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None and quota[0] < count:
        count, why = quota[0], f"{quota[0]} CPUs from {quota[1]}"
    return max(1, count), why


def cgroup_cpu_quota(root: Path) -> tuple[int, str] | None:
    """The CPU quota as whole CPUs (rounded up) from cgroup v2 cpu.max or v1 cfs files."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        fields = v2.split()
        if len(fields) == 2 and fields[0] != "max":
            quota, period = int(fields[0]), int(fields[1])
            return max(1, math.ceil(quota / period)), f"cgroup cpu.max {quota}/{period}"
        return None
    quota_text = _read(root / "cpu" / "cpu.cfs_quota_us") or _read(root / "cpu,cpuacct" / "cpu.cfs_quota_us")
    period_text = _read(root / "cpu" / "cpu.cfs_period_us") or _read(root / "cpu,cpuacct" / "cpu.cfs_period_us")
    if quota_text is None or period_text is None:
        return None
    quota, period = int(quota_text), int(period_text)
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period)), f"cgroup cpu.cfs_quota_us {quota}/{period}"


def memory_limit(cgroup_root: Path = CGROUP_ROOT) -> tuple[int, str]:
    """Bytes this process's cgroup may use (v2 memory.max, v1 memory.limit_in_bytes), else RAM."""
    v2 = _read(cgroup_root / "memory.max")
    if v2 is not None and v2 != "max":
        return int(v2), "cgroup memory.max"
    v1 = _read(cgroup_root / "memory" / "memory.limit_in_bytes")
    if v1 is not None and int(v1) < UNLIMITED:
        return int(v1), "cgroup memory.limit_in_bytes"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return None
