"""Container sizes for `tricorn tune --sizes`: each trial's server runs inside a real limit, a cgroup
made for the trial (v2 `cpu.max` and `memory.max`, or v1 `cpu.cfs_quota_us` and
`memory.limit_in_bytes`) and removed after it. Where this machine lets us write neither, the size
is emulated: the server is pinned to as many cores as the quota needs and the memory is only a
budget the search keeps to.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import size as parse_size
from ..host.resources import CGROUP_ROOT, V1_CPU_MOUNTS, cgroup_chain, cgroup_paths, read_text
from .model import TrialError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MIB = 1 << 20
PERIOD_US = 100_000  # the CPU quota's period: 100 ms, as Docker and Kubernetes set it
PREFIX = "tricorn-tune-"  # our cgroups' names: PREFIX + the tuner's pid + a number


@dataclass(frozen=True)
class Size:
    """A container size: CPUs (fractions allowed, as Kubernetes' 500m) and memory in bytes."""

    cpus: float
    memory: int

    @property
    def cores(self) -> int:
        """The cores the server is pinned to: as many as the quota can keep busy."""
        return math.ceil(self.cpus)

    @property
    def label(self) -> str:
        return f"{self.cpus:g} CPU / {self.memory / MIB:,.0f} MiB"


def parse_sizes(text: str) -> list[Size]:
    """`0.5/512m,1/1g,2/2g` (CPUs / memory, separated by commas), or a TOML file holding
    `sizes = ["0.5/512m", "1/1g"]`; a ValueError says what is wrong."""
    if not text.endswith(".toml"):
        return [_size(part.strip()) for part in text.split(",")]
    try:
        document = tomllib.loads(Path(text).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"a readable sizes file, but {text}: {getattr(exc, 'strerror', None) or exc}") from None
    listed = document.get("sizes")
    if not isinstance(listed, list) or not listed or not all(isinstance(entry, str) for entry in listed):
        raise ValueError(f'sizes = ["0.5/512m", "1/1g"] in {text}')
    return [_size(entry.strip()) for entry in listed]


def _size(text: str) -> Size:
    cpus_text, _, memory_text = text.partition("/")
    try:
        cpus = float(cpus_text)
        memory = parse_size(memory_text)
    except ValueError:
        raise ValueError(f"sizes like 0.5/512m,1/1g (CPUS/MEMORY), not {text!r}") from None
    if not 0.01 <= cpus <= 1024 or memory < 64 * MIB:
        raise ValueError(f"CPUs from 0.01 and memory from 64m in each size, not {text!r}")
    return Size(cpus, memory)


class Limit:
    """One trial's cgroup: its directories (one in v2; cpu and memory in v1)."""

    def __init__(self, directories: list[Path]) -> None:
        self.directories = directories

    def enter(self) -> None:
        """Move the calling process in (from the server's child before exec: its workers follow)."""
        for directory in self.directories:
            (directory / "cgroup.procs").write_text(str(os.getpid()))

    def oom_kills(self) -> int:
        """Processes the kernel killed for the memory limit (v2 memory.events, v1 memory.oom_control)."""
        for directory in self.directories:
            for name in ("memory.events", "memory.oom_control"):
                for line in (read_text(directory / name) or "").splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and value.isdigit():
                        return int(value)
        return 0

    def remove(self, grace: float = 5.0) -> None:
        """Remove the cgroup, first ending what is still in it (what the trial started)."""
        for directory in self.directories:
            _remove(directory, grace)


class Cgroups:
    """Which cgroup hierarchy this machine lets us make limits in, or why none."""

    def __init__(self, root: Path = CGROUP_ROOT, membership: str | None = None) -> None:
        self.kind = ""  # "cgroup v2", "cgroup v1", or "" (emulated)
        self.why = ""
        self.parents: list[Path] = []
        self._made = 0
        paths = cgroup_paths(membership)
        unified = root if (root / "cgroup.controllers").exists() else root / "unified"
        # v2: under this process's cgroup or, where its controllers are not delegated there, the
        # nearest ancestor that has them (systemd enables them at the root, not in a session).
        v2 = [[parent] for parent in cgroup_chain(unified, paths.get("", "/"))]
        cpu_mount = next((root / m for m in V1_CPU_MOUNTS if (root / m).is_dir()), root / "cpu")
        v1 = [found[0] for mount, controller in ((cpu_mount, "cpu"), (root / "memory", "memory"))
              if (found := cgroup_chain(mount, paths.get(controller, "/")))]
        problems = []
        for kind, candidates in (("cgroup v2", v2), ("cgroup v1", [v1] if len(v1) == 2 else [])):
            if not candidates:
                problems.append(f"{kind}: not mounted")
                continue
            problem = ""
            for parents in candidates:
                problem = _probe(kind, parents)
                if not problem:
                    self.kind, self.parents = kind, parents
                    return
            problems.append(f"{kind}: {problem}")
        self.why = "; ".join(problems)

    def make(self, size: Size) -> Limit:
        """A new cgroup with `size`'s CPU quota and memory limit."""
        self._made += 1
        name = f"{PREFIX}{os.getpid()}-{self._made}"
        directories = [parent / name for parent in self.parents]
        limit = Limit(directories)
        try:
            for directory in directories:
                directory.mkdir()
            quota = max(1000, round(size.cpus * PERIOD_US))
            if self.kind == "cgroup v2":
                (directories[0] / "cpu.max").write_text(f"{quota} {PERIOD_US}")
                (directories[0] / "memory.max").write_text(str(size.memory))
                _write_if_there(directories[0] / "memory.swap.max", "0")
            else:
                cpu, memory = directories
                (cpu / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (cpu / "cpu.cfs_quota_us").write_text(str(quota))
                (memory / "memory.limit_in_bytes").write_text(str(size.memory))
                _write_if_there(memory / "memory.memsw.limit_in_bytes", str(size.memory))  # no swap past it
        except OSError as exc:
            limit.remove()
            raise TrialError(f"cannot set up a cgroup for {size.label}: {exc}") from None
        return limit

    def sweep(self) -> list[str]:
        """Remove our cgroups that a tuner killed before it could (its pid is gone); their names."""
        removed = []
        for parent in self.parents:
            for directory in parent.glob(f"{PREFIX}*"):
                pid = directory.name.removeprefix(PREFIX).split("-")[0]
                if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                    _remove(directory, 1.0)
                    removed.append(str(directory))
        return removed


def _probe(kind: str, parents: list[Path]) -> str:
    """Why we cannot make a limit under `parents`, or "" when we can."""
    made: list[Path] = []
    try:
        for parent in parents:
            directory = parent / f"{PREFIX}{os.getpid()}-probe"
            directory.mkdir()
            made.append(directory)
        if kind == "cgroup v2":
            controllers = (read_text(made[0] / "cgroup.controllers") or "").split()
            missing = {"cpu", "memory"} - set(controllers)
            if missing:
                return f"the {' and '.join(sorted(missing))} controller(s) not enabled in {parents[0]}"
        files = ("cpu.max", "memory.max") if kind == "cgroup v2" else ("cpu.cfs_quota_us", "memory.limit_in_bytes")
        for name in files:
            if not any((directory / name).exists() for directory in made):
                return f"no {name}"
        return ""
    except OSError as exc:
        return f"cannot create a cgroup ({exc.strerror})"
    finally:
        for directory in made:
            with contextlib.suppress(OSError):
                directory.rmdir()


def _write_if_there(path: Path, value: str) -> None:
    if path.exists():
        with contextlib.suppress(OSError):
            path.write_text(value)


def _remove(directory: Path, grace: float) -> None:
    deadline = time.monotonic() + grace
    while directory.exists():
        try:
            directory.rmdir()
            return
        except OSError:
            pass
        for pid in (read_text(directory / "cgroup.procs") or "").split():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), signal.SIGKILL)
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)
