"""What this process may really use: CPUs (affinity, cgroup CPU quota) and memory (cgroup limit,
else physical RAM), read from cgroup v2 or v1 files. Every answer comes with its reason, so that
`--print-config` can say "2 CPUs from cgroup cpu.max 200000/100000" instead of a bare number.

A limit set on any ancestor cgroup binds too (a Kubernetes pod's limit sits above its container's
cgroup), so each lookup walks from the process's own cgroup, named in /proc/self/cgroup, up to the
mount point, and keeps the smallest. TRICORN_CGROUP_ROOT points elsewhere than /sys/fs/cgroup.
"""

from __future__ import annotations

import math
import os
import resource
from pathlib import Path

CGROUP_ROOT = Path(os.environ.get("TRICORN_CGROUP_ROOT", "/sys/fs/cgroup"))
UNLIMITED = 1 << 60  # cgroup v1 writes a huge number (page-rounded LONG_MAX) for "no limit"
V1_CPU_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def effective_cpus(
    cgroup_root: Path = CGROUP_ROOT, affinity: int | None = None, membership: str | None = None,
) -> tuple[int, str]:
    """The CPUs this process can keep busy, and why: affinity, lowered by a cgroup CPU quota."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            affinity = os.cpu_count() or 1
    count, source = affinity, "sched_getaffinity"
    quota = cgroup_cpu_quota(cgroup_root, membership)
    if quota is not None and quota[0] < count:
        count, source = quota
    count = max(1, count)
    return count, f"{count} CPU{'s' if count != 1 else ''} from {source}"


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, membership: str | None = None) -> tuple[int, str] | None:
    """The tightest CPU quota as whole CPUs (rounded up), from cgroup v2 cpu.max or v1 cfs files."""
    paths = cgroup_paths(membership)
    limits: list[tuple[float, str]] = []
    for directory in cgroup_chain(root, paths.get("", "/")):
        fields = (read_text(directory / "cpu.max") or "").split()
        if len(fields) == 2 and fields[0] != "max":
            limits.append((int(fields[0]) / int(fields[1]), f"cgroup cpu.max {fields[0]}/{fields[1]}"))
    mount = next((root / m for m in V1_CPU_MOUNTS if (root / m).is_dir()), None)
    if mount is not None:
        for directory in cgroup_chain(mount, paths.get("cpu", "/")):
            quota, period = read_text(directory / "cpu.cfs_quota_us"), read_text(directory / "cpu.cfs_period_us")
            if quota and period and int(quota) > 0 and int(period) > 0:
                limits.append((int(quota) / int(period), f"cgroup cpu.cfs_quota_us {quota}/{period}"))
    if not limits:
        return None
    ratio, why = min(limits)
    return max(1, math.ceil(ratio)), why


def memory_limit(cgroup_root: Path = CGROUP_ROOT, membership: str | None = None) -> tuple[int, str]:
    """Bytes this process's cgroup may use (v2 memory.max, v1 memory.limit_in_bytes), else RAM."""
    paths = cgroup_paths(membership)
    limits: list[tuple[int, str]] = []
    for directory in cgroup_chain(cgroup_root, paths.get("", "/")):
        text = read_text(directory / "memory.max")
        if text and text != "max":
            limits.append((int(text), "cgroup memory.max"))
    for directory in cgroup_chain(cgroup_root / "memory", paths.get("memory", "/")):
        text = read_text(directory / "memory.limit_in_bytes")
        if text and int(text) < UNLIMITED:
            limits.append((int(text), "cgroup memory.limit_in_bytes"))
    if limits:
        return min(limits)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"


def rss_bytes(pid: int | str = "self") -> int:
    """A process's resident memory, from /proc (0 where there is none)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def cgroup_paths(text: str | None) -> dict[str, str]:
    """/proc/self/cgroup as {controller: path}; the v2 hierarchy under the key ""."""
    if text is None:
        text = read_text(Path("/proc/self/cgroup")) or ""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        for controller in controllers.split(","):
            paths[controller.removeprefix("name=")] = path
    return paths


def cgroup_chain(mount: Path, path: str) -> list[Path]:
    """mount/path and its parents up to the mount, innermost first. In a container without a cgroup
    namespace the path is the host's and does not exist here: the mount itself is then the cgroup."""
    parts = [part for part in path.split("/") if part]
    found = [mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    return [d for d in found if d.is_dir()]


def read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return None


def raise_open_files_limit() -> None:
    """Lift this process's soft limit on open files to the hard one (inherited by the processes it
    starts): a load generator and the servers it tests hold a socket per connection in flight."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
