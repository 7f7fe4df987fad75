"""Which configurations to try, in what order, within the budget; and which one to recommend.

The machine is split first: the server gets the CPUs it is tuned for, pinned, and the load
generator the rest, so the two never compete for a core. The candidates are workers (1 to 2×
the server's CPUs, at least 4) and, for a WSGI app, threads per worker (1 to 128, doubling).

The grid is never walked whole. Screening trials (short, coarse steps) rank candidates cheaply:
threads first at workers = CPUs (1, 4, 16, 64, then climbing towards the better neighbour while it
gains more than TIE, looking one further past a neighbour within TIE: small gains add up),
then workers at the best thread count, the same way (an async server's screens after the first
start their ramps from the nearest screened worker count's throughput, not from a probe).
Threads are tried only up to twice what one worker can keep busy: the first trial measures a
request's latency over one connection against the CPU its app thread spent on it, and under one
GIL a worker runs one request's Python at a time, so an app that is all CPU gains nothing from
threads beyond the ones that overlap its I/O (and the loop's share of the request, which more
threads do overlap).
Likewise, tricorn's async workers beyond the CPUs are tried only when the trial at workers =
CPUs left CPU time idle at its highest load (used less than SATURATED of its cores): a second
event loop on a core that one keeps busy has nothing to add. Threaded workers and another
server's event loops (--cmd) are tried past busy CPUs all the same: a second process on a busy
core overlaps each request's crossing from the loop to a thread and back, and other servers'
loops do gain from it (the measurements: docs/benchmarks.md, "tricorn tune vs the exhaustive grid").
The best screened candidate, and the runner-up when within 10% of it and either faster or
cheaper (one slower and dearer could only win by beating the screens' ranking by more than TIE),
then get full trials, their ramps starting from what the screen sustained; the recommendation
is the full trial with the highest sustainable throughput whose memory fits the limit with
headroom; within TIE (5%) of it, fewer workers, then fewer threads.
A candidate whose predicted memory (the master plus one worker's RSS per worker, from the trials
so far) does not fit is skipped without running.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..host import resources
from .model import FULL, MIB, SATURATED, Trial
from .trial import TrialRunner

HEADROOM = 0.8  # the share of the memory limit a configuration may use
TIE = 0.05  # throughputs this close are equal (trials on a busy machine vary by as much): prefer the cheaper
THREADS = (1, 2, 4, 8, 16, 32, 64, 128)
COARSE_THREADS = (1, 4, 16, 64)
CONFIRM = 2  # the best screened candidates that get a full trial...
CLOSE = 0.1  # ...when within this share of the best


@dataclass(frozen=True)
class Machine:
    cpus: int  # what the server is tuned for
    cpus_why: str
    memory: int  # bytes
    memory_why: str
    server_cores: frozenset[int] | None
    generator_cores: frozenset[int]
    note: str = ""  # why the two could not be pinned apart

    @property
    def memory_budget(self) -> int:
        return int(self.memory * HEADROOM)


def plan_machine(cpus: int | None = None, memory: int | None = None, generator: bool = True) -> Machine:
    """Split this machine's cores between the server (tuned for `cpus`) and the load generator
    (none when the load comes from elsewhere)."""
    available = sorted(os.sched_getaffinity(0))
    effective, why = resources.effective_cpus()
    if cpus is None:
        share = max(1, effective // 4) if effective >= 2 and generator else 0
        cpus = effective - share
        why = f"{why}, {share} kept for the load generator" if share else why
    else:
        why = "--cpus"
    note = ""
    server_cores: frozenset[int] | None = frozenset(available[:cpus]) if cpus < len(available) else None
    generator_cores: frozenset[int] = frozenset()
    if generator and server_cores is not None:
        generator_cores = frozenset(available[cpus:])
    elif generator:
        generator_cores = frozenset(available)
        note = (f"the server and the load generator share all {len(available)} CPUs: "
                "the generator's work lowers the numbers (plan for fewer --cpus to keep them apart)")
    if memory is None:
        memory, memory_why = resources.memory_limit()
    else:
        memory_why = "--memory"
    return Machine(max(1, cpus), why, memory, memory_why, server_cores, generator_cores, note)


def worker_counts(cpus: int) -> list[int]:
    """1 to 2 × CPUs (at least 4: on a small machine one more process still can pay)."""
    if cpus <= 4:
        return list(range(1, max(4, 2 * cpus) + 1))
    return sorted({1, cpus // 4, cpus // 2, 3 * cpus // 4, cpus, 3 * cpus // 2, 2 * cpus} - {0})


class OutOfBudget(Exception):
    pass


@dataclass
class Search:
    runner: TrialRunner
    machine: Machine
    threaded: bool  # tune threads too (WSGI; --cmd with {threads})
    budget: float  # seconds
    on_trial: Callable[[Trial], None] = lambda trial: None  # a trial is about to run (status pending) or ended
    clock: Callable[[], float] = time.monotonic
    only_workers: list[int] | None = None  # --workers: the candidates, instead of worker_counts()
    only_threads: list[int] | None = None  # --threads
    another_server: bool = False  # --cmd: not tricorn, whose event loops alone gain nothing past busy CPUs
    # tune --sizes: after the search, a full trial of tricorn's own defaults (its master chooses the
    # workers; default_threads is what it will choose), past the budget, which the caller keeps room for
    with_defaults: bool = False
    default_threads: int | None = None
    defaults_trial: Trial | None = None
    trials: list[Trial] = field(default_factory=list)  # in the order they ran, screens and full
    stop_reason: str = ""
    started: float = 0.0
    thread_limit: int | None = None  # the most threads worth trying, from the first trial
    thread_limit_why: str = ""
    worker_limit: int | None = None  # the most workers worth trying, from the trial at workers = CPUs
    worker_limit_why: str = ""

    @property
    def workers(self) -> list[int]:
        return sorted(self.only_workers or worker_counts(self.machine.cpus))

    @property
    def threads(self) -> list[int | None]:
        if not self.threaded:
            return [None]
        counts: list[int | None] = list(sorted(self.only_threads or THREADS))
        return counts

    def run(self) -> Trial | None:
        """Screen, climb, confirm; the recommended full trial (None when none qualifies)."""
        self.started = self.clock()
        try:
            start_workers = min(self.workers, key=lambda w: abs(w - self.machine.cpus))
            threads: int | None = None
            if self.threaded:
                candidates = self.threads
                coarse = [t for t in candidates if t in COARSE_THREADS] or candidates[::3]
                self._limit_threads(self._run(Trial(start_workers, coarse[0]), quick=True, one_connection=True))
                candidates = [t for t in candidates if self.thread_limit is None or (t or 0) <= self.thread_limit]
                for t in coarse:
                    if t in candidates:
                        self._screen(start_workers, t)
                best = self._best_screened(lambda trial: trial.workers == start_workers)
                threads = self._climb(candidates, best.threads if best else coarse[0], lambda t: (start_workers, t))
            self._limit_workers(self._screen(start_workers, threads))
            candidates_w = [w for w in self.workers if self.worker_limit is None or w <= self.worker_limit]
            workers: int = self._climb(candidates_w, start_workers, lambda w: (w, threads))
            self._confirm()
            self.stop_reason = (f"the search converged (last climb at {describe(Trial(workers, threads))}) after "
                                f"{len(self._ran('screen'))} screening and {len(self._ran('full'))} full trials")
        except OutOfBudget:
            self.stop_reason = (f"the budget ({self.budget:g}s) is spent: {len(self._ran('screen'))} screening and "
                                f"{len(self._ran('full'))} full trials ran; raise --budget to search further")
        for why in (self.thread_limit_why, self.worker_limit_why):
            if why:
                self.stop_reason += f"; {why}"
        pick = recommend(self.trials)
        if self.with_defaults:
            self.defaults_trial = self._defaults()
            if pick is not None:  # the defaults compete with what the search confirmed; alone they are no pick
                pick = recommend(self.trials)
        return pick

    # the search --------------------------------------------------------------------------

    def _climb(self, values: Sequence[Any], start: Any, key: Callable[[Any], tuple[int, int | None]]) -> Any:
        """Move along one axis towards the better neighbour while it gains more than TIE. Past a
        neighbour within TIE of it (level, either way), look one further: gains too small to tell
        apart one step at a time, which one screen can even measure as a loss, can add up."""
        index = values.index(start)
        current = self._screen(*key(start))
        while True:
            scored: list[tuple[Trial, int]] = []
            for way in (-1, 1):
                i = index + way
                if not 0 <= i < len(values):
                    continue
                neighbour = self._screen(*key(values[i]))
                scored.append((neighbour, i))
                level = _usable(neighbour) and neighbour.throughput >= _score(current) * (1 - TIE)
                if 0 <= i + way < len(values) and level:
                    scored.append((self._screen(*key(values[i + way])), i + way))
            better = [(trial, i) for trial, i in scored
                      if _usable(trial) and trial.throughput > _score(current) * (1 + TIE)]
            if not better:
                return values[index]
            current, index = max(better, key=lambda pair: pair[0].throughput)

    def _limit_threads(self, trial: Trial) -> None:
        """Threads beyond twice the requests one worker can keep busy cannot add throughput: don't
        spend trials on them. Not when --threads names them. A request keeps a thread busy for its
        app's CPU time (where the server measured it in the app's threads, else all its CPU) out of
        its latency: the rest, the server's parsing and writing in the loop or the app's waiting,
        another thread can fill."""
        if self.only_threads or not trial.cpu_ms:
            return
        app_cpu_ms = trial.thread_cpu_ms or trial.cpu_ms
        busy = trial.service_ms / app_cpu_ms
        fitting = [t for t in THREADS if t <= 2 * busy]
        self.thread_limit = max(fitting, default=THREADS[0])
        if self.thread_limit < THREADS[-1]:
            where = "in the app's threads" if trial.thread_cpu_ms else "on the server's CPU"
            self.thread_limit_why = (
                f"threads above {self.thread_limit} not tried: one request at a time took {trial.service_ms:.2f} ms, "
                f"{app_cpu_ms:.2f} ms of it {where}, so a worker keeps at most {busy:.1f} busy")

    def _limit_workers(self, trial: Trial) -> None:
        """tricorn's event loops beyond the cores gain nothing where the workers = CPUs trial kept
        SATURATED of its cores busy at the highest rate offered (their idle time, when pinned; else
        the server's own CPU): don't spend trials on them. Not when --workers names them; never for
        threaded workers or another server's loops, which gain by taking turns on a core (the
        module's docstring)."""
        if self.threaded or self.another_server or self.only_workers or trial.status != "ok" or not trial.steps:
            return
        cores = self.machine.cpus
        busy = max(step.cores_busy(cores) for step in trial.steps)
        if busy < SATURATED * cores:
            return
        self.worker_limit = trial.workers
        plural = "s" if cores != 1 else ""
        self.worker_limit_why = (f"workers above {trial.workers} not tried: {describe(trial)} kept "
                                 f"{min(1.0, busy / cores):.0%} of {cores} CPU{plural} busy at its highest load")

    def _confirm(self) -> None:
        """Full trials for the best screened candidate (the cheapest within TIE of the fastest),
        and for the runner-up when close enough that screening cannot tell them apart and its full
        trial could change the pick: it screened faster (the best won the tie), or it is cheaper."""
        screened = [t for t in self._ran("screen") if _usable(t)]
        if not screened:
            return
        best = cheapest(screened)
        close = [t for t in screened if t is not best and t.throughput >= best.throughput * (1 - CLOSE)
                 and (t.throughput > best.throughput or _cost(t) < _cost(best))]
        for trial in [best, *sorted(close, key=lambda t: -t.throughput)][:CONFIRM]:
            self._run(Trial(trial.workers, trial.threads), quick=False, expected=trial.throughput)

    def _screen(self, workers: int, threads: int | None) -> Trial:
        for trial in self.trials:
            if trial.kind == "screen" and trial.key == (workers, threads):
                return trial
        return self._run(Trial(workers, threads), quick=True, expected=self._seed(workers))

    def _seed(self, workers: int) -> float:
        """Where an async server's screen starts its ramp: the nearest screened worker count's
        throughput, scaled by the CPUs the workers can use. The probe's closed loop can start far
        below a slow app's capacity (Little's law: its 1,024 connections, each held 50 ms, cap it
        at 20,480 req/s, a fifth of what io_asgi's 8 workers serve on 8 CPUs) and spend steps
        climbing back. Threads change throughput too much from one candidate to the next (1 to
        4 threads: up to 4×) to start from a neighbour."""
        screened = [t for t in self._ran("screen") if t.status == "ok"]
        if self.threaded or not screened:
            return 0.0
        near = min(screened, key=lambda t: (abs(t.workers - workers), -t.throughput))
        cpus = self.machine.cpus
        return near.throughput * min(workers, cpus) / min(near.workers, cpus)

    def _run(self, trial: Trial, quick: bool, one_connection: bool = False, expected: float = 0.0) -> Trial:
        trial.kind = "screen" if quick else "full"
        predicted = self.predicted_memory(trial.workers)
        if predicted > self.machine.memory_budget:
            trial.status, trial.fits = "skipped", False
            trial.note = (f"would need about {predicted / MIB:,.0f} MiB, over {HEADROOM:.0%} of the "
                          f"{self.machine.memory / MIB:,.0f} MiB limit")
            self.trials.append(trial)
            self.on_trial(trial)
            return trial
        remaining = self.budget - (self.clock() - self.started)
        if self.estimate(quick) > remaining:
            raise OutOfBudget
        self.trials.append(trial)
        self.on_trial(trial)
        self.runner.run(trial, quick=quick, one_connection=one_connection, expected=expected)
        self._judge_memory(trial)
        self.on_trial(trial)
        return trial

    def _defaults(self) -> Trial:
        """A candidate like the others, and the answer to whether the defaults were right."""
        trial = Trial(0, self.default_threads, kind="defaults")
        self.trials.append(trial)
        self.on_trial(trial)
        self.runner.run(trial)
        self._judge_memory(trial)
        self.on_trial(trial)
        return trial

    def _judge_memory(self, trial: Trial) -> None:
        trial.fits = trial.rss_total <= self.machine.memory_budget and not trial.oom_killed
        if trial.rss_total > self.machine.memory_budget:
            trial.note = (f"used {trial.rss_total / MIB:,.0f} MiB, over {HEADROOM:.0%} of the "
                          f"{self.machine.memory / MIB:,.0f} MiB limit; " + trial.note).rstrip("; ")

    # evidence so far -----------------------------------------------------------------------

    def estimate(self, quick: bool) -> float:
        """Seconds the next trial of this kind will take: the mean so far, else from the step length."""
        done = [t.wall_s for t in self.trials if t.kind == ("screen" if quick else "full") and t.wall_s]
        if done:
            return sum(done) / len(done)
        return self.runner.expected_seconds(quick)

    def predicted_memory(self, workers: int) -> int:
        measured = [t for t in self.trials if t.rss_worker]
        if not measured:
            return 0
        worker = max(t.rss_worker for t in measured)
        base = max(t.rss_base for t in measured)
        return base + workers * worker

    def _ran(self, kind: str) -> list[Trial]:
        return [t for t in self.trials if t.kind == kind and t.status in ("ok", "failed")]

    def _best_screened(self, where: Callable[[Trial], bool]) -> Trial | None:
        usable = [t for t in self._ran("screen") if where(t) and _usable(t)]
        return cheapest(usable) if usable else None


def _usable(trial: Trial) -> bool:
    return trial.status == "ok" and trial.fits


def _score(trial: Trial) -> float:
    return trial.throughput if _usable(trial) else 0.0


def cheapest(trials: list[Trial]) -> Trial:
    """The fastest of `trials`, or, within TIE of it, the one with fewer workers, then fewer threads."""
    fastest = max(t.throughput for t in trials)
    near = [t for t in trials if t.throughput >= fastest * (1 - TIE)]
    return min(near, key=_cost)


def _cost(trial: Trial) -> tuple[int, int]:
    return trial.workers, trial.threads or 0


def recommend(trials: list[Trial]) -> Trial | None:
    """The full trial with the best sustainable throughput that fits; ties go to the cheaper one."""
    usable = [t for t in trials if t.kind in FULL and _usable(t)]
    return cheapest(usable) if usable else None


def reason(pick: Trial, trials: list[Trial]) -> str:
    """Why `pick` won, against the best other full trial."""
    text = (f"{describe(pick)}: {pick.throughput:,.0f} req/s at p99 {pick.p99_ms:,.0f} ms, "
            f"{pick.rss_total / MIB:,.0f} MiB")
    others = [t for t in trials if t.kind in FULL and t.status == "ok" and t.key != pick.key]
    if not others:
        return text
    other = max(others, key=lambda t: t.throughput)
    change = other.throughput / pick.throughput - 1 if pick.throughput else 0.0
    memory = other.rss_total / pick.rss_total if pick.rss_total else 1.0
    if not other.fits:
        return f"{text}; {describe(other)} does not fit in memory ({other.rss_total / MIB:,.0f} MiB)"
    verb = "adds" if change > 0 else "loses"
    return f"{text}; {describe(other)} {verb} {abs(change):.0%} for {memory:.1f}× the memory"


def describe(trial: Trial) -> str:
    if not trial.workers:
        return "tricorn's defaults"
    text = f"{trial.workers} worker{'s' if trial.workers != 1 else ''}"
    text += f" × {trial.threads} thread{'s' if trial.threads != 1 else ''}" if trial.threads is not None else ""
    return text + (" (tricorn's defaults)" if trial.kind == "defaults" else "")
