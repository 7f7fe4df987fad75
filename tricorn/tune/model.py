"""What tune measures and reports: a Trial (one configuration under a rising load) and its Steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError

# Of its cores busy (over a step's measured seconds), the server is at its limit: more workers
# could add at most idle / busy, 11% here, which screening cannot tell from noise (search.py), and a
# generator that fell behind meanwhile did not hide a faster server.
SATURATED = 0.9
MIB = 1 << 20
FULL = ("full", "defaults")  # the kinds of trial that measure a configuration fully


class TrialError(UserError):
    """The app or the workload is wrong at any configuration: stop tuning and say what to change."""


@dataclass
class Step:
    offered: float  # req/s the open loop started
    duration: float  # seconds measured
    throughput: float  # answers per second
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # transport errors and 5xx answers
    server_cpu: float  # cores the server's processes used (over the measured seconds, with the builtin engine)
    generator_cpu: float  # of one core, per load process
    behind_ms: float  # the most the generator started a request late
    passed: bool
    generator_saturated: bool = False  # the generator, not the server, could not keep up
    why: str = ""  # what broke the target
    server_idle: float | None = None  # the server's cores' idle time, in cores (when pinned apart)
    server_requests: int | None = None  # what the workers themselves counted (tricorn, 2+ workers)
    loop_lag_ms: float | None = None  # the workers' largest event-loop lag at the step's end

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def cores_busy(self, cores: int) -> float:
        """How many of the server's `cores` it kept busy: their idle time when pinned, else its own CPU."""
        return cores - self.server_idle if self.server_idle is not None else self.server_cpu


@dataclass
class Trial:
    workers: int
    threads: int | None  # None: the app does not use threads (ASGI), or --cmd has no {threads}
    kind: str = "full"  # full | screen | defaults (tricorn's own, its master choosing the workers)
    command: str = ""
    url: str = ""  # where its load went: https:// (wss://) when the server spoke TLS
    status: str = "pending"  # ok | failed | skipped | interrupted
    note: str = ""
    capacity: float = 0.0  # where the ramp's rates start from: the probe's throughput, or the expected one
    service_ms: float = 0.0  # a request's mean latency over one connection (no queueing), when measured...
    cpu_ms: float = 0.0  # ...and the server's CPU per request meanwhile, at most (0: too little to measure)...
    thread_cpu_ms: float = 0.0  # ...and of it, outside the processes' main threads (a WSGI app's pool)
    throughput: float = 0.0  # sustainable: the best step that met the target
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    server_cpu: float = 0.0
    generator_cpu: float = 0.0
    generator_bound: bool = False
    rss_total: int = 0  # bytes, the server's processes together, at their peak
    rss_worker: int = 0  # bytes, the mean of the serving processes
    rss_base: int = 0  # bytes, the master (0 when one process serves)
    fits: bool = True
    oom_killed: bool = False  # the kernel killed a process of it for its cgroup's memory limit
    wall_s: float = 0.0
    steps: list[Step] = field(default_factory=list)
    requests_per_worker: list[int] = field(default_factory=list)  # the server's own counters, at the end

    @property
    def label(self) -> str:
        return f"{self.workers}×{self.threads}" if self.threads is not None else f"{self.workers}"

    @property
    def key(self) -> tuple[int, int | None]:
        return self.workers, self.threads

    def to_dict(self) -> dict[str, Any]:
        return {
            "workers": self.workers, "threads": self.threads, "kind": self.kind, "status": self.status,
            "note": self.note, "command": self.command, "url": self.url, "capacity_rps": round(self.capacity, 1),
            "service_ms": round(self.service_ms, 3), "cpu_ms": round(self.cpu_ms, 3),
            "thread_cpu_ms": round(self.thread_cpu_ms, 3),
            "throughput": round(self.throughput, 1), "p50_ms": round(self.p50_ms, 2), "p99_ms": round(self.p99_ms, 2),
            "server_cpu": round(self.server_cpu, 2), "generator_cpu": round(self.generator_cpu, 2),
            "generator_bound": self.generator_bound, "rss_mb": round(self.rss_total / MIB, 1),
            "rss_worker_mb": round(self.rss_worker / MIB, 1), "rss_base_mb": round(self.rss_base / MIB, 1),
            "fits": self.fits, "oom_killed": self.oom_killed, "wall_s": round(self.wall_s, 2),
            "requests_per_worker": self.requests_per_worker,
            "steps": [{**{k: round(v, 2) if isinstance(v, float) else v for k, v in vars(s).items()},
                       "error_rate": s.error_rate} for s in self.steps],
        }
