"""CPU and memory limits from cgroup v1/v2 fixture files and affinity."""

from __future__ import annotations

from pathlib import Path

from tricorn.host.resources import cgroup_cpu_quota, effective_cpus, memory_limit


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


def test_cgroup_v2_quota_rounds_up_and_caps_affinity(tmp_path: Path) -> None:
    root = _write(tmp_path, {"cpu.max": "150000 100000"})
    assert cgroup_cpu_quota(root) == (2, "cgroup cpu.max 150000/100000")
    assert effective_cpus(root, affinity=8) == (2, "2 CPUs from cgroup cpu.max 150000/100000")


def test_cgroup_v2_without_quota_uses_affinity(tmp_path: Path) -> None:
    root = _write(tmp_path, {"cpu.max": "max 100000"})
    assert cgroup_cpu_quota(root) is None
    assert effective_cpus(root, affinity=3) == (3, "3 CPUs from sched_getaffinity")


def test_cpuset_affinity_below_the_quota_wins(tmp_path: Path) -> None:
    root = _write(tmp_path, {"cpu.max": "400000 100000"})
    assert effective_cpus(root, affinity=2) == (2, "2 CPUs from sched_getaffinity")


def test_cgroup_v1_quota_and_no_quota(tmp_path: Path) -> None:
    root = _write(tmp_path / "a", {"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000"})
    assert effective_cpus(root, affinity=16) == (1, "1 CPU from cgroup cpu.cfs_quota_us 50000/100000")
    root = _write(tmp_path / "b", {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"})
    assert cgroup_cpu_quota(root) is None


def test_memory_limits(tmp_path: Path) -> None:
    assert memory_limit(_write(tmp_path / "v2", {"memory.max": "536870912"})) == (536870912, "cgroup memory.max")
    assert memory_limit(_write(tmp_path / "v1", {"memory/memory.limit_in_bytes": "1073741824"})) == (
        1073741824, "cgroup memory.limit_in_bytes")
    unlimited_v1 = _write(tmp_path / "v1u", {"memory/memory.limit_in_bytes": "9223372036854771712"})
    for root in (_write(tmp_path / "v2max", {"memory.max": "max"}), unlimited_v1, tmp_path / "none"):
        size, why = memory_limit(root)
        assert why == "physical memory" and size > 0


def test_a_limit_on_an_ancestor_cgroup_binds(tmp_path: Path) -> None:
    """A Kubernetes pod's limits sit above the container's own cgroup; the tightest one wins."""
    root = _write(tmp_path / "v2", {
        "kubepods/pod1/cpu.max": "300000 100000",
        "kubepods/pod1/ctr/cpu.max": "max 100000",
        "kubepods/pod1/memory.max": "1073741824",
        "kubepods/pod1/ctr/memory.max": "2147483648",
        "other/cpu.max": "100000 100000",  # a sibling's limit does not apply
    })
    inside = "0::/kubepods/pod1/ctr\n"
    assert effective_cpus(root, affinity=16, membership=inside) == (3, "3 CPUs from cgroup cpu.max 300000/100000")
    assert memory_limit(root, membership=inside) == (1073741824, "cgroup memory.max")


def test_cgroup_v1_nested_paths_from_proc_self_cgroup(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
        "cpu,cpuacct/cpu.cfs_quota_us": "-1",
        "cpu,cpuacct/cpu.cfs_period_us": "100000",
        "memory/docker/abc/memory.limit_in_bytes": "536870912",
        "memory/memory.limit_in_bytes": "9223372036854771712",
    })
    inside = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n"
    assert effective_cpus(root, affinity=8, membership=inside) == (
        3, "3 CPUs from cgroup cpu.cfs_quota_us 250000/100000")
    assert memory_limit(root, membership=inside) == (536870912, "cgroup memory.limit_in_bytes")
    # A container without its own cgroup namespace sees the host's path, which is not there: its
    # cgroup is the mount itself, whose limits are then the ones read.
    assert effective_cpus(root, affinity=8, membership="3:cpu,cpuacct:/elsewhere\n") == (
        8, "8 CPUs from sched_getaffinity")


def test_this_machine() -> None:
    cpus, why = effective_cpus()
    assert cpus >= 1 and "CPUs from" in why
