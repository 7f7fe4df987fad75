"""One trial: start a server under one configuration and find the highest offered load it sustains.

A trial starts the server (pinned to the server's cores), waits until it answers, then runs a
short closed-loop probe whose throughput is a first guess at capacity; a trial given a better
guess starts from it instead: a confirmation (the full trial of a screened configuration) from
what its screen sustained, with closer steps, and an async server's screen from its neighbour's.
From there the open loop offers rising rates, each for one step, until the p99 target or the
error budget is broken; the highest rate that met both (and was answered, not queued) is the
trial's sustainable throughput. Rates between the last pass and the first failure then narrow
the gap to 5%; a screening trial (quick) takes shorter steps and stops at 10%, to rank
candidates cheaply.

The load comes from `tricorn bench`'s engine, in forked processes on the generator's cores, or
from a Locust cluster (locust.py). When the generator, not the server, fell behind at the failing
step, the trial says so: its number is a floor, not the server's limit.
"""

from __future__ import annotations

import math
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..bench.engine import Load
from ..bench.pages import MAX_CONNECTIONS
from ..bench.scenario import Scenario, Target
from .engines import LoadEngine
from .limits import Limit
from .model import SATURATED, Step, Trial, TrialError
from .procfs import idle_seconds, ticks
from .server_process import ServerCommand, ServerProcess, free_port

FULL_RAMP = (0.5, 0.7, 0.85, 1.0, 1.15, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)  # × the probe's throughput
QUICK_RAMP = (0.7, 0.9, 1.05, 1.25, 1.5, 2.0, 3.0)
CONFIRM_RAMP = (0.85, 1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)  # × what the screen sustained
ONE_CONNECTION_S = 1.0  # seconds of one request at a time, when asked for
SERVICE_TIMES = 4  # a step measures at least this many of one request's latency (its warm-up a third of it)
GROW, BEYOND = 1.25, 10  # past the ramp's last rate: this much higher each step, at most this many steps
BELOW = 0.5  # when even the first rate fails: try this fraction of it, a few times
FILL, LEAP = 0.8, 2.0  # an async server's cores mostly idle at a passing rate: next, the rate that fills
# this share of them, at most this many times higher
FULL_RESOLUTION, QUICK_RESOLUTION = 0.05, 0.1  # the largest gap left between the last pass and the first failure
KEEP_UP = 0.95  # a step passes only if the server answered this share of the rate offered
CONNECTIONS = 1024  # the fewest an open-loop step opens, and the most the probe does
# An open-loop step may open rate × p99 target × this many connections (at least CONNECTIONS): a step
# that passes has about rate × latency in flight, so the generator never runs out of connections
# before the server breaks the target (1024 connections cap a 50 ms app at 20,480 req/s).
IN_FLIGHT = 1.5


@dataclass(frozen=True)
class Workload:
    """What every trial offers and what it must meet."""

    scenario: Callable[[str], tuple[Target, Scenario]]  # base URL → the target and its requests
    path: str  # the readiness check's path
    p99_ms: float
    max_errors: float  # a fraction of requests
    step: float  # seconds each full step measures
    server_cores: frozenset[int] | None = None
    start_timeout: float = 30.0


class TrialRunner:
    """Runs trials of one server command under one workload."""

    def __init__(self, server: ServerCommand, workload: Workload, engine: LoadEngine,
                 make_limit: Callable[[], Limit] | None = None) -> None:
        """`make_limit`: a new cgroup for each trial's server (tune --sizes)."""
        self.server = server
        self.workload = workload
        self.engine = engine
        self.make_limit = make_limit
        self.service_s = 0.0  # one request's latency, once measured (over one connection, or by a slow probe)

    def run(self, trial: Trial, quick: bool = False, one_connection: bool = False, expected: float = 0.0) -> Trial:
        """Measure `trial` in place. `expected`: about what it will sustain (for a full trial, what
        its screen did); the ramp starts around it instead of probing. Workers 0: tricorn's own
        defaults, and the trial's workers become what its master chose."""
        workload = self.workload
        port = free_port()
        argv = self.server.argv(trial.workers, trial.threads, port)
        trial.command = shlex.join(argv)
        counted = (trial.workers or -1) if self.server.counted(trial.workers) else 0
        limit = self.make_limit() if self.make_limit is not None else None
        server = ServerProcess(self.server.process_argv(argv), workload.server_cores, counted, limit)
        began = time.monotonic()
        trial.status = "interrupted"
        try:
            server.start()
            server.wait_ready(port, workload.path, workload.start_timeout)
            trial.workers = trial.workers or server.workers
            target, scenario = workload.scenario(f"{server.scheme}://127.0.0.1:{port}")
            trial.url = target.origin
            if one_connection:
                self._one_connection(trial, server, target, scenario)
            if expected:
                # A confirmation (its screen found the capacity to within 10%), or a screen seeded
                # from its neighbour's; an earlier trial checked the answers. Spend the steps
                # around it, not on the probe and rates far below.
                trial.capacity = expected
                self._ramp(trial, server, target, scenario, quick, QUICK_RAMP if quick else CONFIRM_RAMP)
            elif self._probe(trial, server, target, scenario, quick):
                self._ramp(trial, server, target, scenario, quick, QUICK_RAMP if quick else FULL_RAMP)
            trial.status = "ok" if trial.throughput > 0 else "failed"
            counters = server.counters()
            if counters is not None:
                trial.requests_per_worker = counters[0]
        except TrialError as exc:
            trial.status, trial.note = "failed", str(exc)
            if not (limit is not None and limit.oom_kills()):  # else only this configuration is at fault
                raise
        finally:
            server.stop()
            trial.wall_s = time.monotonic() - began
            if limit is not None:
                kills = limit.oom_kills()
                limit.remove()
                if kills:
                    trial.status, trial.oom_killed = "failed", True
                    trial.note = f"OOM-killed: {kills} process(es) hit the memory limit" + (
                        f"; {trial.note}" if trial.note and "OOM" not in trial.note else "")
        return trial

    def _measure(self, server: ServerProcess, target: Target, scenario: Scenario,
                 load: Load) -> tuple[dict[str, Any], float, float | None, int | None, float | None]:
        """Run the engine in the generator's processes: its summary, the server's CPU in cores, the
        idle time of the server's cores in cores (when pinned), and the server's own counters when
        it has them: the requests it counted meanwhile (to the half second its workers write them
        at) and its largest event-loop lag (ms) at the end."""
        cores = self.workload.server_cores
        stat_files = [f"/proc/{pid}/stat" for pid in server.pids()]

        def watch() -> tuple[float, float]:
            return ticks(stat_files) / os.sysconf("SC_CLK_TCK"), idle_seconds(cores) if cores else 0.0

        before, wall_before = watch(), time.monotonic()
        summary = self.engine.measure(target, scenario, load, watch)
        wall = max(1e-9, time.monotonic() - wall_before)
        # Over the engine's measured seconds where it can say: the whole call also holds the load
        # processes' start and end, when the server has nothing to do, and short screening steps
        # would read a saturated server as partly idle.
        whole = [(end - start) / wall for start, end in zip(before, watch(), strict=True)]
        server_cpu, idle = summary.get("watched") or whole
        idle_cores = idle if cores else None
        counters = server.counters()
        if counters is None:
            return summary, server_cpu, idle_cores, None, None
        served, server.served = sum(counters[0]) - server.served, sum(counters[0])
        return summary, server_cpu, idle_cores, served, counters[1]

    def _one_connection(self, trial: Trial, server: ServerProcess, target: Target, scenario: Scenario) -> None:
        """One request at a time: its latency, the server's CPU per request, and the share of that
        CPU in the threads that run the app, which say how many threads one worker can keep busy."""
        load = Load("closed", connections=1, duration=ONE_CONNECTION_S, warmup=ONE_CONNECTION_S / 5,
                    timeout=self._timeout())
        before, side_before, began = server.cpu_seconds(), server.side_thread_seconds(), time.monotonic()
        summary = self.engine.measure(target, scenario, load)
        wall = time.monotonic() - began
        # Each process's CPU time counts in clock ticks: take the least it can have been, so that a
        # request never looks busier than it is. The load ran at one pace throughout (warmup too).
        used = server.cpu_seconds() - before - len(server.pids()) / os.sysconf("SC_CLK_TCK")
        # The app threads' share as measured (up to a tick more): it caps threads, so err low.
        side_after = server.side_thread_seconds()
        if summary["throughput_rps"] > 0:
            trial.service_ms = summary["latency_ms"]["mean"]
            self.service_s = trial.service_ms / 1000
            trial.cpu_ms = max(0.0, used) / wall * 1000 / summary["throughput_rps"]
            trial.thread_cpu_ms = max(0.0, side_after - side_before) / wall * 1000 / summary["throughput_rps"]

    def _probe(self, trial: Trial, server: ServerProcess, target: Target, scenario: Scenario, quick: bool) -> bool:
        """A closed loop with enough connections to keep every worker thread busy (an async
        server's: CONNECTIONS, which Little's law still lets a slow app's latency cap): a first
        guess at capacity, and the place to notice a workload the app rejects."""
        duration, warmup = self._durations(quick)
        threads = trial.workers * trial.threads if trial.threads else 0
        connections = min(CONNECTIONS, max(8, 2 * threads)) if threads else CONNECTIONS
        if scenario.has_pages:  # each user also opens its asset connections: as many connections in all
            connections = max(8, connections // MAX_CONNECTIONS)
        load = Load("closed", connections=connections, duration=duration, warmup=warmup, timeout=self._timeout())
        summary, *_ = self._measure(server, target, scenario, load)
        if not summary["answered"] and not summary["error_count"] and load.timeout > duration:
            # Not one request finished inside the step, none failed: requests slower than the step.
            # Once more, for as long as a request may take; their latency sets the steps' least length.
            load = replace(load, duration=load.timeout, warmup=load.timeout / 3)
            summary, *_ = self._measure(server, target, scenario, load)
            if summary["answered"]:
                self.service_s = max(self.service_s, summary["latency_ms"]["mean"] / 1000)
        self._sample_memory(trial, server)
        answered = summary["answered"]
        client_errors = sum(n for code, n in summary["status"].items() if 400 <= int(code) < 500)
        if answered and client_errors > answered / 2:
            codes = ", ".join(f"{code} × {n:,}" for code, n in summary["status"].items())
            raise TrialError(f"the app answered mostly client errors ({codes}): check --url-path or the "
                             "scenario's paths, methods and headers")
        trial.capacity = summary["throughput_rps"]
        if not answered:
            kinds = ", ".join(f"{k} {v:,}" for k, v in summary["errors"].items()) or "none"
            trial.note = f"answered no request to {connections} connections (errors: {kinds})"
            return False
        return True

    def _ramp(self, trial: Trial, server: ServerProcess, target: Target, scenario: Scenario, quick: bool,
              ramp: Sequence[float]) -> None:
        durations = self._durations(quick)
        best: Step | None = None
        failed: Step | None = None
        rates = [trial.capacity * f for f in ramp]
        beyond = 0
        while rates:
            step = self._checked_step(trial, server, target, scenario, rates.pop(0), durations)
            if step.passed:
                best = step
                if not rates and beyond < BEYOND:
                    # The probe can underestimate a lot: with its connections all waiting on a slow
                    # app (Little's law), not on the server. Keep rising until a rate fails.
                    beyond += 1
                    rates = [step.offered * GROW]
                rates = self._skip_ahead(trial, step, rates)
                continue
            failed = step
            if best is None and len(trial.steps) < 4 and step.offered * BELOW >= 1:
                rates = [step.offered * BELOW]  # not even the first rate: look lower
                continue
            break
        # The ramp's last rates are far apart (the probe can be off by 3×): halve the gap between
        # the last pass and the first failure until it is within the trial's resolution.
        resolution = QUICK_RESOLUTION if quick else FULL_RESOLUTION
        while best is not None and failed is not None and failed.offered > best.offered * (1 + resolution):
            middle = self._checked_step(trial, server, target, scenario, (best.offered + failed.offered) / 2, durations)
            if middle.passed:
                best = middle
            else:
                failed = middle
        if failed is not None and failed.generator_saturated:
            trial.generator_bound = True
            trial.note = (f"the load generator could not keep up at {failed.offered:,.0f} req/s: the server may "
                          "sustain more (give the generator more cores, or use --engine locust)")
        elif failed is None:
            trial.note = (f"met the target at every rate tried, up to {trial.steps[-1].offered:,.0f} req/s: "
                          "it may sustain more")
        if best is None:
            assert failed is not None
            trial.note = trial.note or f"no rate met the target: at {failed.offered:,.0f} req/s {failed.why}"
            return
        trial.throughput, trial.p50_ms, trial.p99_ms = best.throughput, best.p50_ms, best.p99_ms
        trial.server_cpu, trial.generator_cpu = best.server_cpu, best.generator_cpu

    def _skip_ahead(self, trial: Trial, step: Step, rates: list[float]) -> list[float]:
        """An async server (no threads to run out of) whose cores were mostly idle at a passing
        rate is far below its capacity, which its CPU bounds: offer next what would keep FILL of
        them busy (at most LEAP times this rate), skipping the ramp's rates below it. Not for
        threads: a threaded worker can run out of threads with its core idle."""
        cores = self.workload.server_cores
        if trial.threads is not None or not cores or step.server_idle is None:
            return rates
        busy = step.cores_busy(len(cores))
        rate = step.offered * (min(LEAP, FILL * len(cores) / busy) if busy > 0 else LEAP)
        if not rates or rate <= rates[0]:
            return rates
        return [rate, *(r for r in rates if r > rate)]

    def _checked_step(self, trial: Trial, server: ServerProcess, target: Target, scenario: Scenario, rate: float,
                      durations: tuple[float, float]) -> Step:
        """A step, and when it fails, the same rate once more: one stall (a collection, a busy
        neighbour on the host) can put a short step's p99 over the target at any load, and the
        ramp stops at its first failure."""
        for attempt in range(2):
            step = self._step(server, target, scenario, rate, *durations)
            trial.steps.append(step)
            self._sample_memory(trial, server)
            if step.passed or step.requests == 0 or step.error_rate >= 0.5:
                break
            step.why += " (retried)" if attempt == 0 else ""
        return step

    def _step(self, server: ServerProcess, target: Target, scenario: Scenario, rate: float, duration: float,
              warmup: float) -> Step:
        connections = max(CONNECTIONS, math.ceil(IN_FLIGHT * rate * self.workload.p99_ms / 1000))
        load = Load("open", connections=connections, rate=max(1.0, rate), duration=duration, warmup=warmup,
                    timeout=self._timeout())
        summary, server_cpu, idle, served, lag = self._measure(server, target, scenario, load)
        errors = summary["error_count"] + sum(n for code, n in summary["status"].items() if int(code) >= 500)
        throughput, requests, latency = summary["throughput_rps"], summary["requests"], summary["latency_ms"]
        if "pages" in summary:  # a page is served once its last asset is: count and time it so
            assets = summary["assets"]
            throughput, latency = summary["pages"]["rate"], summary["pages"]["latency_ms"]
            requests += assets["answered"] + assets["error_count"]
            errors += assets["error_count"] + sum(n for code, n in assets["status"].items() if int(code) >= 500)
        step = Step(
            offered=load.rate, duration=duration, throughput=throughput, p50_ms=latency["p50"],
            p99_ms=latency["p99"], requests=requests, errors=errors, server_cpu=server_cpu,
            generator_cpu=summary["generator_cpu"], behind_ms=summary["open_loop_behind_ms"], passed=False,
        )
        step.server_idle, step.server_requests, step.loop_lag_ms = idle, served, lag
        workload = self.workload
        # A generator that fell behind while the server's pinned cores were busy hid no faster
        # server: the server was at its limit, and its queue had the generator opening connection
        # after connection.
        cores = len(workload.server_cores or ())
        server_busy = bool(cores) and step.cores_busy(cores) >= SATURATED * cores
        step.generator_saturated = summary["generator_saturated"] and not server_busy
        if step.requests == 0:
            step.why = "no request was answered"
        elif step.p99_ms > workload.p99_ms:
            step.why = f"p99 {step.p99_ms:,.0f} ms > {workload.p99_ms:g} ms"
        elif step.error_rate > workload.max_errors:
            kinds = ", ".join(f"{k} {v:,}" for k, v in summary["errors"].items())
            fives = sum(n for code, n in summary["status"].items() if int(code) >= 500)
            detail = ", ".join(filter(None, [kinds, f"5xx {fives:,}" if fives else ""]))
            step.why = f"errors {step.error_rate:.2%} > {workload.max_errors:.2%} ({detail})"
        # Less than one request short is not queueing: a short step at a low rate counts a handful.
        elif summary.get("shortfall", step.throughput < KEEP_UP * load.rate - 1 / duration):
            step.why = f"answered {step.throughput:,.0f} of the {rate:,.0f} req/s offered"
        else:
            step.passed = True
        return step

    def _durations(self, quick: bool) -> tuple[float, float]:
        """Seconds each step measures, and warms up first (new connections, the app's caches): a
        slow app's requests must have time to finish inside the step, whatever --step says."""
        step = max(self.workload.step / (3 if quick else 1), SERVICE_TIMES * self.service_s)
        return step, step / 3

    def expected_seconds(self, quick: bool) -> float:
        """A trial's likely length before any has run: start and stop, the probe, a few steps."""
        duration, warmup = self._durations(quick)
        return 1.5 + (duration + warmup + 0.1) * (5 if quick else 7)

    def _timeout(self) -> float:
        # Anything slower has long broken the target; waiting longer only slows the ramp down.
        return max(2.0, 5 * self.workload.p99_ms / 1000)

    @staticmethod
    def _sample_memory(trial: Trial, server: ServerProcess) -> None:
        total, worker, base = server.memory()
        if total > trial.rss_total:
            trial.rss_total, trial.rss_worker, trial.rss_base = total, worker, base
