"""What this process may really use: CPUs from affinity and cgroup quotas, memory from cgroup limits."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def effective_cpus(cgroup_root: Path = CGROUP_ROOT) -> tuple[int, str]:
    """The CPUs this process can keep busy, and why: affinity, lowered by a cgroup CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
        why = "sched_getaffinity"
    except AttributeError:  # pragma: no cover - not Linux
        count = os.cpu_count() or 1
        why = "os.cpu_count"
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        limit, text = quota
        if limit < count:
            count, why = limit, text
    return max(1, count), why


def cgroup_cpu_quota(root: Path) -> tuple[int, str] | None:
    """The CPU quota as whole CPUs (rounded up) from cgroup v2 cpu.max or v1 cfs files."""
    try:
        fields = (root / "cpu.max").read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            quota, period = int(fields[0]), int(fields[1])
            return math.ceil(quota / period), f"cgroup cpu.max {quota}/{period}"
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return math.ceil(quota / period), f"cgroup cpu.cfs_quota_us {quota}/{period}"
